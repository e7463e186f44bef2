//! The scorer's per-account windows, in memory, written behind to the store.
//!
//! The ledger hears logins, wrong passwords and delivery outcomes as typed
//! events, restarts an account's windows inside the store transaction that
//! lifts its block (`OnLift`), and hands changed rows to the spool's group
//! commit (`CommitHook`). It holds no reference to anything that could hold
//! it back, so the assembly can wire it anywhere without a cycle.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use ipnet::IpNet;

use super::contacts::ContactKey;
use super::state::AccountState;
use super::{PolicyView, view_of};
use crate::accounts::{LiftRows, NetworkHistory, NetworkUses, OnLift};
use crate::address::client_network;
use crate::clock::Clock;
use crate::config::PolicyConfig;
use crate::events::{Event, EventKind, Listener};
use crate::locks::{Recover, RecoverRw};
use crate::spool::{CommitHook, QueueWrite};
use crate::store::{SharedData, StoreError, ToShared};

/// An account's state is written with the spool at most this often: a
/// busy sender's windows are serialised once a second, not once a commit.
/// A crash forgets at most this much of its counting (the messages
/// themselves are durable before their 250, whatever happens here).
const STATE_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One account: `turn` orders its decisions (FIFO, held across awaits);
/// `state` is only ever held briefly, never across an await, so logins and
/// delivery results can be recorded from anywhere.
pub(crate) struct Entry {
    pub(super) turn: tokio::sync::Mutex<()>,
    state: Mutex<AccountState>,
    /// When the state was last handed to a commit.
    written: Mutex<Option<std::time::Instant>>,
}

impl Entry {
    fn new(state: AccountState) -> Arc<Self> {
        Arc::new(Self {
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            written: Mutex::new(None),
        })
    }

    /// True (and noted) when the state may be written now.
    fn take_write_turn(&self, now: std::time::Instant, all: bool) -> bool {
        let mut written = lock(&self.written);
        let due = all || written.is_none_or(|at| now.duration_since(at) >= STATE_WRITE_INTERVAL);
        if due {
            *written = Some(now);
        }
        due
    }

    pub(super) fn state(&self) -> MutexGuard<'_, AccountState> {
        lock(&self.state)
    }
}

/// The windows inside a lock a panicking thread held are still fit to
/// count with (`crate::locks`).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock_or_recover()
}

/// When the saved states are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preload {
    /// All at once (`serve`: no store read on the SMTP path afterwards).
    All,
    /// Each account's when first needed (a CLI command touches one or two).
    OnDemand,
}

pub struct Ledger {
    /// Replaced on SIGHUP.
    config: RwLock<Arc<PolicyConfig>>,
    clock: Arc<dyn Clock>,
    shared: Vec<IpNet>,
    states: Mutex<HashMap<String, Arc<Entry>>>,
    dirty: Mutex<HashSet<String>>,
    /// With `Preload::OnDemand` (or a shared store): where an account's
    /// saved state is read.
    on_demand: Option<SharedData>,
    /// A store several nodes share: decisions lock the account's state
    /// there (`turn`), and the spool's commits do not carry it.
    pub(super) multi_node: Option<SharedData>,
    /// With a shared store: delivery results waiting for their account's
    /// next background turn (`turn::Batched`).
    pub(super) batched: super::turn::Batched,
    /// Keys the contacts' fingerprints (derived from the server key).
    contact_key: ContactKey,
}

impl Ledger {
    /// The ledger on `store`'s saved states, read all at once or each when
    /// first needed.
    pub fn load(
        config: PolicyConfig,
        clock: Arc<dyn Clock>,
        store: &impl ToShared,
        preload: Preload,
        contact_key: ContactKey,
    ) -> Result<Arc<Self>, StoreError> {
        let store = store.to_shared();
        let mut states = HashMap::new();
        if preload == Preload::All {
            for (account, bytes) in store.policy_states()? {
                if let Some(state) = decode(&account, &bytes) {
                    states.insert(account, Entry::new(state));
                }
            }
        }
        let multi_node = (store.backend() != "redb").then(|| store.clone());
        Ok(Arc::new(Self {
            shared: shared_networks(&config),
            config: RwLock::new(Arc::new(config)),
            clock,
            states: Mutex::new(states),
            dirty: Mutex::new(HashSet::new()),
            on_demand: (preload == Preload::OnDemand || multi_node.is_some())
                .then(|| store.clone()),
            multi_node,
            batched: Default::default(),
            contact_key,
        }))
    }

