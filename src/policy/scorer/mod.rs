//! The outbound-policy scorer: for every message, does the account still
//! look like its owner?
//!
//! Each message earns points from signals (new recipients, above all from a
//! network the account has not used before; the same body to many people;
//! logins from many networks; many link domains; a display name carrying
//! another address; bounces; a login after many wrong passwords; unusual
//! speed). Points decay with a half-life; an account whose score reaches
//! `block_score` is blocked with the 554 of DESIGN.md. Caps on volume only
//! ever defer (451, for the whole message). docs/policy.md explains each
//! signal and default.
//!
//! Per account, the decision and the counter update happen under one lock,
//! in arrival order, so parallel sessions cannot all slip under the
//! threshold. The changed state is written by the spool's group commit,
//! in the same commit as the messages it counted.

pub mod content;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnet::IpNet;
use serde::Serialize;

use self::content::Content;
use self::state::{AccountState, HOUR, MINUTE};
use super::feedback::DeliveryFeedback;
use super::{Decision, MailContext, MessageContext, Policy, RcptContext};
use crate::accounts::{Account, Accounts, BlockKind, BlockRequest, Origin};
use crate::clock::Clock;
use crate::config::{PolicyConfig, PolicyMode};
use crate::events::{Event, Events};
use crate::smtp::reply;
use crate::spool::{CommitHook, Envelope, QueueEntry, QueueState, QueueWrite, Recipient, Spool};
use crate::store::Store;

/// The points one message earned, by signal.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Breakdown {
    pub signals: Vec<(&'static str, f64)>,
}

impl Breakdown {
    fn add(&mut self, signal: &'static str, points: f64) {
        if points > 0.0 {
            self.signals.push((signal, points));
        }
    }

    pub fn total(&self) -> f64 {
        self.signals.iter().map(|(_, p)| p).sum()
    }

    /// The signals, largest first, as `name=points`.
    pub fn describe(&self) -> String {
        let mut s = self.signals.clone();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.iter()
            .map(|(n, p)| format!("{n}={p:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn top(&self) -> Option<&'static str> {
        self.signals
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, _)| *n)
    }
}

/// Messages up to this size are analysed on the session's own thread.
const INLINE_ANALYSIS: usize = 64 * 1024;

/// The keys `account policy set` accepts: limits a trusted bulk sender
/// may need raised.
pub const OVERRIDE_KEYS: &[&str] = &[
    "block_score",
    "max_messages_per_minute",
    "max_messages_per_hour",
    "max_messages_per_day",
    "max_recipients_per_minute",
    "max_recipients_per_hour",
    "max_recipients_per_day",
    "fast_messages_per_hour",
    "bulk_messages",
];

fn apply_override(c: &mut PolicyConfig, key: &str, value: f64) {
    let n = value.max(0.0).min(u32::MAX as f64) as u32;
    match key {
        "block_score" => c.block_score = value,
        "max_messages_per_minute" => c.max_messages_per_minute = n,
        "max_messages_per_hour" => {
            c.max_messages_per_hour = n;
            c.new_account_max_messages_per_hour = n;
        }
        "max_messages_per_day" => c.max_messages_per_day = n,
        "max_recipients_per_minute" => c.max_recipients_per_minute = n,
        "max_recipients_per_hour" => {
            c.max_recipients_per_hour = n;
            c.new_account_max_recipients_per_hour = n;
        }
        "max_recipients_per_day" => c.max_recipients_per_day = n,
        "fast_messages_per_hour" => c.fast_messages_per_hour = n,
        "bulk_messages" => c.bulk_messages = n as usize,
        _ => {}
    }
}

/// The reason category a user sees: plain words, never thresholds.
pub fn category(signal: &str) -> &'static str {
    match signal {
        "new_recipients" | "new_recipients_unfamiliar_network" | "bulk_new_recipients" => {
            "sending to many new recipients"
        }
        "repeated_body" => "the same message sent to many recipients",
        "network_spread" => "logins from many different networks",
        "link_domains" => "messages with many links to different sites",
        "display_name_address" => "a sender name that imitates another address",
        "bounces" => "many messages that could not be delivered",
        "auth_failures_before_login" => "a login after many wrong passwords",
        "fast_sending" => "sending unusually fast",
        "many_domains" => "sending to many different domains",
        _ => "unusual sending activity",
    }
}

