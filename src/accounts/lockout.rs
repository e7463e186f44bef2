//! Brute-force defence that stops guessing, not offices.
//!
//! Guessers try many *different* passwords; an honest phone retries the
//! same old one. So only distinct wrong passwords count, kept as short keyed
//! hashes in memory (never the passwords): 10 per IPv4 address or IPv6 /64
//! in 15 minutes, 50 per account in 24 hours. The per-account limit ignores
//! networks where the account logged in successfully in the last 30 days, so
//! someone else's guessing cannot lock the owner out. Unknown addresses are
//! counted exactly like real ones. OTP codes: 5 wrong in 15 minutes lock the
//! OTP step for 15 minutes.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use ipnet::IpNet;

use crate::clock::Clock;
use crate::config::LockoutConfig;
use crate::locks::Recover;

/// Which counter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Account,
    Otp,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Account => "account",
            Self::Otp => "otp",
        }
    }
}

/// A lockout that has just started (for the `auth.lockout` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub scope: Scope,
    /// The client network (none for OTP lockouts, which are per account).
    pub network: Option<IpNet>,
}

/// Distinct wrong secrets seen in a sliding window.
#[derive(Default)]
struct Window {
    seen: VecDeque<(u64, u64)>,
}

impl Window {
    fn prune(&mut self, now: u64, window: u64) {
        while self.seen.front().is_some_and(|(at, _)| at + window <= now) {
            self.seen.pop_front();
        }
    }

    /// Adds a secret's hash if new; returns the distinct count.
    fn add(&mut self, now: u64, hash: u64, cap: usize) -> usize {
        if let Some(entry) = self.seen.iter_mut().find(|(_, h)| *h == hash) {
            entry.0 = now;
        } else {
            self.seen.push_back((now, hash));
            // Never keep more than needed to know the limit was reached.
            while self.seen.len() > cap {
                self.seen.pop_front();
            }
        }
        self.seen.len()
    }

    fn len(&self) -> usize {
        self.seen.len()
    }

    /// Counts a wrong secret within `window`; true if this one reached
    /// `max` distinct secrets (the lockout starts now).
    fn record(&mut self, now: u64, window: u64, hash: u64, max: usize) -> bool {
        self.prune(now, window);
        let before = self.len();
        self.add(now, hash, max) >= max && before < max
    }
}

/// Wrong OTP codes in the window, and the end of a lock.
#[derive(Default)]
struct OtpState {
    failures: VecDeque<u64>,
    locked_until: u64,
}

#[derive(Default)]
struct State {
    networks: HashMap<IpNet, Window>,
    accounts: HashMap<String, Window>,
    otp: HashMap<String, OtpState>,
    /// (account, network) → last successful login.
    trusted: HashMap<(String, IpNet), u64>,
    operations: u64,
}

pub struct Lockouts {
    config: LockoutConfig,
    clock: Arc<dyn Clock>,
    key: hmac::Key,
    state: Mutex<State>,
}

/// The network a client counts as: its IPv4 address or its IPv6 /64.
pub fn client_network(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 32).expect("32 is a valid prefix"),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 64)
            .expect("64 is a valid prefix")
            .trunc(),
    }
}

