//! Limits shared by every session of a server. Connections, checked when
//! a connection is accepted, before a session exists: in total, and per
//! client network (one IPv4 address, or one IPv6 /64, which a single
//! customer usually holds whole). And the memory budget of messages in
//! flight (`InflightBudget`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What connections are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl Network {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_network: HashMap<Network, usize>,
}

/// Live connection counts, shared by every listener of a server.
#[derive(Default, Clone)]
pub struct ConnectionLimits {
    counts: Arc<Mutex<Counts>>,
}

/// One counted connection; dropping it gives the place back.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    network: Network,
}

impl ConnectionLimits {
    /// Counts a new connection from `ip`, or `None` when that would pass
    /// `max_total` or `max_per_ip`.
    pub fn try_acquire(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Option<Slot> {
        let network = Network::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from_network = counts.per_network.get(&network).copied().unwrap_or(0);
        if counts.total >= max_total || from_network >= max_per_ip {
            return None;
        }
        counts.total += 1;
        *counts.per_network.entry(network).or_insert(0) += 1;
        Some(Slot {
            counts: self.counts.clone(),
            network,
        })
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_network.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                // Forget idle networks so the map stays small.
                counts.per_network.remove(&self.network);
            }
        }
    }
}

/// Bytes of message data all sessions may hold at once
/// (`smtp.max_inflight_bytes`). DATA and BDAT reserve before they take a
/// message; the reservation goes back when it is dropped: when the message
/// was queued or refused, or the session ended.
#[derive(Clone)]
pub struct InflightBudget {
    used: Arc<AtomicU64>,
    max: u64,
}

/// Bytes taken from an `InflightBudget`, given back on drop.
pub struct Reservation {
    used: Arc<AtomicU64>,
    max: u64,
    bytes: u64,
}

impl InflightBudget {
    pub fn new(max: u64) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(0)),
            max,
        }
    }

    /// Takes `bytes`, or `None` when that would pass the budget.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        take(&self.used, self.max, bytes).then(|| Reservation {
            used: self.used.clone(),
            max: self.max,
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Adds `bytes` to `used` unless the sum would pass `max`.
fn take(used: &AtomicU64, max: u64, bytes: u64) -> bool {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
        now.checked_add(bytes).filter(|&after| after <= max)
    })
    .is_ok()
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation to at least `to` bytes; `false` (and no
    /// change) when the budget has no room for it.
    pub fn grow_to(&mut self, to: u64) -> bool {
        if to <= self.bytes {
            return true;
        }
        if !take(&self.used, self.max, to - self.bytes) {
            return false;
        }
        self.bytes = to;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_and_release() {
        let limits = ConnectionLimits::default();
        let a = limits.try_acquire(ip("192.0.2.1"), 10, 2).unwrap();
        let _b = limits.try_acquire(ip("192.0.2.1"), 10, 2).unwrap();
        assert!(limits.try_acquire(ip("192.0.2.1"), 10, 2).is_none());
        // Another address is counted apart.
        let _c = limits.try_acquire(ip("192.0.2.2"), 10, 2).unwrap();
        drop(a);
        assert!(limits.try_acquire(ip("192.0.2.1"), 10, 2).is_some());
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let limits = ConnectionLimits::default();
        let _a = limits.try_acquire(ip("2001:db8:1:2::1"), 10, 2).unwrap();
        let _b = limits
            .try_acquire(ip("2001:db8:1:2:ffff::9"), 10, 2)
            .unwrap();
        assert!(limits.try_acquire(ip("2001:db8:1:2::77"), 10, 2).is_none());
        assert!(limits.try_acquire(ip("2001:db8:1:3::1"), 10, 2).is_some());
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let limits = ConnectionLimits::default();
        let _a = limits.try_acquire(ip("192.0.2.1"), 10, 1).unwrap();
        assert!(limits.try_acquire(ip("::ffff:192.0.2.1"), 10, 1).is_none());
    }

    #[test]
    fn inflight_budget_reserves_grows_and_gives_back() {
        let budget = InflightBudget::new(100);
        let mut a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        assert!(!a.grow_to(61), "no room");
        assert_eq!(a.bytes(), 60);
        drop(b);
        assert!(a.grow_to(90));
        assert!(a.grow_to(50), "never shrinks");
        assert_eq!((a.bytes(), budget.in_use()), (90, 90));
        drop(a);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_reserve(100).is_some());
        assert!(budget.try_reserve(u64::MAX).is_none());
    }

    #[test]
    fn total_limit() {
        let limits = ConnectionLimits::default();
        let a = limits.try_acquire(ip("192.0.2.1"), 2, 5).unwrap();
        let _b = limits.try_acquire(ip("192.0.2.2"), 2, 5).unwrap();
        assert!(limits.try_acquire(ip("192.0.2.3"), 2, 5).is_none());
        assert_eq!(limits.total(), 2);
        drop(a);
        assert_eq!(limits.total(), 1);
        assert!(limits.try_acquire(ip("192.0.2.3"), 2, 5).is_some());
    }
}