/// What `account show` prints about the scorer's view of an account.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct PolicyView {
    pub score: f64,
    pub block_score: f64,
    pub messages_last_minute: u32,
    pub messages_last_hour: u32,
    pub messages_last_day: u32,
    pub recipients_last_hour: u32,
    pub recipients_last_day: u32,
    pub networks_last_hour: usize,
    pub delivered_last_day: u32,
    pub bounced_last_day: u32,
}

pub struct Scorer {
    /// Replaced on SIGHUP.
    config: std::sync::RwLock<Arc<PolicyConfig>>,
    clock: Arc<dyn Clock>,
    store: Store,
    support_contact: Option<String>,
    shared: Vec<IpNet>,
    /// Set by `connect`, cleared by `disconnect` (the scorer and the
    /// accounts refer to each other; shutdown breaks the cycle).
    accounts: Mutex<Option<Accounts>>,
    events: Mutex<Option<Arc<dyn Events>>>,
    /// Where the evidence of a block is kept.
    spool: Mutex<Option<Arc<dyn Spool>>>,
    states: Mutex<HashMap<String, Arc<Entry>>>,
    dirty: Mutex<HashSet<String>>,
}

/// One account: `turn` orders its decisions (FIFO, held across awaits);
/// `state` is only ever held briefly, never across an await, so logins and
/// delivery results can be recorded from anywhere.
struct Entry {
    turn: tokio::sync::Mutex<()>,
    state: Mutex<AccountState>,
    /// When the state was last handed to a commit.
    written: Mutex<Option<std::time::Instant>>,
}

/// An account's state is written with the spool at most this often: a
/// busy sender's windows are serialised once a second, not once a commit.
/// A crash forgets at most this much of its counting (the messages
/// themselves are durable before their 250, whatever happens here).
const STATE_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let due = all || written.is_none_or(|at| now.duration_since(at) >= STATE_WRITE_INTERVAL);
        if due {
            *written = Some(now);
        }
        due
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AccountState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The network a client counts as for the spread signal: its /24 or /64.
pub fn scoring_network(ip: IpAddr) -> IpNet {
    let prefix = if ip.to_canonical().is_ipv4() { 24 } else { 64 };
    IpNet::new(ip.to_canonical(), prefix)
        .expect("valid prefix")
        .trunc()
}

