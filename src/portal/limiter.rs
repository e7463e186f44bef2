//! A failure counter per key: `max` failures within `window` lock the key
//! for `lock`. In memory, on the portal's `Clock`. The OTP guard and the
//! sign-in guard are both built on it.

use crate::locks::Recover;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Past this many keys, stale entries are dropped on the next failure.
const PRUNE_AT: usize = 50_000;

pub struct FailureWindow {
    max: usize,
    window: u64,
    lock: u64,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Default)]
struct Entry {
    /// Unix seconds of the failures still inside the window.
    failures: VecDeque<u64>,
    locked_until: u64,
}

impl FailureWindow {
    pub fn new(max: u32, window: Duration, lock: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window: window.as_secs(),
            lock: lock.as_secs(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds left while `key` is locked at `now`.
    pub fn locked_for(&self, key: &str, now: u64) -> Option<u64> {
        let entries = self.entries.lock_or_recover();
        let until = entries.get(key)?.locked_until;
        (until > now).then(|| until - now)
    }

    /// Records a failure; `true` when it locks the key.
    pub fn fail(&self, key: &str, now: u64) -> bool {
        let mut entries = self.entries.lock_or_recover();
        if entries.len() >= PRUNE_AT {
            let window = self.window;
            entries.retain(|_, e| {
                e.locked_until > now || e.failures.back().is_some_and(|&t| t + window > now)
            });
        }
        let entry = entries.entry(key.to_string()).or_default();
        while entry
            .failures
            .front()
            .is_some_and(|&t| t + self.window <= now)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        if entry.failures.len() >= self.max {
            entry.failures.clear();
            entry.locked_until = now + self.lock;
            return true;
        }
        false
    }

    /// Forgets `key`'s failures (after a success).
    pub fn clear(&self, key: &str) {
        self.entries.lock_or_recover().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_within_the_window_and_unlocks_later() {
        let w = FailureWindow::new(3, Duration::from_secs(60), Duration::from_secs(100));
        assert!(!w.fail("a", 0));
        assert!(!w.fail("a", 10));
        assert_eq!(w.locked_for("a", 10), None);
        assert!(w.fail("a", 20));
        assert_eq!(w.locked_for("a", 20), Some(100));
        assert_eq!(w.locked_for("b", 20), None);
        assert_eq!(w.locked_for("a", 119), Some(1));
        assert_eq!(w.locked_for("a", 120), None);
    }

    #[test]
    fn old_failures_leave_the_window_and_success_clears() {
        let w = FailureWindow::new(3, Duration::from_secs(60), Duration::from_secs(100));
        w.fail("a", 0);
        w.fail("a", 30);
        // The first failure is out of the window by now.
        assert!(!w.fail("a", 61));
        w.clear("a");
        assert!(!w.fail("a", 62));
        assert!(!w.fail("a", 63));
        assert!(w.fail("a", 64));
    }
}
