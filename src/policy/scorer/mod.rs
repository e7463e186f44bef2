//! The outbound-policy scorer: for every message, does the account still
//! look like its owner?
//!
//! Each message earns points from signals (new recipients, above all from a
//! network the account has not used before; the same body to many people;
//! logins from many networks; many link domains; a display name carrying
//! another address; bounces; a login after many wrong passwords; unusual
//! speed). Points decay with a half-life; an account whose score reaches
//! `block_score` is blocked with the 554 of `smtp::reply`. Caps on volume only
//! ever defer (451, for the whole message). docs/policy.md explains each
//! signal and default.
//!
//! Per account, the decision and the counter update happen under one lock,
//! in arrival order, so parallel sessions cannot all slip under the
//! threshold. The changed state is written by the spool's group commit,
//! in the same commit as the messages it counted.

pub mod content;
pub mod ledger;
pub mod state;
mod turn;

pub use ledger::{Ledger, Preload};

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::Serialize;

use self::content::Content;
use self::state::{AccountState, HOUR, MINUTE};
use super::{Decision, MailContext, MessageContext, Policy, RcptContext};
use crate::accounts::{Account, Accounts, BlockKind, BlockRequest, Origin, trust};
use crate::config::{PolicyConfig, PolicyMode};
use crate::events::{Event, EventKind, Events};
use crate::spool::{Envelope, QueueEntry, QueueState, QueueWrite, Recipient, Spool};

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
        "untrusted_change" => "account settings changed from an unfamiliar network",
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
    ledger: Arc<Ledger>,
    /// Blocks go through the accounts (record, held mail, notices).
    accounts: Accounts,
    /// Where decisions are reported.
    events: Arc<dyn Events>,
    /// Where the evidence of a block is kept.
    spool: Arc<dyn Spool>,
}

impl Scorer {
    pub fn new(
        ledger: Arc<Ledger>,
        accounts: Accounts,
        events: Arc<dyn Events>,
        spool: Arc<dyn Spool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ledger,
            accounts,
            events,
            spool,
        })
    }

    /// The configuration in force right now.
    pub fn config(&self) -> Arc<PolicyConfig> {
        self.ledger.config()
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// The account as last written (from memory, or the store on the
    /// blocking pool); a read error counts as a missing account.
    async fn account(&self, address: &str) -> Option<Arc<Account>> {
        self.accounts.record(address).await.ok().flatten()
    }

    /// The block, if the account is blocked (a missing account is as good
    /// as blocked by the operator).
    fn gate(&self, address: &str, account: Option<&Account>) -> Option<Decision> {
        match account {
            None => Some(Decision::blocked(address, BlockKind::Operator)),
            Some(a) => a
                .block
                .as_ref()
                .map(|b| Decision::blocked(&a.address, b.kind)),
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
            c.apply_override(key, *value);
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
        let spool = &self.spool;
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
        let request = BlockRequest {
            kind,
            reason,
            detail: Some(detail),
            abuse_networks: abuse,
        };
        let origin = Origin {
            via: "policy",
            ip: None,
            enrolment: None,
            recovery_for: None,
        };
        if let Err(e) = self.accounts.block(address, request, &origin).await {
            tracing::error!(event = "policy.block_failed", account = address, error = %e);
        }
        Decision::blocked(address, kind)
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

#[async_trait]
impl Policy for Scorer {
    async fn on_mail(&self, ctx: &MailContext<'_>) -> Decision {
        if !self.ledger.shared_available() {
            return Decision::Unavailable;
        }
        let account = self.account(ctx.account).await;
        if let Some(refusal) = self.gate(ctx.account, account.as_deref()) {
            return refusal;
        }
        let account = account.expect("gate refuses a missing account");
        let now = self.ledger.now();
        let entry = self.ledger.entry(ctx.account);
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
                    Event::new(EventKind::PolicyDecision)
                        .account(ctx.account)
                        .ip(ctx.client_ip)
                        .reason("defer")
                        .target(cap)
                        .score(score),
                );
                Decision::Defer
            }
            _ => Decision::Accept,
        }
    }

    async fn on_rcpt(&self, ctx: &RcptContext<'_>) -> Decision {
        // Blocked mid-transaction: the next RCPT says so. Never a per-RCPT
        // rate limit (partial acceptance makes clients resend to everyone).
        let account = self.account(ctx.account).await;
        self.gate(ctx.account, account.as_deref())
            .unwrap_or(Decision::Accept)
    }

    async fn on_message(&self, ctx: &MessageContext<'_>) -> Decision {
        let account = self.account(ctx.account).await;
        if let Some(refusal) = self.gate(ctx.account, account.as_deref()) {
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
        let now = self.ledger.now();
        let network = self.ledger.network_key(ctx.client_ip);
        let observe = self.config().mode == PolicyMode::Observe;
        // Credentials changed from an untrusted network lately, and this
        // message does not come from a trusted one either.
        let untrusted_change = trust::recent_untrusted_change(
            &account,
            now,
            self.config().untrusted_change_window.as_secs(),
        )
        .is_some()
            && self
                .accounts
                .trusted_from(&account, ctx.client_ip)
                .is_none();
        let entry = self.ledger.entry(ctx.account);
        // Decisions of one account happen one at a time, in arrival order.
        let _turn = entry.turn.lock().await;
        // Across nodes too, with a shared store (a decision that cannot be
        // serialised is not made: the client retries).
        let Ok(shared_turn) = self.ledger.shared_turn(ctx.account, &entry).await else {
            return Decision::Unavailable;
        };
        let n = ctx.recipients.len() as u32;
        let (verdict, cap, breakdown, score, abuse) = {
            let mut st = entry.state();
            st.advance(now, self.config().half_life.as_secs());
            let config = self.effective(&account);
            let cap = Self::cap_broken(&config, &st, now, self.is_new(&account, now), n, 1);
            let mut breakdown = score_with(&config, &st, now, &network, ctx.recipients, &content);
            if untrusted_change {
                breakdown.add("untrusted_change", config.weight_untrusted_change);
            }
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
                    st.uses.refused(ctx.client_ip, now);
                    abuse = self.take_abuse_networks(&mut st, now, &network);
                }
                _ => {
                    st.score = score;
                    st.failures_before_login = 0;
                    st.record_message(now, ctx.recipients, content.fingerprint);
                    if !observe || verdict == "accept" {
                        st.uses.sent(ctx.client_ip, now);
                    }
                }
            }
            (verdict, cap, breakdown, score, abuse)
        };
        self.ledger.mark_dirty(ctx.account);
        shared_turn.finish(ctx.account, &entry).await;
        self.emit(
            Event::new(EventKind::PolicyDecision)
                .account(ctx.account)
                .ip(ctx.client_ip)
                .reason(verdict)
                .target(cap.map_or_else(|| breakdown.describe(), str::to_string))
                .score(score)
                .observed(observe)
                .recipients(ctx.recipients.len()),
        );
        match (verdict, observe) {
            ("defer", false) => Decision::Defer,
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

#[cfg(test)]
mod tests;
