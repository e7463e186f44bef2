//! One notion of a trusted network (docs/security.md, "Trusted networks").
//!
//! A client network (IPv4 /24, IPv6 /64) is trusted for an account when the
//! account sent accepted mail from it, with no message from it refused as
//! abuse that day, on at least `[accounts] trusted_network_days` distinct
//! days spanning at least `trusted_network_span`, all before a cut-off: now,
//! or while a block is on, the block's *abuse start*. Logins, time and portal
//! visits alone never make a network trusted, and an account without such
//! history has none. An operator may mark a network (`account trust`).
//!
//! The unblock rule, the lockouts, the scorer and (later) IMAP all ask here.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::address::client_network;
use crate::store::record::account::Account;

pub const DAY: u64 = 24 * 3600;

/// How far back before a block its abuse start may lie: a login from one
/// of the block's networks a year ago is the owner's, not the thief's.
pub const ABUSE_LOOKBACK: u64 = 30 * DAY;

/// Networks kept per account; login-only networks go first when full, so
/// a thief logging in from many places cannot push out the owner's.
const MAX_NETWORKS: usize = 16;
/// Days kept per network (the most recent).
const MAX_DAYS: usize = 32;

/// What makes a network trusted (`[accounts]`).
#[derive(Debug, Clone, Copy)]
pub struct TrustRule {
    pub days: usize,
    /// Seconds between the first and the last counted day, at least.
    pub span: u64,
}

/// How one account used one client network: days it sent accepted mail,
/// days a message from it was refused as abuse, its logins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkUse {
    pub network: IpNet,
    /// Day numbers (Unix days), ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_days: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_days: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_login: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<u64>,
}

/// An account's networks, kept with the scorer's state of the account and
/// written by the same group commits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkUses {
    #[serde(default)]
    pub networks: Vec<NetworkUse>,
}

fn day(at: u64) -> u32 {
    (at / DAY) as u32
}

fn add_day(days: &mut Vec<u32>, d: u32) {
    if let Err(i) = days.binary_search(&d) {
        days.insert(i, d);
        if days.len() > MAX_DAYS {
            days.remove(0);
        }
    }
}

impl NetworkUses {
    fn entry(&mut self, ip: IpAddr) -> &mut NetworkUse {
        let network = client_network(ip);
        if let Some(i) = self.networks.iter().position(|u| u.network == network) {
            return &mut self.networks[i];
        }
        if self.networks.len() >= MAX_NETWORKS {
            // The least telling one goes: fewest sending days, then the
            // longest unused.
            let victim = self
                .networks
                .iter()
                .enumerate()
                .min_by_key(|(_, u)| {
                    (
                        u.sent_days.len(),
                        u.last_login
                            .unwrap_or(0)
                            .max(u.sent_days.last().map_or(0, |d| u64::from(*d) * DAY)),
                    )
                })
                .map(|(i, _)| i)
                .expect("full, so not empty");
            self.networks.remove(victim);
        }
        self.networks.push(NetworkUse {
            network,
            sent_days: Vec::new(),
            refused_days: Vec::new(),
            first_login: None,
            last_login: None,
        });
        self.networks.last_mut().expect("just pushed")
    }

    /// A successful login from `ip`.
    pub fn login(&mut self, ip: IpAddr, at: u64) {
        let u = self.entry(ip);
        u.first_login.get_or_insert(at);
        u.last_login = Some(at);
    }

    /// A message from `ip` was accepted.
    pub fn sent(&mut self, ip: IpAddr, at: u64) {
        add_day(&mut self.entry(ip).sent_days, day(at));
    }

    /// A message from `ip` was refused as abuse: that day does not count.
    pub fn refused(&mut self, ip: IpAddr, at: u64) {
        add_day(&mut self.entry(ip).refused_days, day(at));
    }

    /// The network `ip` belongs to, if the account used it.
    pub fn of(&self, ip: IpAddr) -> Option<&NetworkUse> {
        let network = client_network(ip);
        self.networks.iter().find(|u| u.network == network)
    }