    /// The configuration in force right now.
    pub fn config(&self) -> Arc<PolicyConfig> {
        self.config.read_or_recover().clone()
    }

    /// A new `[policy]` (SIGHUP); accounts' windows and scores are kept.
    pub fn set_config(&self, config: PolicyConfig) {
        *self.config.write_or_recover() = Arc::new(config);
    }

    pub(super) fn contact_key(&self) -> &ContactKey {
        &self.contact_key
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.unix()
    }

    pub(super) fn entry(&self, account: &str) -> Arc<Entry> {
        if let Some(entry) = self.cached(account) {
            return entry;
        }
        // Read without holding the map: with a shared store the read waits
        // for a connection, and every session needs the map meanwhile (one
        // held across it stalled every node's decisions until the pool's
        // wait ran out). Two first uses at once both read; the first in wins.
        let now = self.clock.unix();
        let loaded = self
            .saved(account)
            .unwrap_or_else(|| AccountState::new(now));
        self.keep(account, loaded)
    }

    /// `state` as the account's entry, unless another came first.
    fn keep(&self, account: &str, state: AccountState) -> Arc<Entry> {
        lock(&self.states)
            .entry(account.to_string())
            .or_insert_with(|| Entry::new(state))
            .clone()
    }

    /// The account's saved state, when states are read on demand.
    pub(super) fn saved(&self, account: &str) -> Option<AccountState> {
        let store = self.on_demand.as_ref()?;
        match store.policy_state(account) {
            Ok(bytes) => decode(account, &bytes?),
            Err(e) => {
                tracing::error!(event = "policy.state_unreadable", account, error = %e);
                None
            }
        }
    }

    /// The account's entry if it has a state, without making one (an
    /// unknown login tried at AUTH must not grow the ledger).
    fn peek(&self, account: &str) -> Option<Arc<Entry>> {
        self.cached(account)
            .or_else(|| Some(self.keep(account, self.saved(account)?)))
    }

    /// Whether the account has a state (in memory, or saved when states
    /// are read on demand).
    fn follows(&self, account: &str) -> bool {
        self.peek(account).is_some()
    }

    /// The account's entry if this node holds it.
    pub(super) fn cached(&self, account: &str) -> Option<Arc<Entry>> {
        lock(&self.states).get(account).cloned()
    }

    /// Changes an account's state briefly (never across an await).
    pub(super) fn with_state<T>(&self, account: &str, f: impl FnOnce(&mut AccountState) -> T) -> T {
        let entry = self.entry(account);
        let out = f(&mut entry.state());
        self.mark_dirty(account);
        out
    }

    /// The account's state is to be written with the spool's next commit
    /// (a shared store is written by each turn instead: nothing to mark).
    pub(super) fn mark_dirty(&self, account: &str) {
        if self.multi_node.is_none() {
            lock(&self.dirty).insert(account.to_string());
        }
    }

    /// A network as the spread signal sees it: every shared client network
    /// (office NAT, cloud mail app) counts as one known client.
    pub(super) fn network_key(&self, ip: IpAddr) -> String {
        let ip = ip.to_canonical();
        match self.shared.iter().find(|n| n.contains(&ip)) {
            Some(n) => format!("shared:{n}"),
            None => client_network(ip).to_string(),
        }
    }

    /// A successful login of `account` from `ip`.
    pub fn observe_login(&self, account: &str, ip: IpAddr) {
        let now = self.clock.unix();
        let network = self.network_key(ip);
        let needed = self.config().auth_failures_before_success;
        self.observe(account, move |st| {
            st.record_login(now, &network, needed);
            st.uses.login(ip, now);
        });
    }

    /// A wrong password for an account the scorer follows; `attempt`
    /// tags the password tried (one typed again is one mistake).
    pub fn observe_auth_failure(&self, account: &str, attempt: Option<u64>) {
        if self.follows(account) {
            let now = self.clock.unix();
            self.observe(account, move |st| st.record_auth_failure(now, attempt));
        }
    }

