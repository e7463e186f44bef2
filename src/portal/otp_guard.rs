//! OTP guesses per account: 5 wrong codes within 15 minutes lock code entry
//! for that account for 15 minutes, wherever the guesses come from. Every
//! place that checks a code from a person (sign-in OTP step, Verify 2FA,
//! the device-password confirmation, disabling 2FA) asks here first.
//!
//! Kept apart so the brute-force protection of other entry points can
//! share the same counts.

use std::sync::Arc;
use std::time::Duration;

use super::limiter::FailureWindow;
use crate::clock::Clock;

pub const MAX_WRONG: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const LOCK: Duration = Duration::from_secs(15 * 60);

/// Code entry is locked for this account; seconds left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpLocked(pub u64);

pub struct OtpGuard {
    wrong: FailureWindow,
    clock: Arc<dyn Clock>,
}

impl OtpGuard {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            wrong: FailureWindow::new(MAX_WRONG, WINDOW, LOCK),
            clock,
        }
    }

    /// Call before checking a code for `account` (normalised address).
    pub fn check(&self, account: &str) -> Result<(), OtpLocked> {
        match self.wrong.locked_for(account, self.clock.unix()) {
            Some(left) => Err(OtpLocked(left)),
            None => Ok(()),
        }
    }

    /// A wrong code; `true` when this one locked code entry.
    pub fn wrong(&self, account: &str) -> bool {
        self.wrong.fail(account, self.clock.unix())
    }

    /// A right code: the count starts again.
    pub fn right(&self, account: &str) {
        self.wrong.clear(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    #[test]
    fn five_wrong_codes_lock_for_fifteen_minutes() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let guard = OtpGuard::new(clock.clone());
        for _ in 0..4 {
            assert!(!guard.wrong("a@x.example"));
            assert_eq!(guard.check("a@x.example"), Ok(()));
        }
        assert!(guard.wrong("a@x.example"));
        assert_eq!(guard.check("a@x.example"), Err(OtpLocked(900)));
        assert_eq!(guard.check("b@x.example"), Ok(()));
        clock.advance(Duration::from_secs(899));
        assert!(guard.check("a@x.example").is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(guard.check("a@x.example"), Ok(()));
    }
}
