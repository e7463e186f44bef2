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
    /// Merging keeps every distinct secret at the latest time it was seen,
    /// and of the OTP failures still in their window the longer list (each
    /// node's list holds what the others told it too: the longer, not the
    /// sum). Times ahead of this node's clock (another node's clock runs
    /// fast) count as now, so they cannot stretch a lockout.
    pub fn restore(&self, bytes: &[u8]) {
        let saved: Saved = match serde_json::from_slice(bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "lockout.state_unreadable", error = %e);
                return;
            }
        };
        let c = &self.config;
        let now = self.clock.unix();
        let otp_window = c.otp_window.as_secs().max(1);
        let mut state = self.state.lock_or_recover();
        for (n, seen) in saved.networks {
            merge_window(state.networks.entry(n).or_default(), seen, now);
        }
        for (a, seen) in saved.accounts {
            merge_window(state.accounts.entry(a).or_default(), seen, now);
        }
        for (a, failures, locked_until) in saved.otp {
            let otp = state.otp.entry(a).or_insert_with(OtpState::default);
            let failures: VecDeque<u64> = failures
                .into_iter()
                .map(|at| at.min(now))
                .filter(|at| at + otp_window > now)
                .collect();
            if failures.len() > otp.failures.len() {
                otp.failures = failures;
            }
            let longest = now + c.otp_lock.as_secs().max(1);
            otp.locked_until = otp.locked_until.max(locked_until.min(longest));
        }
        for (n, accounts, pairs) in saved.spray {
            let spray = state.spray.entry(n).or_insert_with(Spray::default);
            for (map, saved) in [(&mut spray.accounts, accounts), (&mut spray.pairs, pairs)] {
                for (k, at) in saved {
                    let at = at.min(now);
                    let e = map.entry(k).or_insert(at);
                    *e = (*e).max(at);
                }
            }
        }
        self.prune_all(&mut state, now);
    }

    /// How far back saved counters matter: the longest window or lock.
    pub fn longest_window(&self) -> Duration {
        let c = &self.config;
        [
            c.ip_window,
            c.account_window,
            c.otp_window,
            c.otp_lock,
            c.network_window,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// Adds `seen` to a window: distinct hashes, each at its latest time (no
/// later than `now`), oldest first.
fn merge_window(window: &mut Window, seen: Seen, now: u64) {
    for (at, hash) in seen {
        let at = at.min(now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::lockout::Scope;
    use crate::accounts::lockout::tests::lockouts_on as node;
    use crate::clock::ManualClock;
    use std::net::IpAddr;
    use std::time::UNIX_EPOCH;

    fn clock_at(secs: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(secs)))
    }

    const ALICE: &str = "alice@example.com";

    #[test]
    fn a_node_starts_from_every_nodes_saved_counters_merged() {
        let clock = clock_at(1_000_000);
        let (a, b, c) = (node(&clock), node(&clock), node(&clock));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        // Six distinct wrong passwords on each node, two of them the same:
        // ten distinct in all, the limit per address.
        for i in 0..6 {
            a.failure(ip, ALICE, &format!("guess {i}"));
        }
        for i in 4..10 {
            b.failure(ip, ALICE, &format!("guess {i}"));
        }
        assert!(a.check(ip, ALICE).is_ok() && b.check(ip, ALICE).is_ok());
        let (saved_a, saved_b) = (a.to_save().unwrap(), b.to_save().unwrap());
        c.restore(&saved_a);
        c.restore(&saved_a);
        assert!(c.check(ip, ALICE).is_ok(), "one node's six, twice, are six");
        c.restore(&saved_b);
        assert_eq!(c.check(ip, ALICE), Err(Scope::Ip));
        assert!(c.check("203.0.113.10".parse().unwrap(), ALICE).is_ok());
        // The merged window ends when the latest of them is 15 minutes old.
        clock.advance(Duration::from_secs(15 * 60 - 1));
        assert_eq!(c.check(ip, ALICE), Err(Scope::Ip));
        clock.advance(Duration::from_secs(1));
        assert!(c.check(ip, ALICE).is_ok());
    }

    #[test]
    fn otp_failures_merge_as_the_longer_list_in_its_window() {
        let clock = clock_at(1_000_000);
        let (a, b, c) = (node(&clock), node(&clock), node(&clock));
        for _ in 0..3 {
            a.otp_failure(ALICE, None);
        }
        for _ in 0..2 {
            b.otp_failure(ALICE, None);
        }
        let saved_a = a.to_save().unwrap();
        c.restore(&saved_a);
        c.restore(&b.to_save().unwrap());
        // Three counted (not five): two more wrong codes lock (5 in all).
        assert!(c.otp_check(ALICE).is_ok());
        assert!(c.otp_failure(ALICE, None).is_none());
        assert!(c.otp_failure(ALICE, None).is_some());
        assert!(c.otp_check(ALICE).is_err());

        // A list from outside its window does not count at all.
        let d = node(&clock);
        clock.advance(Duration::from_secs(15 * 60));
        d.restore(&saved_a);
        assert!(d.otp_failure(ALICE, None).is_none());
        assert!(d.otp_failure(ALICE, None).is_none());
    }

    #[test]
    fn times_from_a_node_whose_clock_runs_fast_count_as_now() {
        let day = 24 * 60 * 60;
        let fast = node(&clock_at(1_000_000 + day));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for i in 0..10 {
            fast.failure(ip, ALICE, &format!("guess {i}"));
        }
        for _ in 0..5 {
            fast.otp_failure(ALICE, None);
        }
        let clock = clock_at(1_000_000);
        let c = node(&clock);
        c.restore(&fast.to_save().unwrap());
        assert_eq!(c.check(ip, ALICE), Err(Scope::Ip));
        assert!(c.otp_check(ALICE).is_err());
        // Locked for the configured 15 minutes from now, not for a day.
        clock.advance(Duration::from_secs(15 * 60));
        assert!(c.check(ip, ALICE).is_ok());
        assert!(c.otp_check(ALICE).is_ok());
    }
}