impl Scorer {
    /// Loads every account's saved state from the store.
    pub fn new(
        config: PolicyConfig,
        clock: Arc<dyn Clock>,
        store: Store,
        support_contact: Option<String>,
    ) -> anyhow::Result<Arc<Self>> {
        let shared = config
            .shared_client_networks
            .iter()
            .filter_map(|n| {
                n.parse::<IpNet>()
                    .ok()
                    .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        let mut states = HashMap::new();
        for (account, bytes) in store.policy_states().map_err(|e| anyhow::anyhow!("{e}"))? {
            match serde_json::from_slice::<AccountState>(&bytes) {
                Ok(state) => {
                    states.insert(account, Entry::new(state.upgrade()));
                }
                Err(e) => tracing::warn!(event = "policy.state_unreadable", account, error = %e),
            }
        }
        Ok(Arc::new(Self {
            config: std::sync::RwLock::new(Arc::new(config)),
            clock,
            store,
            support_contact,
            shared,
            accounts: Mutex::new(None),
            events: Mutex::new(None),
            spool: Mutex::new(None),
            states: Mutex::new(states),
            dirty: Mutex::new(HashSet::new()),
        }))
    }

    /// Completes the wiring: blocks go through `accounts`, decisions to `events`.
    pub fn connect(&self, accounts: Accounts, events: Arc<dyn Events>, spool: Arc<dyn Spool>) {
        *self.accounts.lock().expect("scorer wiring") = Some(accounts);
        *self.events.lock().expect("scorer wiring") = Some(events);
        *self.spool.lock().expect("scorer wiring") = Some(spool);
    }

    /// Drops the references `connect` made, so everything can be freed.
    pub fn disconnect(&self) {
        self.accounts.lock().expect("scorer wiring").take();
        self.events.lock().expect("scorer wiring").take();
        self.spool.lock().expect("scorer wiring").take();
    }

    /// The configuration in force right now.
    pub fn config(&self) -> Arc<PolicyConfig> {
        self.config.read().expect("policy config").clone()
    }

    /// A new `[policy]` (SIGHUP); accounts' windows and scores are kept.
    pub fn set_config(&self, config: PolicyConfig) {
        *self.config.write().expect("policy config") = Arc::new(config);
    }

    fn emit(&self, event: Event) {
        let events = self.events.lock().expect("scorer wiring").clone();
        if let Some(events) = events {
            events.emit(event);
        }
    }

    fn entry(&self, account: &str) -> Arc<Entry> {
        let now = self.clock.unix();
        self.states
            .lock()
            .expect("scorer states")
            .entry(account.to_string())
            .or_insert_with(|| Entry::new(AccountState::new(now)))
            .clone()
    }

    fn follows(&self, account: &str) -> bool {
        self.states
            .lock()
            .expect("scorer states")
            .contains_key(account)
    }

    /// Changes an account's state briefly (never across an await).
    fn with_state<T>(&self, account: &str, f: impl FnOnce(&mut AccountState) -> T) -> T {
        let entry = self.entry(account);
        let out = f(&mut entry.state());
        self.mark_dirty(account);
        out
    }

    fn mark_dirty(&self, account: &str) {
        self.dirty
            .lock()
            .expect("dirty set")
            .insert(account.to_string());
    }

    /// A network as the spread signal sees it: every shared client network
    /// (office NAT, cloud mail app) counts as one known client.
    fn network_key(&self, ip: IpAddr) -> String {
        let ip = ip.to_canonical();
        match self.shared.iter().find(|n| n.contains(&ip)) {
            Some(n) => format!("shared:{n}"),
            None => scoring_network(ip).to_string(),
        }
    }

    /// A point read from redb's cache, done in place (see Accounts::find).
    async fn account(&self, address: &str) -> Option<Account> {
        self.store.account_get(address).ok().flatten()
    }

    /// The block reply, if the account is blocked (or gone).
    fn gate(&self, address: &str, account: Option<&Account>) -> Option<Decision> {
        let contact = self.support_contact.as_deref();
        match account {
            None => Some(Decision::Block(reply::operator_block(address, contact))),
            Some(a) => match a.block.as_ref().map(|b| b.kind) {
                None => None,
                Some(BlockKind::Policy) => Some(Decision::Block(reply::policy_block(&a.address))),
                Some(BlockKind::Operator) => {
                    Some(Decision::Block(reply::operator_block(&a.address, contact)))
                }
            },
        }
    }

    /// New accounts, and accounts on probation after a self-service
    /// unblock, run on the new-account caps.
    fn is_new(&self, account: &Account, now: u64) -> bool {
        account.created + self.config().new_account_period.as_secs() > now
            || self.on_probation(account, now)
    }

    fn on_probation(&self, account: &Account, now: u64) -> bool {
        account
            .history
            .iter()
            .rev()
            .find(|h| h.change == "unblocked")
            .is_some_and(|h| h.via == "rule" && h.at + self.config().probation.as_secs() > now)
    }

    /// A repeat offender or a block during probation: only an operator may
    /// lift this one.
    fn block_kind(&self, account: &Account, now: u64) -> BlockKind {
        let repeat = account.history.iter().any(|h| {
            h.change == "blocked_policy" && h.at + self.config().repeat_block_period.as_secs() > now
        });
        if repeat || self.on_probation(account, now) {
            BlockKind::Operator
        } else {
            BlockKind::Policy
        }
    }

    /// The configuration with the account's own overrides applied.
    fn effective(&self, account: &Account) -> Arc<PolicyConfig> {
        let base = self.config();
        if account.policy_overrides.is_empty() {
            return base;
        }
        let mut c = (*base).clone();
        for (key, value) in &account.policy_overrides {
            apply_override(&mut c, key, *value);
        }
        Arc::new(c)
    }

    /// The cap this message would break, if any: caps only ever defer.
    pub(crate) fn cap_broken(
        c: &PolicyConfig,
        st: &AccountState,
        now: u64,
        new_account: bool,
        recipients: u32,
        messages: u32,
    ) -> Option<&'static str> {
        let (m1, r1) = st.messages_within(now, MINUTE);
        let (mh, rh) = st.messages_within(now, HOUR);
        let (md, rd) = st.messages_today();
        let (max_mh, max_rh) = if new_account {
            (
                c.new_account_max_messages_per_hour,
                c.new_account_max_recipients_per_hour,
            )
        } else {
            (c.max_messages_per_hour, c.max_recipients_per_hour)
        };
        [
            (
                m1 + messages > c.max_messages_per_minute,
                "messages_per_minute",
            ),
            (mh + messages > max_mh, "messages_per_hour"),
            (md + messages > c.max_messages_per_day, "messages_per_day"),
            (
                r1 + recipients > c.max_recipients_per_minute,
                "recipients_per_minute",
            ),
            (rh + recipients > max_rh, "recipients_per_hour"),
            (
                rd + recipients > c.max_recipients_per_day,
                "recipients_per_day",
            ),
        ]
        .into_iter()
        .find_map(|(broken, name)| broken.then_some(name))
    }

    /// The points this message earns, given the account's windows.
    pub fn score_message(
        &self,
        st: &AccountState,
        now: u64,
        network: &str,
        recipients: &[String],
        content: &Content,
    ) -> Breakdown {
        score_with(&self.config(), st, now, network, recipients, content)
    }
}

/// The points a message earns under configuration `c`.
fn score_with(
    c: &PolicyConfig,
    st: &AccountState,
    now: u64,
    network: &str,
    recipients: &[String],
    content: &Content,
) -> Breakdown {
    let mut b = Breakdown::default();
    let familiar = network.starts_with("shared:")
        || st.is_familiar(
            network,
            now,
            c.network_familiar_after.as_secs(),
            c.network_familiar_for.as_secs(),
        );
    let mut seen = HashSet::new();
    let new = recipients
        .iter()
        .filter(|r| seen.insert(r.as_str()) && !st.known.contains(r))
        .count() as f64;
    if familiar {
        b.add(
            "new_recipients",
            (new * c.weight_new_recipient).min(c.max_new_recipient_points),
        );
    } else {
        b.add(
            "new_recipients_unfamiliar_network",
            (new * c.weight_new_recipient_unfamiliar).min(c.max_new_recipient_points_unfamiliar),
        );
    }
    // Many messages, each to several new people, within minutes: mail
    // merged into small batches. Single replies and one big list
    // mailing do not look like this.
    if new as u32 >= c.bulk_new_recipients_per_message
        && st.bulk_messages(
            now,
            c.bulk_window.as_secs(),
            c.bulk_new_recipients_per_message,
        ) + 1
            >= c.bulk_messages
    {
        b.add("bulk_new_recipients", c.weight_bulk);
    }
    if new > 0.0 && st.body_seen(content.fingerprint) > 0 {
        let w = if familiar {
            c.weight_repeated_body
        } else {
            c.weight_repeated_body_unfamiliar
        };
        b.add("repeated_body", w);
    }
    if st.networks_last_hour().len() >= c.spread_networks_per_hour {
        b.add("network_spread", c.weight_network_spread);
    }
    if content.link_domains > c.free_link_domains {
        let extra = (content.link_domains - c.free_link_domains) as f64;
        b.add(
            "link_domains",
            (extra * c.weight_link_domain).min(c.max_link_points),
        );
    }
    if content.display_name_address {
        b.add("display_name_address", c.weight_display_name_address);
    }
    let (delivered, bounced) = st.deliveries_today();
    let total = delivered + bounced;
    if total >= c.bounce_min_recipients && bounced as f64 / total as f64 >= c.bounce_ratio {
        b.add("bounces", c.weight_bounces);
    }
    if st.failures_before_login >= c.auth_failures_before_success {
        b.add("auth_failures_before_login", c.weight_auth_failures);
    }
    let (per_hour, _) = st.messages_within(now, HOUR);
    if per_hour + 1 > c.fast_messages_per_hour {
        b.add("fast_sending", c.weight_fast_message);
    }
    let domains = st.distinct_domains_last_hour();
    if domains > 20 {
        b.add("many_domains", ((domains - 20) as f64 * 0.1).min(1.0));
    }
    b
}

impl Scorer {
    /// A successful login of `account` from `ip`.
    pub fn observe_login(&self, account: &str, ip: IpAddr) {
        let now = self.clock.unix();
        let network = self.network_key(ip);
        let needed = self.config().auth_failures_before_success;
        self.with_state(account, |st| st.record_login(now, &network, needed));
    }