const PRUNE_EVERY: u64 = 1024;

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl Lockouts {
    pub fn new(config: LockoutConfig, clock: Arc<dyn Clock>) -> Self {
        // A per-process key: the hashes mean nothing outside this process.
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("randomness");
        Self {
            config,
            clock,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            state: Mutex::new(State::default()),
        }
    }

    fn hash(&self, secret: &str) -> u64 {
        let tag = hmac::sign(&self.key, secret.as_bytes());
        u64::from_le_bytes(tag.as_ref()[..8].try_into().expect("8 bytes"))
    }

    fn trusted(state: &State, account: &str, network: IpNet, now: u64, trust: u64) -> bool {
        state
            .trusted
            .get(&(account.to_string(), network))
            .is_some_and(|at| at + trust > now)
    }

    /// Before any credential is looked at: is this login from this client
    /// locked out? (So `454` then `235` reveals nothing about the password.)
    pub fn check(&self, ip: IpAddr, login: &str) -> Result<(), Scope> {
        let c = &self.config;
        let (now, network) = (self.clock.unix(), client_network(ip));
        let mut state = self.state.lock_or_recover();
        if let Some(w) = state.networks.get_mut(&network) {
            w.prune(now, secs(c.ip_window));
            if w.len() >= c.ip_max_distinct_failures {
                return Err(Scope::Ip);
            }
        }
        if Self::trusted(&state, login, network, now, secs(c.trusted_network_for)) {
            return Ok(());
        }
        if let Some(w) = state.accounts.get_mut(login) {
            w.prune(now, secs(c.account_window));
            if w.len() >= c.account_max_distinct_failures {
                return Err(Scope::Account);
            }
        }
        Ok(())
    }

    /// A wrong secret for `login` (known or not) from `ip`. Returns the
    /// lockouts this failure started.
    pub fn failure(&self, ip: IpAddr, login: &str, secret: &str) -> Vec<Started> {
        let c = &self.config;
        let (now, network, hash) = (self.clock.unix(), client_network(ip), self.hash(secret));
        let mut state = self.state.lock_or_recover();
        self.maybe_prune(&mut state, now);
        let mut started = Vec::new();
        let w = state.networks.entry(network).or_default();
        if w.record(now, secs(c.ip_window), hash, c.ip_max_distinct_failures) {
            started.push(Started {
                scope: Scope::Ip,
                network: Some(network),
            });
        }
        if !Self::trusted(&state, login, network, now, secs(c.trusted_network_for)) {
            let w = state.accounts.entry(login.to_string()).or_default();
            if w.record(
                now,
                secs(c.account_window),
                hash,
                c.account_max_distinct_failures,
            ) {
                started.push(Started {
                    scope: Scope::Account,
                    network: Some(network),
                });
            }
        }
        started
    }

    /// A successful login: this network is now known for this account.
    pub fn success(&self, ip: IpAddr, account: &str) {
        let now = self.clock.unix();
        let mut state = self.state.lock_or_recover();
        state
            .trusted
            .insert((account.to_string(), client_network(ip)), now);
    }

    /// Whether the OTP step of this account is locked; `Err` holds the
    /// seconds left.
    pub fn otp_check(&self, account: &str) -> Result<(), u64> {
        let now = self.clock.unix();
        let state = self.state.lock_or_recover();
        match state.otp.get(account) {
            Some(o) if o.locked_until > now => Err(o.locked_until - now),
            _ => Ok(()),
        }
    }

    /// A right code: the count of wrong ones starts again.
    pub fn otp_success(&self, account: &str) {
        let mut state = self.state.lock_or_recover();
        if let Some(o) = state.otp.get_mut(account) {
            o.failures.clear();
        }
    }

    /// A wrong OTP code; every one counts (codes are short, guesses cheap).
    pub fn otp_failure(&self, account: &str, ip: Option<IpAddr>) -> Option<Started> {
        let c = &self.config;
        let now = self.clock.unix();
        let mut state = self.state.lock_or_recover();
        let o = state.otp.entry(account.to_string()).or_default();
        while o
            .failures
            .front()
            .is_some_and(|at| at + secs(c.otp_window) <= now)
        {
            o.failures.pop_front();
        }
        o.failures.push_back(now);
        if o.failures.len() < c.otp_max_failures {
            return None;
        }
        o.failures.clear();
        o.locked_until = now + secs(c.otp_lock);
        Some(Started {
            scope: Scope::Otp,
            network: ip.map(client_network),
        })
    }

    /// Drops expired entries now and then, so memory stays bounded by what
    /// is still in its window.
    fn maybe_prune(&self, state: &mut State, now: u64) {
        state.operations += 1;
        if !state.operations.is_multiple_of(PRUNE_EVERY) {
            return;
        }
        let c = &self.config;
        state.networks.retain(|_, w| {
            w.prune(now, secs(c.ip_window));
            w.len() > 0
        });
        state.accounts.retain(|_, w| {
            w.prune(now, secs(c.account_window));
            w.len() > 0
        });
        let otp_window = secs(c.otp_window);
        state.otp.retain(|_, o| {
            o.locked_until > now || o.failures.back().is_some_and(|at| at + otp_window > now)
        });
        let trust = secs(c.trusted_network_for);
        state.trusted.retain(|_, at| *at + trust > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    fn lockouts() -> (Lockouts, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        (
            Lockouts::new(LockoutConfig::default(), clock.clone()),
            clock,
        )
    }

    const IP: &str = "192.0.2.1";

    #[test]
    fn repeats_do_not_count_distinct_ones_do() {
        let (l, _) = lockouts();
        let ip: IpAddr = IP.parse().unwrap();
        for _ in 0..100 {
            assert!(l.failure(ip, "a@x.org", "old password").is_empty());
        }
        assert_eq!(l.check(ip, "a@x.org"), Ok(()));
        for i in 0..9 {
            l.failure(ip, "a@x.org", &format!("guess {i}"));
        }
        assert_eq!(l.check(ip, "a@x.org"), Err(Scope::Ip));
        assert_eq!(l.check("192.0.2.2".parse().unwrap(), "a@x.org"), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_windows_expire() {
        let (l, clock) = lockouts();
        for i in 0..10u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
            l.failure(ip, &format!("u{i}@x.org"), &format!("guess {i}"));
        }
        let same_64: IpAddr = "2001:db8:0:1::ffff".parse().unwrap();
        assert_eq!(l.check(same_64, "z@x.org"), Err(Scope::Ip));
        assert_eq!(
            l.check("2001:db8:0:2::1".parse().unwrap(), "z@x.org"),
            Ok(())
        );
        clock.advance(Duration::from_secs(15 * 60));
        assert_eq!(l.check(same_64, "z@x.org"), Ok(()));
    }

    #[test]
    fn the_account_limit_spares_known_networks() {
        let (l, _) = lockouts();
        let home: IpAddr = "198.51.100.5".parse().unwrap();
        l.success(home, "a@x.org");
        for i in 0..50u32 {
            // Many attacker addresses, 1 guess each: no IP lockout.
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i));
            l.failure(ip, "a@x.org", &format!("guess {i}"));
        }
        assert_eq!(
            l.check("203.0.113.9".parse().unwrap(), "a@x.org"),
            Err(Scope::Account)
        );
        assert_eq!(l.check(home, "a@x.org"), Ok(()));
    }

    #[test]
    fn otp_locks_after_five_wrong_codes_for_fifteen_minutes() {
        let (l, clock) = lockouts();
        for _ in 0..4 {
            assert!(l.otp_failure("a@x.org", None).is_none());
        }
        assert_eq!(l.otp_check("a@x.org"), Ok(()));
        assert!(l.otp_failure("a@x.org", None).is_some());
        assert_eq!(l.otp_check("a@x.org"), Err(15 * 60));
        clock.advance(Duration::from_secs(14 * 60));
        assert_eq!(l.otp_check("a@x.org"), Err(60));
        clock.advance(Duration::from_secs(2 * 60));
        assert_eq!(l.otp_check("a@x.org"), Ok(()));
    }
}
