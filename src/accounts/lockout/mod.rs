//! Brute-force defence that stops guessing, not offices.
//!
//! Guessers try many *different* passwords; an honest phone retries the
//! same old one. So only distinct wrong passwords count, kept as short keyed
//! hashes in memory (never the passwords): 10 per IPv4 address or IPv6 /64
//! in 15 minutes, 50 per account in 24 hours. The per-account limit ignores
//! networks where the account logged in successfully in the last 30 days, so
//! someone else's guessing cannot lock the owner out. Unknown addresses are
//! counted exactly like real ones. OTP codes: 5 wrong in 15 minutes lock the
//! OTP step of a bucket for 15 minutes (each network trusted for the account
//! has its own bucket; every other network shares the account's).
//!
//! Password spraying (few passwords, many accounts) is counted per network
//! in tiers: the IPv4 address or IPv6 /64, and around it the IPv4 /24 or
//! IPv6 /48 with four times the limits. Distinct accounts and distinct
//! (account, password) pairs per `network_window`; a network over either
//! limit is refused AUTH for every account that never logged in from it
//! (the login history the scorer's ledger keeps, which survives restarts).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use ipnet::IpNet;

mod peers;
mod saved;

pub use peers::{Note, Publisher};

pub use saved::keep_saved;

use super::trust::NetworkHistory;
use crate::clock::Clock;
use crate::config::LockoutConfig;
use crate::locks::Recover;

/// Which counter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Account,
    Otp,
    /// Password spraying from a network (any tier).
    Network,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Account => "account",
            Self::Otp => "otp",
            Self::Network => "network",
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

/// Spraying from one network: accounts and (account, password) pairs
/// that failed, each with when it last did.
#[derive(Default)]
struct Spray {
    accounts: HashMap<u64, u64>,
    pairs: HashMap<u64, u64>,
}

impl Spray {
    fn prune(&mut self, now: u64, window: u64) {
        self.accounts.retain(|_, at| *at + window > now);
        self.pairs.retain(|_, at| *at + window > now);
    }

    fn over(&self, accounts: usize, pairs: usize) -> bool {
        self.accounts.len() >= accounts || self.pairs.len() >= pairs
    }

    fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.pairs.is_empty()
    }
}

/// The spraying tiers of a client: its address (IPv6 /64) with limit
/// factor 1, and the IPv4 /24 or IPv6 /48 around it with factor 4.
pub fn spray_tiers(ip: IpAddr) -> [(IpNet, usize); 2] {
    let wide = match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 24),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 48),
    }
    .expect("valid prefixes")
    .trunc();
    [(client_network(ip), 1), (wide, 4)]
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
    spray: HashMap<IpNet, Spray>,
    /// (account, network) → last successful login.
    trusted: HashMap<(String, IpNet), u64>,
    operations: u64,
}

pub struct Lockouts {
    config: LockoutConfig,
    clock: Arc<dyn Clock>,
    key: hmac::Key,
    /// Changed since last saved (`saved`).
    dirty: std::sync::atomic::AtomicBool,
    /// Successful logins as the scorer's ledger keeps them (persistent).
    history: Arc<dyn NetworkHistory>,
    state: Mutex<State>,
    /// With several nodes: who hears what this node counts (`peers`).
    peers: Mutex<Option<Publisher>>,
}