    /// A wrong password for an account the scorer follows.
    pub fn observe_auth_failure(&self, account: &str) {
        if self.follows(account) {
            let now = self.clock.unix();
            self.with_state(account, |st| st.record_auth_failure(now));
        }
    }

    /// The state of an account as `account show` prints it.
    pub fn view(&self, address: &str) -> PolicyView {
        let now = self.clock.unix();
        let entry = self.entry(address);
        let mut st = entry.state();
        st.advance(now, self.config().half_life.as_secs());
        view_of(&st, now, &self.config())
    }

    /// After a block lifts: windows and score start again from zero, and
    /// probation counts only what comes next. Known recipients and the
    /// networks that were familiar before stay.
    fn restart(&self, account: &str) {
        let now = self.clock.unix();
        let after = self.config().network_familiar_after.as_secs();
        self.with_state(account, |st| {
            let known = std::mem::take(&mut st.known);
            let networks: Vec<_> = st
                .networks
                .drain(..)
                .filter(|n| n.first_seen + after <= now)
                .collect();
            *st = AccountState::new(now);
            st.known = known;
            st.networks = networks;
        });
    }

    /// Networks that logged in while the abuse built up and are not the
    /// owner's usual ones: their portal changes will not lift the block.
    /// They are forgotten as known networks too.
    fn take_abuse_networks(&self, st: &mut AccountState, now: u64, network: &str) -> Vec<IpNet> {
        let after = self.config().network_familiar_after.as_secs();
        let for_ = self.config().network_familiar_for.as_secs();
        let mut abuse: Vec<IpNet> = st
            .logins
            .iter()
            .map(|(_, n)| n.as_str())
            .chain(std::iter::once(network))
            .filter(|n| !n.starts_with("shared:") && !st.is_familiar(n, now, after, for_))
            .filter_map(|n| n.parse().ok())
            .collect();
        abuse.sort();
        abuse.dedup();
        st.networks
            .retain(|n| !abuse.iter().any(|a| a.to_string() == n.network));
        abuse
    }