    /// What the next hop did with one of the account's messages.
    pub fn observe_delivery(&self, account: &str, delivered: usize, bounced: usize) {
        // Only accounts the scorer follows (not postmaster notices).
        if !self.follows(account) {
            return;
        }
        let now = self.clock.unix();
        let (delivered, bounced) = (delivered as u32, bounced as u32);
        self.with_state(account, |st| st.record_delivery(now, delivered, bounced));
        // With several nodes, a busy account's results share one turn.
        self.observe_batched(account, (now, delivered, bounced));
    }

    /// A complaint about the account's mail (an ARF report): points now.
    pub fn observe_complaint(&self, account: &str) {
        let now = self.clock.unix();
        let config = self.config();
        let (half_life, weight) = (config.half_life.as_secs(), config.weight_complaint);
        self.observe(account, move |st| {
            st.advance(now, half_life);
            st.score += weight;
            st.complaints.push_back(now);
            while st.complaints.len() > 1000 {
                st.complaints.pop_front();
            }
        });
    }

    /// The state of an account as `account show` prints it.
    pub fn view(&self, address: &str) -> PolicyView {
        let now = self.clock.unix();
        let config = self.config();
        let entry = self.entry(address);
        let mut st = entry.state();
        st.advance(now, config.half_life.as_secs());
        view_of(&st, now, &config)
    }

    /// After a block lifts: windows and score start again from zero, and
    /// probation counts only what comes next. What the account's normal
    /// is (contacts, programs, links, baseline, networks) stays. Returns
    /// the new state.
    fn restart(&self, account: &str) -> AccountState {
        let now = self.clock.unix();
        self.with_state(account, |st| {
            *st = std::mem::take(st).restarted(now);
            st.clone()
        })
    }
}

/// A saved state, or `None` (with a warning) when it does not decode.
pub(super) fn decode(account: &str, bytes: &[u8]) -> Option<AccountState> {
    match serde_json::from_slice::<AccountState>(bytes) {
        Ok(state) => Some(state.upgrade()),
        Err(e) => {
            tracing::warn!(event = "policy.state_unreadable", account, error = %e);
            None
        }
    }
}

