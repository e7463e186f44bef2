//! Decisions across nodes. With a store several nodes share, a decision
//! locks the account's state in the store (a transaction lock no other
//! node can take meanwhile), loads the state as last written by any node,
//! decides, and writes it back before the lock goes: parallel sessions on
//! different nodes cannot all slip under the threshold. Logins and wrong
//! passwords are applied the same way, each in its own short transaction
//! in the background; delivery results too, an account's results of one
//! second together. With the embedded store none
//! of this runs: the ledger's own lock orders decisions and the spool's
//! group commits write the state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ledger::{Entry, Ledger, decode};
use super::state::AccountState;
use crate::locks::Recover;
use crate::store::shared::AsyncPolicyLock;
use crate::store::shared::SharedData;

/// The account's state held locked across nodes, until `finish`.
pub(crate) struct SharedTurn {
    lock: Option<Box<dyn AsyncPolicyLock>>,
}

/// The shared store could not be reached: no decision can be made.
#[derive(Debug)]
pub(crate) struct Unavailable;

impl Ledger {
    /// Takes the account's turn in the shared store (nothing with the
    /// embedded one) and loads its latest state into `entry`. Awaits the
    /// database without holding a thread.
    pub(crate) async fn shared_turn(
        &self,
        account: &str,
        entry: &Entry,
    ) -> Result<SharedTurn, Unavailable> {
        let Some(store) = self.multi_node.clone() else {
            return Ok(SharedTurn { lock: None });
        };
        match store.policy_lock_async(account).await {
            Ok(lock) => {
                if let Some(state) = lock
                    .as_ref()
                    .and_then(|l| l.saved())
                    .and_then(|b| decode(account, b))
                {
                    *entry.state() = state;
                }
                Ok(SharedTurn { lock })
            }
            Err(e) => {
                tracing::error!(event = "policy.state_unavailable", account, error = %e);
                Err(Unavailable)
            }
        }
    }

    /// Whether a shared store answers (always, with the embedded one).
    pub(crate) fn shared_available(&self) -> bool {
        self.multi_node.as_ref().is_none_or(|s| s.available())
    }

    /// Applies an observation to the account's state here and, with a
    /// shared store, to the stored state under the account's lock.
    pub(super) fn observe(
        &self,
        account: &str,
        change: impl Fn(&mut AccountState) + Send + Sync + 'static,
    ) {
        self.with_state(account, &change);
        if let Some(store) = self.multi_node.clone() {
            apply_shared(store, account.to_string(), self.now(), change);
        }
    }

    /// A delivery result (already counted here) for the stored state. The
    /// first of an account's results waits `BATCH_WAIT` for more; then all
    /// are applied in one turn. A busy sender's results cost one turn a
    /// second, not one per message.
    pub(super) fn observe_batched(&self, account: &str, result: Delivery) {
        let Some(store) = self.multi_node.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let first = {
            let mut pending = self.batched.pending.lock_or_recover();
            let results = pending.entry(account.to_string()).or_default();
            results.push(result);
            results.len() == 1
        };
        if !first {
            return;
        }
        let (pending, key, now) = (
            self.batched.pending.clone(),
            account.to_string(),
            self.now(),
        );
        runtime.spawn(async move {
            tokio::time::sleep(BATCH_WAIT).await;
            let results = pending.lock_or_recover().remove(&key).unwrap_or_default();
            apply_shared(store, key, now, move |st| {
                for (at, delivered, bounced) in &results {
                    st.record_delivery(*at, *delivered, *bounced);
                }
            });
        });
    }

    /// Another node changed the account: its next use reads the stored
    /// state again.
    pub fn refresh(&self, account: &str) {
        if self.multi_node.is_none() {
            return;
        }
        let Some(entry) = self.cached(account) else {
            return;
        };
        if let Some(state) = self.saved(account) {
            *entry.state() = state;
        }
    }
}

/// One delivery result: (time, delivered, bounced).
pub(super) type Delivery = (u64, u32, u32);

/// How long an account's first delivery result waits for more.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// Delivery results per account, waiting for their turn.
#[derive(Default)]
pub(crate) struct Batched {
    pending: Arc<Mutex<HashMap<String, Vec<Delivery>>>>,
}

/// Applies `change` to the stored state under the account's lock, in the
/// background. Bounded: when the store does not answer, the observation
/// is dropped (logged), never queued.
fn apply_shared(
    store: SharedData,
    key: String,
    now: u64,
    change: impl Fn(&mut AccountState) + Send + 'static,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn_blocking(move || {
        let applied = store.policy_lock(&key).and_then(|lock| {
            let Some(lock) = lock else { return Ok(()) };
            let mut state = lock
                .saved()
                .and_then(|b| decode(&key, b))
                .unwrap_or_else(|| AccountState::new(now));
            change(&mut state);
            lock.commit(serde_json::to_vec(&state)?)
        });
        if let Err(e) = applied {
            tracing::warn!(event = "policy.observation_dropped", account = key, error = %e);
        }
    });
}

impl SharedTurn {
    /// Writes the state the decision left and releases the lock.
    pub(crate) async fn finish(self, account: &str, entry: &Entry) {
        let Some(lock) = self.lock else {
            return;
        };
        let bytes = match serde_json::to_vec(&*entry.state()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = "policy.state_unwritable", account, error = %e);
                return;
            }
        };
        if let Err(e) = lock.commit(bytes).await {
            tracing::error!(event = "policy.state_unwritable", account, error = %e);
        }
    }
}