    /// The refused message that tipped the block, kept for the operator.
    async fn keep_evidence(&self, ctx: &MessageContext<'_>, now: u64) {
        let spool = self.spool.lock().expect("scorer wiring").clone();
        let Some(spool) = spool else { return };
        let id = spool.new_id();
        let mut entry = QueueEntry::new(
            id,
            Envelope {
                from: ctx.from.to_string(),
                recipients: ctx
                    .recipients
                    .iter()
                    .map(|r| Recipient {
                        address: r.clone(),
                        orcpt: None,
                        notify: 0,
                    })
                    .collect(),
                account: ctx.account.to_string(),
                client_ip: ctx.client_ip,
                received_at: now,
                size: ctx.message.len() as u64,
                mail_flags: 0,
                envid: None,
            },
        );
        entry.state = QueueState::Evidence;
        let write = QueueWrite::Insert {
            entry,
            body: ctx.message.to_vec(),
        };
        if let Err(e) = spool.apply(vec![write]).await {
            tracing::error!(event = "policy.evidence_failed", account = ctx.account, error = %e);
        }
    }

    async fn block(
        &self,
        address: &str,
        kind: BlockKind,
        score: f64,
        breakdown: &Breakdown,
        abuse: Vec<IpNet>,
    ) -> Decision {
        let c = self.config();
        let reason = category(breakdown.top().unwrap_or("")).to_string();
        let detail = format!(
            "score {score:.1} (block at {:.1}): {}",
            c.block_score,
            breakdown.describe()
        );
        let accounts = self.accounts.lock().expect("scorer wiring").clone();
        if let Some(accounts) = accounts {
            let request = BlockRequest {
                kind,
                reason,
                detail: Some(detail),
                abuse_networks: abuse,
            };
            let origin = Origin {
                via: "policy",
                ip: None,
            };
            if let Err(e) = accounts.block(address, request, &origin).await {
                tracing::error!(event = "policy.block_failed", account = address, error = %e);
            }
        }
        match kind {
            BlockKind::Policy => Decision::Block(reply::policy_block(address)),
            BlockKind::Operator => Decision::Block(reply::operator_block(
                address,
                self.support_contact.as_deref(),
            )),
        }
    }
}

fn view_of(st: &AccountState, now: u64, c: &PolicyConfig) -> PolicyView {
    let (m1, _) = st.messages_within(now, MINUTE);
    let (mh, rh) = st.messages_within(now, HOUR);
    let (md, rd) = st.messages_today();
    let (delivered, bounced) = st.deliveries_today();
    PolicyView {
        score: (st.score * 10.0).round() / 10.0,
        block_score: c.block_score,
        messages_last_minute: m1,
        messages_last_hour: mh,
        messages_last_day: md,
        recipients_last_hour: rh,
        recipients_last_day: rd,
        networks_last_hour: st.networks_last_hour().len(),
        delivered_last_day: delivered,
        bounced_last_day: bounced,
    }
}

/// The saved state of an account, read straight from the store (for the
/// CLI with no server running).
pub fn stored_view(
    store: &Store,
    address: &str,
    config: &PolicyConfig,
    now: u64,
) -> Option<PolicyView> {
    let bytes = store.policy_state(address).ok()??;
    let mut st = serde_json::from_slice::<AccountState>(&bytes)
        .ok()?
        .upgrade();
    st.advance(now, config.half_life.as_secs());
    Some(view_of(&st, now, config))
}

#[async_trait]
impl Policy for Scorer {
    async fn on_mail(&self, ctx: &MailContext<'_>) -> Decision {
        let account = self.account(ctx.account).await;
        if let Some(refusal) = self.gate(ctx.account, account.as_ref()) {
            return refusal;
        }
        let account = account.expect("gate refuses a missing account");
        let now = self.clock.unix();
        let entry = self.entry(ctx.account);
        let (cap, score) = {
            let mut st = entry.state();
            st.advance(now, self.config().half_life.as_secs());
            // One more message, recipients not known yet.
            (
                Self::cap_broken(
                    &self.effective(&account),
                    &st,
                    now,
                    self.is_new(&account, now),
                    0,
                    1,
                ),
                st.score,
            )
        };
        match cap {
            Some(cap) if self.config().mode == PolicyMode::Enforce => {
                self.emit(
                    Event::new("policy.decision")
                        .account(ctx.account)
                        .ip(ctx.client_ip)
                        .reason("defer")
                        .target(cap)
                        .score(score),
                );
                Decision::Defer(reply::RATE_LIMITED)
            }
            _ => Decision::Accept,
        }
    }