    /// The earliest login at or after `since` from any of `networks`.
    pub fn first_login_from(&self, networks: &[IpNet], since: u64) -> Option<u64> {
        self.networks
            .iter()
            .filter(|u| networks.iter().any(|n| overlaps(n, &u.network)))
            .filter_map(|u| u.first_login.or(u.last_login))
            .map(|at| at.max(since))
            .min()
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl NetworkUse {
    /// Whether this network earned trust by sending before `before`.
    pub fn trusted_by_sending(&self, rule: TrustRule, before: u64) -> bool {
        let cutoff = day(before);
        let clean: Vec<u32> = self
            .sent_days
            .iter()
            .copied()
            .filter(|d| *d < cutoff && self.refused_days.binary_search(d).is_err())
            .collect();
        let (Some(first), Some(last)) = (clean.first(), clean.last()) else {
            return false;
        };
        clean.len() >= rule.days.max(1) && u64::from(last - first) * DAY >= rule.span
    }
}

/// Why a network is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trusted {
    /// It earned it by sending: the account's own network.
    Sending(IpNet),
    /// An operator marked it (`account trust`).
    Operator(IpNet),
}

impl Trusted {
    pub fn network(self) -> IpNet {
        match self {
            Self::Sending(n) | Self::Operator(n) => n,
        }
    }
}

/// The moment trust is judged at: while a block is on, its abuse start
/// (what was earned after the thief arrived does not count); else `now`.
pub fn cutoff(account: &Account, now: u64) -> u64 {
    match &account.block {
        Some(b) => b.abuse_start.unwrap_or(b.at).min(now),
        None => now,
    }
}

/// The one trust function: is `ip` on a network trusted for `account`?
pub fn trusted(
    account: &Account,
    uses: &NetworkUses,
    rule: TrustRule,
    ip: IpAddr,
    now: u64,
) -> Option<Trusted> {
    let ip = ip.to_canonical();
    if let Some(mark) = account
        .trusted_networks
        .iter()
        .find(|m| m.network.contains(&ip))
    {
        return Some(Trusted::Operator(mark.network));
    }
    let before = cutoff(account, now);
    uses.of(ip)
        .filter(|u| u.trusted_by_sending(rule, before))
        .map(|u| Trusted::Sending(u.network))
}

/// Whether the account trusts any network at all (without listing them).
pub fn any_trusted(account: &Account, uses: &NetworkUses, rule: TrustRule, now: u64) -> bool {
    let before = cutoff(account, now);
    !account.trusted_networks.is_empty()
        || uses
            .networks
            .iter()
            .any(|u| u.trusted_by_sending(rule, before))
}

/// Every trusted network of the account (for `account show`).
pub fn trusted_networks(
    account: &Account,
    uses: &NetworkUses,
    rule: TrustRule,
    now: u64,
) -> Vec<Trusted> {
    let before = cutoff(account, now);
    let mut all: Vec<Trusted> = account
        .trusted_networks
        .iter()
        .map(|m| Trusted::Operator(m.network))
        .collect();
    all.extend(
        uses.networks
            .iter()
            .filter(|u| u.trusted_by_sending(rule, before))
            .map(|u| Trusted::Sending(u.network)),
    );
    all
}

/// Whether a change from `ip` may count towards lifting the account's
/// block (and, during a block, be made at all): a trusted network that is
/// not one of the block's abuse networks.
pub fn qualifies(
    account: &Account,
    uses: &NetworkUses,
    rule: TrustRule,
    ip: IpAddr,
    now: u64,
) -> bool {
    let in_abuse = account.block.as_ref().is_some_and(|b| {
        let ip = ip.to_canonical();
        b.abuse_networks.iter().any(|n| n.contains(&ip))
    });
    match trusted(account, uses, rule, ip, now) {
        Some(Trusted::Operator(_)) => true,
        Some(Trusted::Sending(_)) => !in_abuse,
        None => false,
    }
}

/// The abuse start of a block made now: the earliest of the first login
/// from one of its abuse networks and the first credential change made
/// from an untrusted network, within `ABUSE_LOOKBACK`; at most `now`.
pub fn abuse_start(account: &Account, uses: &NetworkUses, abuse: &[IpNet], now: u64) -> u64 {
    let since = now.saturating_sub(ABUSE_LOOKBACK);
    let login = uses.first_login_from(abuse, since);
    let change = account
        .history
        .iter()
        .filter(|h| h.untrusted && h.at >= since)
        .map(|h| h.at)
        .min();
    [Some(now), login, change]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
}

/// The latest credential change from an untrusted network since the last
/// lift, if it is more recent than `window` seconds.
pub fn recent_untrusted_change(account: &Account, now: u64, window: u64) -> Option<u64> {
    account
        .history
        .iter()
        .rev()
        .take_while(|h| h.change != "unblocked")
        .find(|h| h.untrusted)
        .map(|h| h.at)
        .filter(|at| at + window > now)
}

/// Whether a session a recovery link opened for block `recovery_for` may
/// still do the steps: that block is the one on.
pub fn recovering(account: &Account, recovery_for: Option<u64>) -> bool {
    recovery_for.is_some() && account.block.as_ref().map(|b| b.seq) == recovery_for
}

/// A recovery address counts when it was set this long before the abuse
/// start: a thief who just set his own cannot use it.
pub const RECOVERY_SETTLE: u64 = 7 * DAY;

/// Whether the account's recovery address may receive a recovery link:
/// confirmed, set from a trusted network or by the operator, and set at
/// least `RECOVERY_SETTLE` before the cut-off (the block's abuse start).
pub fn recovery_qualifies(account: &Account, now: u64) -> bool {
    account.recovery.as_ref().is_some_and(|r| {
        r.confirmed_at.is_some()
            && r.set_trusted
            && r.set_at + RECOVERY_SETTLE <= cutoff(account, now)
    })
}

/// Where an account's network uses are read: the scorer's ledger, which
/// records them as mail is accepted or refused and logins succeed.
pub trait NetworkHistory: Send + Sync + 'static {
    /// The account's networks (empty when the account has none yet).
    fn uses(&self, account: &str) -> NetworkUses;

