//! The counters, saved in the shared store every few seconds when they
//! changed and at shutdown, and read back at start: a restart (or a crash
//! an attacker provoked) does not wipe a lockout. With several nodes each
//! saves its own, and a node starts from all of them merged (a node that
//! joins late, or every node restarted, still counts as one). Wrong secrets
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

use super::{Lockouts, OtpState, Spray, Window};
use crate::locks::Recover;
use crate::store::shared::SharedData;

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

    /// Adds saved counters (at start, one node's saving at a time) to
    /// what is counted; what does not decode is dropped with a warning.
    /// Merging keeps every distinct secret, the latest time of each, and
    /// the longer list of OTP failures.
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
        for (n, seen) in saved.networks {
            merge_window(state.networks.entry(n).or_default(), seen);
        }
        for (a, seen) in saved.accounts {
            merge_window(state.accounts.entry(a).or_default(), seen);
        }
        for (a, failures, locked_until) in saved.otp {
            let otp = state.otp.entry(a).or_insert_with(OtpState::default);
            // Each node's list holds what the others told it too: the
            // longer one, not the sum.
            if failures.len() > otp.failures.len() {
                otp.failures = VecDeque::from(failures);
            }
            otp.locked_until = otp.locked_until.max(locked_until);
        }
        for (n, accounts, pairs) in saved.spray {
            let spray = state.spray.entry(n).or_insert_with(Spray::default);
            for (k, at) in accounts {
                let e = spray.accounts.entry(k).or_insert(at);
                *e = (*e).max(at);
            }
            for (k, at) in pairs {
                let e = spray.pairs.entry(k).or_insert(at);
                *e = (*e).max(at);
            }
        }
        self.prune_all(&mut state, now);
    }

    /// How far back saved counters matter: the longest window.
    pub fn longest_window(&self) -> Duration {
        let c = &self.config;
        [
            c.ip_window,
            c.account_window,
            c.otp_window,
            c.network_window,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// Adds `seen` to a window: distinct hashes, each at its latest time,
/// oldest first.
fn merge_window(window: &mut Window, seen: Seen) {
    for (at, hash) in seen {
        match window.seen.iter_mut().find(|(_, h)| *h == hash) {
            Some(entry) => entry.0 = entry.0.max(at),
            None => window.seen.push_back((at, hash)),
        }
    }
    window.seen.make_contiguous().sort_unstable();
}

/// Saves the counters every `every` when they changed, and once more at
/// shutdown. A failed write is logged; the counters stay in memory.
pub async fn keep_saved(
    lockouts: Arc<Lockouts>,
    store: SharedData,
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
            let now = lockouts.clock.unix();
            let written =
                tokio::task::spawn_blocking(move || store.lockouts_save(&bytes, now)).await;
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