    async fn on_rcpt(&self, ctx: &RcptContext<'_>) -> Decision {
        // Blocked mid-transaction: the next RCPT says so. Never a per-RCPT
        // rate limit (partial acceptance makes clients resend to everyone).
        let account = self.account(ctx.account).await;
        self.gate(ctx.account, account.as_ref())
            .unwrap_or(Decision::Accept)
    }

    async fn on_message(&self, ctx: &MessageContext<'_>) -> Decision {
        let account = self.account(ctx.account).await;
        if let Some(refusal) = self.gate(ctx.account, account.as_ref()) {
            return refusal;
        }
        let account = account.expect("gate refuses a missing account");
        let content = if ctx.message.len() <= INLINE_ANALYSIS {
            // A few microseconds: less than a trip through the blocking pool.
            content::analyse(ctx.message)
        } else {
            // Only the part the analysis reads, not a copy of a 25 MiB message.
            let message = ctx.message[..ctx.message.len().min(content::SCAN_LIMIT)].to_vec();
            tokio::task::spawn_blocking(move || content::analyse(&message))
                .await
                .unwrap_or_default()
        };
        let now = self.clock.unix();
        let network = self.network_key(ctx.client_ip);
        let observe = self.config().mode == PolicyMode::Observe;
        let entry = self.entry(ctx.account);
        // Decisions of one account happen one at a time, in arrival order.
        let _turn = entry.turn.lock().await;
        let n = ctx.recipients.len() as u32;
        let (verdict, cap, breakdown, score, abuse) = {
            let mut st = entry.state();
            st.advance(now, self.config().half_life.as_secs());
            let config = self.effective(&account);
            let cap = Self::cap_broken(&config, &st, now, self.is_new(&account, now), n, 1);
            let breakdown = score_with(&config, &st, now, &network, ctx.recipients, &content);
            let score = st.score + breakdown.total();
            let verdict = if cap.is_some() {
                "defer"
            } else if score >= config.block_score {
                "block"
            } else {
                "accept"
            };
            let mut abuse = Vec::new();
            match (verdict, observe) {
                // A deferred message is not sent: nothing to count.
                ("defer", false) => {}
                ("block", false) => {
                    st.score = score;
                    abuse = self.take_abuse_networks(&mut st, now, &network);
                }
                _ => {
                    st.score = score;
                    st.failures_before_login = 0;
                    st.record_message(now, ctx.recipients, content.fingerprint);
                }
            }
            (verdict, cap, breakdown, score, abuse)
        };
        self.mark_dirty(ctx.account);
        self.emit(
            Event::new("policy.decision")
                .account(ctx.account)
                .ip(ctx.client_ip)
                .reason(verdict)
                .target(cap.map_or_else(|| breakdown.describe(), str::to_string))
                .score(score)
                .observed(observe)
                .recipients(ctx.recipients.len()),
        );
        match (verdict, observe) {
            ("defer", false) => Decision::Defer(reply::RATE_LIMITED),
            ("block", false) => {
                self.keep_evidence(ctx, now).await;
                let kind = self.block_kind(&account, now);
                self.block(ctx.account, kind, score, &breakdown, abuse)
                    .await
            }
            _ => Decision::Accept,
        }
    }
}

impl DeliveryFeedback for Scorer {
    fn delivery_outcome(&self, account: &str, delivered: usize, bounced: usize) {
        // Only accounts the scorer follows (not postmaster notices).
        if !self.follows(account) {
            return;
        }
        let now = self.clock.unix();
        self.with_state(account, |st| {
            st.record_delivery(now, delivered as u32, bounced as u32)
        });
    }
}

impl CommitHook for Scorer {
    fn dirty_writes(&self, all: bool) -> Vec<QueueWrite> {
        let now = std::time::Instant::now();
        let mut due = Vec::new();
        self.dirty.lock().expect("dirty set").retain(|account| {
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
        !self.dirty.lock().expect("dirty set").is_empty()
    }
}

/// Feeds the scorer from the event stream: logins, failures, unblocks.
pub struct ScorerEvents {
    scorer: Arc<Scorer>,
    next: Arc<dyn Events>,
}

impl ScorerEvents {
    pub fn new(scorer: Arc<Scorer>, next: Arc<dyn Events>) -> Self {
        Self { scorer, next }
    }
}

impl Events for ScorerEvents {
    fn emit(&self, event: Event) {
        let s = &self.scorer;
        match (event.name, event.account.as_deref(), event.ip) {
            ("auth.success", Some(account), Some(ip)) => s.observe_login(account, ip),
            // Failures for unknown logins are not followed (no state to grow).
            ("auth.failure", Some(account), Some(_))
                if event.reason.as_deref() == Some("bad_password") =>
            {
                s.observe_auth_failure(account)
            }
            ("account.unblocked", Some(account), _) => s.restart(account),
            _ => {}
        }
        self.next.emit(event);
    }
}

#[cfg(test)]
mod tests;