/// The network a client counts as here: its IPv4 address or its IPv6 /64.
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
    /// `key` keys the hashes of wrong secrets: derived from the server key,
    /// so counters saved in the store mean the same after a restart.
    pub fn new(
        config: LockoutConfig,
        clock: Arc<dyn Clock>,
        history: Arc<dyn NetworkHistory>,
        key: [u8; 32],
    ) -> Self {
        Self {
            config,
            clock,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            dirty: Default::default(),
            history,
            state: Mutex::new(State::default()),
            peers: Mutex::new(None),
        }
    }

    fn touch(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
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

    /// Whether `account` logged in successfully from `ip`'s network within
    /// `trusted_network_for`: in this process, or as the persistent login
    /// history says (`last_login`; so a restart does not lock the owner
    /// out).
    fn known_network(
        &self,
        state: &State,
        account: &str,
        ip: IpAddr,
        now: u64,
        last_login: Option<u64>,
    ) -> bool {
        let trust = secs(self.config.trusted_network_for);
        Self::trusted(state, account, client_network(ip), now, trust)
            || last_login.is_some_and(|at| at + trust > now)
    }

    /// Whether `account` ever logged in successfully from `ip`'s network:
    /// in this process, or as the persistent login history says.
    fn ever_logged_in(
        &self,
        state: &State,
        account: &str,
        ip: IpAddr,
        now: u64,
        last_login: Option<u64>,
    ) -> bool {
        Self::trusted(
            state,
            account,
            client_network(ip),
            now,
            secs(self.config.trusted_network_for),
        ) || last_login.is_some()
    }

    /// The spraying tier `ip` is over, if any.
    fn spraying(&self, state: &mut State, ip: IpAddr, now: u64) -> Option<IpNet> {
        let c = &self.config;
        let window = secs(c.network_window);
        spray_tiers(ip).into_iter().find_map(|(net, factor)| {
            let s = state.spray.get_mut(&net)?;
            s.prune(now, window);
            s.over(
                c.network_accounts_per_hour * factor,
                c.network_pairs_per_hour * factor,
            )
            .then_some(net)
        })
    }

    /// Before any credential is looked at: is this login from this client
    /// locked out? (So `454` then `235` reveals nothing about the password.)
    pub fn check(&self, ip: IpAddr, login: &str) -> Result<(), Scope> {
        let c = &self.config;
        let (now, network) = (self.clock.unix(), client_network(ip));
        // Asked before the counters are locked: the history may read the
        // store (with PostgreSQL, a round trip every AUTH must not wait on).
        let last_login = self.history.last_login(login, ip);
        let mut state = self.state.lock_or_recover();
        if let Some(w) = state.networks.get_mut(&network) {
            w.prune(now, secs(c.ip_window));
            if w.len() >= c.ip_max_distinct_failures {
                return Err(Scope::Ip);
            }
        }
        if self.spraying(&mut state, ip, now).is_some()
            && !self.ever_logged_in(&state, login, ip, now, last_login)
        {
            return Err(Scope::Network);
        }
        if self.known_network(&state, login, ip, now, last_login) {
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
        let (hash, pair) = (self.hash(secret), self.hash(&format!("{login}\0{secret}")));
        let started = self.count_failure(ip, login, hash, pair);
        self.tell_peers(|| Note::Failure {
            ip,
            login: login.to_string(),
            hash,
            pair,
        });
        started
    }

    /// Counts a wrong secret by its hashes (seen here or on another node).
    fn count_failure(&self, ip: IpAddr, login: &str, hash: u64, pair_key: u64) -> Vec<Started> {
        let c = &self.config;
        let (now, network) = (self.clock.unix(), client_network(ip));
        let last_login = self.history.last_login(login, ip);
        let mut state = self.state.lock_or_recover();
        self.maybe_prune(&mut state, now);
        self.touch();
        let mut started = Vec::new();
        let window = secs(c.network_window);
        let account_key = self.hash(login);
        for (net, factor) in spray_tiers(ip) {
            let s = state.spray.entry(net).or_default();
            s.prune(now, window);
            let (accounts, pairs) = (
                c.network_accounts_per_hour * factor,
                c.network_pairs_per_hour * factor,
            );
            let before = s.over(accounts, pairs);
            // Bounded: once over, nothing more needs to be known.
            if !before {
                s.accounts.insert(account_key, now);
                s.pairs.insert(pair_key, now);
            }
            if !before && s.over(accounts, pairs) {
                started.push(Started {
                    scope: Scope::Network,
                    network: Some(net),
                });
            }
        }
        let w = state.networks.entry(network).or_default();
        if w.record(now, secs(c.ip_window), hash, c.ip_max_distinct_failures) {
            started.push(Started {
                scope: Scope::Ip,
                network: Some(network),
            });
        }
        if !self.known_network(&state, login, ip, now, last_login) {
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
        self.count_success(ip, account);
        self.tell_peers(|| Note::Success {
            ip,
            account: account.to_string(),
        });
    }

    /// Counts a successful login (here or on another node).
    fn count_success(&self, ip: IpAddr, account: &str) {
        let now = self.clock.unix();
        self.state
            .lock_or_recover()
            .trusted
            .insert((account.to_string(), client_network(ip)), now);
    }

    /// Whether the OTP step of this bucket (`Accounts::otp_bucket`: the
    /// account, or the account on one trusted network) is locked; `Err`
    /// holds the seconds left.
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
            self.touch();
        }
    }

    /// A wrong OTP code; every one counts (codes are short, guesses cheap).
    pub fn otp_failure(&self, account: &str, ip: Option<IpAddr>) -> Option<Started> {
        let locked = self.count_otp_failure(account);
        self.tell_peers(|| Note::OtpFailure {
            bucket: account.to_string(),
        });
        locked.then(|| Started {
            scope: Scope::Otp,
            network: ip.map(client_network),
        })
    }

    /// Counts a wrong OTP code (here or on another node); true when the
    /// lock starts now.
    fn count_otp_failure(&self, account: &str) -> bool {
        let c = &self.config;
        let now = self.clock.unix();
        let mut state = self.state.lock_or_recover();
        self.touch();
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
            return false;
        }
        o.failures.clear();
        o.locked_until = now + secs(c.otp_lock);
        true
    }

    /// Drops expired entries now and then, so memory stays bounded by what
    /// is still in its window.
    fn maybe_prune(&self, state: &mut State, now: u64) {
        state.operations += 1;
        if state.operations.is_multiple_of(PRUNE_EVERY) {
            self.prune_all(state, now);
        }
    }

    /// Drops every expired entry.
    fn prune_all(&self, state: &mut State, now: u64) {
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
        let window = secs(c.network_window);
        state.spray.retain(|_, s| {
            s.prune(now, window);
            !s.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    struct NoHistory;

    impl NetworkHistory for NoHistory {
        fn uses(&self, _: &str) -> crate::accounts::NetworkUses {
            Default::default()
        }
    }

    /// Counters with the default limits on `clock`, no login history, one
    /// key (the nodes of `saved`'s tests share it).
    pub(super) fn lockouts_on(clock: &Arc<ManualClock>) -> Lockouts {
        Lockouts::new(
            LockoutConfig::default(),
            clock.clone(),
            Arc::new(NoHistory),
            [7; 32],
        )
    }

    fn lockouts() -> (Lockouts, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        (lockouts_on(&clock), clock)
    }

    #[test]
    fn spraying_few_passwords_over_many_accounts_is_refused_per_network() {
        let (l, clock) = lockouts();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let home: IpAddr = "203.0.113.77".parse().unwrap();
        l.success(home, "u29@x.org");
        let mut refused_at = None;
        'spray: for p in 0..9 {
            for a in 0..30 {
                let login = format!("u{a}@x.org");
                if l.check(ip, &login).is_err() {
                    refused_at = Some(p * 30 + a);
                    break 'spray;
                }
                l.failure(ip, &login, &format!("Summer202{p}"));
            }
        }
        // 10 accounts from one address: the 11th attempt is refused.
        assert_eq!(refused_at, Some(10));
        assert_eq!(l.check(ip, "u3@x.org"), Err(Scope::Network));
        // The /24 is not over its own limit: a neighbour still tries.
        assert_eq!(l.check("203.0.113.10".parse().unwrap(), "u3@x.org"), Ok(()));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(l.check(ip, "u3@x.org"), Ok(()));
    }

    #[test]
    fn a_sprayed_wide_network_still_lets_in_accounts_that_logged_in_from_it() {
        let (l, _) = lockouts();
        let owner: IpAddr = "198.51.100.200".parse().unwrap();
        l.success(owner, "owner@x.org");
        // 40 accounts from 40 addresses of one /24: 1 each per address.
        for a in 0..40u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, a));
            l.failure(ip, &format!("v{a}@x.org"), "Password1");
        }
        let other: IpAddr = "198.51.100.99".parse().unwrap();
        assert_eq!(l.check(other, "fresh@x.org"), Err(Scope::Network));
        assert_eq!(l.check(owner, "owner@x.org"), Ok(()));
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
        // The address lockout is over; ten accounts in an hour from the
        // /64 still count as spraying for accounts never used from it.
        assert_eq!(l.check(same_64, "z@x.org"), Err(Scope::Network));
        clock.advance(Duration::from_secs(45 * 60));
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
