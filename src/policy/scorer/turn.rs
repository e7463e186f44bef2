//! Decisions across nodes. With a store several nodes share, a decision
//! locks the account's state in the store (a transaction lock no other
//! node can take meanwhile), loads the state as last written by any node,
//! decides, and writes it back before the lock goes: parallel sessions on
//! different nodes cannot all slip under the threshold. Logins, wrong
//! passwords and delivery results are applied the same way, each in its
//! own short transaction in the background. With the embedded store none
//! of this runs: the ledger's own lock orders decisions and the spool's
//! group commits write the state.

use std::sync::Arc;

use super::ledger::{Entry, Ledger, decode};
use super::state::AccountState;
use crate::store::PolicyLock;

/// The account's state held locked across nodes, until `finish`.
pub(crate) struct SharedTurn {
    lock: Option<Box<dyn PolicyLock>>,
}

/// The shared store could not be reached: no decision can be made.
#[derive(Debug)]
pub(crate) struct Unavailable;

impl Ledger {
    /// Takes the account's turn in the shared store (nothing with the
    /// embedded one) and loads its latest state into `entry`.
    pub(crate) async fn shared_turn(
        &self,
        account: &str,
        entry: &Entry,
    ) -> Result<SharedTurn, Unavailable> {
        let Some(store) = self.multi_node.clone() else {
            return Ok(SharedTurn { lock: None });
        };
        let key = account.to_string();
        let locked = tokio::task::spawn_blocking(move || store.policy_lock(&key)).await;
        match locked {
            Ok(Ok(lock)) => {
                if let Some(state) = lock
                    .as_ref()
                    .and_then(|l| l.saved())
                    .and_then(|b| decode(account, b))
                {
                    *entry.state() = state;
                }
                Ok(SharedTurn { lock })
            }
            Ok(Err(e)) => {
                tracing::error!(event = "policy.state_unavailable", account, error = %e);
                Err(Unavailable)
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
        let Some(store) = self.multi_node.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, now) = (account.to_string(), self.now());
        let change = Arc::new(change);
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
                // Bounded: the observation is dropped, never queued.
                tracing::warn!(event = "policy.observation_dropped", account = key, error = %e);
            }
        });
    }

    /// Another node changed the account: its next use reads the stored
    /// state again.
    pub fn refresh(&self, account: &str) {
        let Some(store) = self.multi_node.as_ref() else {
            return;
        };
        let Some(entry) = self.cached(account) else {
            return;
        };
        match store.policy_state(account) {
            Ok(Some(bytes)) => {
                if let Some(state) = decode(account, &bytes) {
                    *entry.state() = state;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(event = "policy.state_unavailable", account, error = %e),
        }
    }
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
        let written = tokio::task::spawn_blocking(move || lock.commit(bytes)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(event = "policy.state_unwritable", account, error = %e),
            Err(e) => tracing::error!(event = "policy.state_unwritable", account, error = %e),
        }
    }
}