    /// The last successful login of the account from `ip`'s network (the
    /// lockouts ask on every AUTH: no copy of the whole record).
    fn last_login(&self, account: &str, ip: IpAddr) -> Option<u64> {
        self.uses(account).of(ip).and_then(|u| u.last_login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: TrustRule = TrustRule {
        days: 3,
        span: 7 * DAY,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn three_clean_days_over_a_week_make_a_network_trusted() {
        let mut uses = NetworkUses::default();
        let home = ip("198.51.100.7");
        let start = 20_000 * DAY;
        uses.login(home, start);
        for d in [0, 3] {
            uses.sent(home, start + d * DAY);
        }
        let u = uses.of(home).unwrap();
        assert!(!u.trusted_by_sending(RULE, start + 30 * DAY), "two days");
        uses.sent(home, start + 7 * DAY);
        let u = uses.of(home).unwrap().clone();
        assert!(u.trusted_by_sending(RULE, start + 8 * DAY));
        // The cut-off excludes its own day and later ones.
        assert!(!u.trusted_by_sending(RULE, start + 7 * DAY));
        // Same /24, another address: the same network.
        assert!(uses.of(ip("198.51.100.200")).is_some());
        // A refused day does not count.
        uses.refused(home, start + 3 * DAY);
        assert!(
            !uses
                .of(home)
                .unwrap()
                .trusted_by_sending(RULE, start + 8 * DAY)
        );
    }

    #[test]
    fn logins_alone_never_make_a_network_trusted_and_many_do_not_push_out_the_owner() {
        let mut uses = NetworkUses::default();
        let start = 20_000 * DAY;
        let home = ip("198.51.100.7");
        for d in [0, 4, 8] {
            uses.sent(home, start + d * DAY);
        }
        for i in 0..200u32 {
            let thief = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            for d in 0..30 {
                uses.login(thief, start + d * DAY);
            }
        }
        assert_eq!(uses.networks.len(), MAX_NETWORKS);
        assert!(
            uses.of(home)
                .unwrap()
                .trusted_by_sending(RULE, start + 9 * DAY)
        );
        assert!(
            uses.networks
                .iter()
                .filter(|u| u.network != client_network(home))
                .all(|u| !u.trusted_by_sending(RULE, start + 99 * DAY))
        );
    }
}
