//! Sign-in failure counting for the portal, per client IP (IPv6 per /64)
//! and per account, in memory. Checked before the password is verified, so
//! a locked-out attempt costs no argon2 work and reveals nothing.
//!
//! The sign-in handler also feeds the lockouts SMTP AUTH uses
//! (`Accounts::lockouts`: distinct wrong passwords per network and per
//! account), so guessing on the web counts against guessing over SMTP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::limiter::FailureWindow;
use crate::clock::Clock;

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const LOCK: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_IP: u32 = 20;
pub const MAX_PER_ACCOUNT: u32 = 10;

/// Too many failures from this client or for this account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedOut;

pub struct SigninGuard {
    by_ip: FailureWindow,
    by_account: FailureWindow,
    clock: Arc<dyn Clock>,
}

impl SigninGuard {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            by_ip: FailureWindow::new(MAX_PER_IP, WINDOW, LOCK),
            by_account: FailureWindow::new(MAX_PER_ACCOUNT, WINDOW, LOCK),
            clock,
        }
    }

    /// `account` is the normalised address tried (known or not).
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), LockedOut> {
        let now = self.clock.unix();
        if self.by_ip.locked_for(&ip_key(ip), now).is_some()
            || self.by_account.locked_for(account, now).is_some()
        {
            return Err(LockedOut);
        }
        Ok(())
    }

    pub fn failure(&self, ip: IpAddr, account: &str) {
        let now = self.clock.unix();
        self.by_ip.fail(&ip_key(ip), now);
        self.by_account.fail(account, now);
    }

    /// The right password: the account's count starts again (the client's
    /// does not, so one good login cannot launder many bad ones).
    pub fn success(&self, account: &str) {
        self.by_account.clear(account);
    }
}

/// IPv4 per address, IPv6 per /64.
fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    #[test]
    fn per_account_and_per_ip_limits() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let g = SigninGuard::new(clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_PER_ACCOUNT {
            assert_eq!(g.check(ip, "a@x.example"), Ok(()));
            g.failure(ip, "a@x.example");
        }
        assert_eq!(g.check(ip, "a@x.example"), Err(LockedOut));
        // Another client: still locked for this account.
        assert_eq!(
            g.check("192.0.2.2".parse().unwrap(), "a@x.example"),
            Err(LockedOut)
        );
        // This client, another account: 10 more failures reach the IP limit.
        for i in 0..MAX_PER_IP - MAX_PER_ACCOUNT {
            assert_eq!(g.check(ip, &format!("u{i}@x.example")), Ok(()));
            g.failure(ip, &format!("u{i}@x.example"));
        }
        assert_eq!(g.check(ip, "fresh@x.example"), Err(LockedOut));
        clock.advance(LOCK);
        assert_eq!(g.check(ip, "a@x.example"), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_ne!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(ip_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