fn shared_networks(config: &PolicyConfig) -> Vec<IpNet> {
    config
        .shared_client_networks
        .iter()
        .filter_map(|n| {
            n.parse::<IpNet>()
                .ok()
                .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Logins, wrong passwords and delivery outcomes, as they happen.
impl Listener for Ledger {
    fn hear(&self, event: &Event) {
        let Some(account) = event.account.as_deref() else {
            return;
        };
        match event.kind {
            EventKind::AuthSuccess => {
                if let Some(ip) = event.ip {
                    self.observe_login(account, ip);
                }
            }
            // Failures for unknown logins are not followed (no state to grow).
            EventKind::AuthFailure
                if event.ip.is_some() && event.reason.as_deref() == Some("bad_password") =>
            {
                self.observe_auth_failure(account, event.attempt)
            }
            EventKind::DeliveryOutcome => self.observe_delivery(
                account,
                event.delivered.unwrap_or(0),
                event.bounced.unwrap_or(0),
            ),
            _ => {}
        }
    }
}

/// Trust is judged on what this ledger recorded (`accounts::trust`).
impl NetworkHistory for Ledger {
    fn uses(&self, account: &str) -> NetworkUses {
        self.peek(account)
            .map(|entry| entry.state().uses.clone())
            .unwrap_or_default()
    }

    fn last_login(&self, account: &str, ip: IpAddr) -> Option<u64> {
        let entry = self.peek(account)?;
        let state = entry.state();
        state.uses.of(ip).and_then(|u| u.last_login)
    }
}

/// A lift restarts the windows in the lift's own store transaction. That
/// transaction holds the store's only writer, and the group commit reads
/// this ledger's rows only while it holds the writer too, so an older copy
/// of the windows can never be written after the restarted one.
impl OnLift for Ledger {
    fn lifted(&self, address: &str, rows: &mut LiftRows) {
        let state = self.restart(address);
        match serde_json::to_vec(&state) {
            Ok(bytes) => rows.policy_state = Some(bytes),
            Err(e) => {
                tracing::error!(event = "policy.state_unwritable", account = address, error = %e)
            }
        }
    }
}

impl CommitHook for Ledger {
    fn dirty_writes(&self, all: bool) -> Vec<QueueWrite> {
        // A shared store is written by each decision itself (`turn`).
        if self.multi_node.is_some() {
            lock(&self.dirty).clear();
            return Vec::new();
        }
        let now = std::time::Instant::now();
        let mut due = Vec::new();
        lock(&self.dirty).retain(|account| {
            let entry = self.entry(account);
            if entry.take_write_turn(now, all) {
                due.push((account.clone(), entry));
                false
            } else {
                true
            }
        });
        let mut writes = Vec::with_capacity(due.len());
        for (account, entry) in due {
            let bytes = serde_json::to_vec(&*entry.state());
            if let Ok(bytes) = bytes {
                writes.push(QueueWrite::PolicyState {
                    account,
                    state: Some(bytes),
                });
            }
        }
        writes
    }

    fn has_dirty(&self) -> bool {
        !lock(&self.dirty).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::record::account::Account;
    use crate::store::shared::{PolicyLock, SharedStore};
    use crate::store::{AliasChange, AlsoWrite, Store};
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    use std::time::Duration;

    /// A shared store whose read of one account's state waits until told.
    struct SlowStore {
        inner: Store,
        entered: SyncSender<()>,
        release: Mutex<Receiver<()>>,
    }

    impl SharedStore for SlowStore {
        fn backend(&self) -> &'static str {
            "postgres"
        }
        fn policy_state(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
            if account == "slow@example.com" {
                let _ = self.entered.send(());
                let _ = lock(&self.release).recv();
            }
            Ok(None)
        }
        fn account_get(&self, a: &str) -> Result<Option<Account>, StoreError> {
            self.inner.account_get(a)
        }
        fn account_create(&self, a: &Account) -> Result<bool, StoreError> {
            self.inner.account_create(a)
        }
        fn account_update_with(
            &self,
            a: &str,
            c: &mut dyn FnMut(&mut Account, &mut AlsoWrite) -> bool,
        ) -> Result<bool, StoreError> {
            SharedStore::account_update_with(&self.inner, a, c)
        }
        fn account_list(&self) -> Result<Vec<Account>, StoreError> {
            self.inner.account_list()
        }
        fn account_delete(&self, a: &str) -> Result<bool, StoreError> {
            self.inner.account_delete(a)
        }
        fn alias_add_with(
            &self,
            a: &str,
            b: &str,
            c: &mut dyn FnMut(&mut Account),
        ) -> Result<AliasChange, StoreError> {
            SharedStore::alias_add_with(&self.inner, a, b, c)
        }
        fn alias_remove_with(
            &self,
            a: &str,
            b: &str,
            c: &mut dyn FnMut(&mut Account),
        ) -> Result<AliasChange, StoreError> {
            SharedStore::alias_remove_with(&self.inner, a, b, c)
        }
        fn policy_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn policy_lock(&self, _: &str) -> Result<Option<Box<dyn PolicyLock>>, StoreError> {
            Ok(None)
        }
        fn lockouts_save(&self, s: &[u8], now: u64) -> Result<(), StoreError> {
            SharedStore::lockouts_save(&self.inner, s, now)
        }
        fn lockouts_saved(&self, since: u64) -> Result<Vec<Vec<u8>>, StoreError> {
            SharedStore::lockouts_saved(&self.inner, since)
        }
    }

    #[test]
    fn an_account_read_from_a_slow_store_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (entered, entered_rx) = sync_channel(1);
        let (release_tx, release) = sync_channel(1);
        let store: SharedData = Arc::new(SlowStore {
            inner: Store::open_or_create(dir.path()).unwrap(),
            entered,
            release: Mutex::new(release),
        });
        let ledger = Ledger::load(
            PolicyConfig::default(),
            Arc::new(SystemClock),
            &store,
            Preload::OnDemand,
            ContactKey([1, 2]),
        )
        .unwrap();
        // One first use waits for the store (a busy pool, a slow database)...
        let slow = {
            let ledger = ledger.clone();
            std::thread::spawn(move || ledger.entry("slow@example.com"))
        };
        entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // ...while every other account is still served.
        let (done_tx, done) = sync_channel(1);
        let other = {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                ledger.entry("fast@example.com");
                ledger.follows("known@example.com");
                let _ = done_tx.send(());
            })
        };
        let served = done.recv_timeout(Duration::from_secs(2));
        release_tx.send(()).unwrap();
        slow.join().unwrap();
        other.join().unwrap();
        assert!(served.is_ok(), "another account waited for the slow read");
    }
}
