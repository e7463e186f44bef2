//! The counters, saved in the store (meta key `lockouts`) every few seconds
//! when they changed and at shutdown, and read back at start: a restart
//! (or a crash an attacker provoked) does not wipe a lockout. Wrong secrets
//! are kept as hashes keyed with a key derived from the server key, so they
//! mean the same after the restart and nothing to anyone without it.
//! Successful logins are not saved here: the login history the scorer's
//! ledger keeps (`accounts::trust`) answers for them after a restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Lockouts, OtpState, Spray, State, Window};
use crate::locks::Recover;
use crate::store::Store;

/// The meta key the counters are saved under.
pub const META_KEY: &str = "lockouts";

type Seen = Vec<(u64, u64)>;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    networks: Vec<(IpNet, Seen)>,
    accounts: Vec<(String, Seen)>,
    otp: Vec<(String, Vec<u64>, u64)>,
    spray: Vec<(IpNet, Seen, Seen)>,
}

impl Lockouts {
    /// The counters as saved, if they changed since the last call.
    pub fn to_save(&self) -> Option<Vec<u8>> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return None;
        }
        let now = self.clock.unix();
        let mut state = self.state.lock_or_recover();
        self.prune_all(&mut state, now);
        let saved = Saved {
            networks: state
                .networks
                .iter()
                .map(|(n, w)| (*n, w.seen.iter().copied().collect()))
                .collect(),
            accounts: state
                .accounts
                .iter()
                .map(|(a, w)| (a.clone(), w.seen.iter().copied().collect()))
                .collect(),
            otp: state
                .otp
                .iter()
                .map(|(a, o)| {
                    (
                        a.clone(),
                        o.failures.iter().copied().collect(),
                        o.locked_until,
                    )
                })
                .collect(),
            spray: state
                .spray
                .iter()
                .map(|(n, s)| {
                    (
                        *n,
                        s.accounts.iter().map(|(k, v)| (*k, *v)).collect(),
                        s.pairs.iter().map(|(k, v)| (*k, *v)).collect(),
                    )
                })
                .collect(),
        };
        drop(state);
        serde_json::to_vec(&saved).ok()
    }

    /// Reads saved counters back (at start); what does not decode is
    /// dropped with a warning: the counters start empty, nothing else.
    pub fn restore(&self, bytes: &[u8]) {
        let saved: Saved = match serde_json::from_slice(bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "lockout.state_unreadable", error = %e);
                return;
            }
        };
        let now = self.clock.unix();
        let mut state = self.state.lock_or_recover();
        *state = State::default();
        for (n, seen) in saved.networks {
            state.networks.insert(
                n,
                Window {
                    seen: VecDeque::from(seen),
                },
            );
        }
        for (a, seen) in saved.accounts {
            state.accounts.insert(
                a,
                Window {
                    seen: VecDeque::from(seen),
                },
            );
        }
        for (a, failures, locked_until) in saved.otp {
            state.otp.insert(
                a,
                OtpState {
                    failures: VecDeque::from(failures),
                    locked_until,
                },
            );
        }
        for (n, accounts, pairs) in saved.spray {
            state.spray.insert(
                n,
                Spray {
                    accounts: accounts.into_iter().collect(),
                    pairs: pairs.into_iter().collect(),
                },
            );
        }
        self.prune_all(&mut state, now);
    }
}

/// Saves the counters every `every` when they changed, and once more at
/// shutdown. A failed write is logged; the counters stay in memory.
pub async fn keep_saved(
    lockouts: Arc<Lockouts>,
    store: Store,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(every) => false,
        };
        if let Some(bytes) = lockouts.to_save() {
            let store = store.clone();
            let written =
                tokio::task::spawn_blocking(move || store.meta_set(META_KEY, &bytes)).await;
            if let Ok(Err(e)) = written {
                tracing::error!(event = "store.error", error = %e, "cannot save the lockout counters");
                lockouts.touch();
            }
        }
        if stopping {
            return;
        }
    }
}
