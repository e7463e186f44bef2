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

pub mod baseline;
pub mod clients;
pub mod contacts;
pub mod content;
pub mod ledger;
pub mod signals;
pub mod state;
mod turn;

pub use ledger::{Ledger, Preload};

use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::Serialize;

use self::clients::ClientPrint;
use self::content::Content;
use self::signals::{Message, Network, Retries, Sender};
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
        "new_recipients" | "bulk_new_recipients" => "sending to many new recipients",
        "contacts_from_another_sender" | "contact_sweep" => {
            "mail to your contacts from an unfamiliar device or network"
        }
        "retry_hammering" => "a program resending refused mail over and over",
        "complaints" => "complaints from recipients",
        "unusual_hour" => "sending at hours this account never sends",
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

    /// A repeat offender or a block during probation, with evidence of a
    /// different sender (network, program): only an operator may lift
    /// this one. Without such evidence the owner can lift it again.
    fn block_kind(&self, account: &Account, now: u64, different_sender: bool) -> BlockKind {
        let repeat = account.history.iter().any(|h| {
            h.change == "blocked_policy" && h.at + self.config().repeat_block_period.as_secs() > now
        });
        if different_sender && (repeat || self.on_probation(account, now)) {
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

impl Scorer {
    /// Networks that logged in while the abuse built up and are not the
    /// owner's trusted ones: their portal changes will not lift the block.
    fn take_abuse_networks(
        &self,
        st: &mut AccountState,
        account: &Account,
        now: u64,
        network: &str,
    ) -> Vec<IpNet> {
        let rule = self.accounts.trust_rule();
        let mut abuse: Vec<IpNet> = st
            .logins
            .iter()
            .map(|(_, n)| n.as_str())
            .chain(std::iter::once(network))
            .filter(|n| !n.starts_with("shared:"))
            .filter_map(|n| n.parse::<IpNet>().ok())
            .filter(|n| trust::trusted(account, &st.uses, rule, n.network(), now).is_none())
            .collect();
        abuse.sort();
        abuse.dedup();
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
        let content = if let Some(f) = ctx.features {
            f.content()
        } else if ctx.message.len() <= INLINE_ANALYSIS {
            // A few microseconds: less than a trip through the blocking pool.
            content::analyse(ctx.message)
        } else {
            // Only the part the analysis reads, not a copy of a 25 MiB message.
            let message = ctx.message[..ctx.message.len().min(content::SCAN_LIMIT)].to_vec();
            tokio::task::spawn_blocking(move || content::analyse(&message))
                .await
                .unwrap_or_default()
        };
        let print = match ctx.features.map(|f| f.client) {
            Some(print) if print.telling() => print,
            _ => ClientPrint::of(ctx.client, &content),
        };
        let now = self.ledger.now();
        let network = self.ledger.network_key(ctx.client_ip);
        let observe = self.config().mode == PolicyMode::Observe;
        let rule = self.accounts.trust_rule();
        let entry = self.ledger.entry(ctx.account);
        // Decisions of one account happen one at a time, in arrival order.
        let _turn = entry.turn.lock().await;
        // Across nodes too, with a shared store (a decision that cannot be
        // serialised is not made: the client retries).
        let Ok(shared_turn) = self.ledger.shared_turn(ctx.account, &entry).await else {
            return Decision::Unavailable;
        };
        let n = ctx.recipients.len() as u32;
        let (verdict, cap, breakdown, score, abuse, sender, features) = {
            let mut st = entry.state();
            st.advance(now, self.config().half_life.as_secs());
            let config = self.effective(&account);
            let trusted = |ip| trust::trusted(&account, &st.uses, rule, ip, now).is_some();
            let network_verdict = if network.starts_with("shared:") || trusted(ctx.client_ip) {
                Network::Trusted
            } else if !trust::any_trusted(&account, &st.uses, rule, now) {
                Network::NoHistory
            } else {
                Network::Untrusted
            };
            let untrusted_networks_last_hour = st
                .networks_last_hour()
                .iter()
                .filter(|n| !n.starts_with("shared:"))
                .filter_map(|n| n.parse::<IpNet>().ok())
                .filter(|n| !trusted(n.network()))
                .count();
            let sender = Sender {
                network: network_verdict,
                program: st.clients.judge(&print, config.program_known_after_days),
            };
            let mailed = st.mailed(ctx.recipients, self.ledger.contact_key(), now);
            let key = retry_key(&content, &mailed);
            let retries = retries(&st, &config, now, key);
            // The account's normal, read once for the signals and the budget.
            let normal = st
                .baseline
                .normal(contacts::day_number(now), config.baseline_min_days);
            let message = Message {
                sender,
                mailed: &mailed,
                recipients: n,
                normal,
                retries,
                untrusted_networks_last_hour,
            };
            let new_account = self.is_new(&account, now);
            let cap = Self::cap_broken(&config, &st, now, new_account, n, 1)
                .or_else(|| budget_broken(&config, &st, now, mailed.new, normal));
            let mut breakdown = signals::score(&config, &st, now, &message, &content);
            // Credentials changed from an untrusted network lately, and
            // this message does not come from a trusted one either.
            if network_verdict != Network::Trusted
                && trust::recent_untrusted_change(
                    &account,
                    now,
                    config.untrusted_change_window.as_secs(),
                )
                .is_some()
            {
                breakdown.add("untrusted_change", config.weight_untrusted_change);
            }
            let score = st.score + breakdown.total();
            let verdict = if score >= config.block_score {
                "block"
            } else if cap.is_some() {
                "defer"
            } else {
                "accept"
            };
            let mut abuse = Vec::new();
            match (verdict, observe) {
                // A deferred message is not sent: nothing to count but the
                // attempt, to recognise a program hammering through.
                ("defer", false) => {
                    st.score += breakdown.total();
                    st.deferred.push_back((now, key));
                    while st.deferred.len() > 256 {
                        st.deferred.pop_front();
                    }
                }
                ("block", false) => {
                    st.score = score;
                    st.uses.refused(ctx.client_ip, now);
                    abuse = self.take_abuse_networks(&mut st, &account, now, &network);
                }
                _ => {
                    st.score = score;
                    st.failures_before_login = 0;
                    st.record_message(now, ctx.recipients, &mailed, content.fingerprint);
                    if !observe || verdict == "accept" {
                        st.uses.sent(ctx.client_ip, now);
                        // Only clean mail teaches what the owner's normal is.
                        if breakdown.total() < config.learn_below {
                            st.clients.learn(&print, contacts::day_number(now));
                            st.learn_links(&content.link_hashes);
                        }
                    }
                }
            }
            let features = Features {
                rcpts: ctx
                    .recipients
                    .iter()
                    .zip(&mailed.each)
                    .map(|(r, fp)| {
                        format!(
                            "{fp:08x}@{:08x}",
                            content::stable_hash(crate::address::domain_of(r).as_bytes()) as u32
                        )
                    })
                    .collect(),
                client: print,
                body_fp: content.fingerprint,
                message_id: content.message_id,
                link_domains: content.link_hashes.clone(),
                user_agent: content.user_agent,
                header_shape: content.header_shape,
                display_name_address: content.display_name_address,
            };
            (verdict, cap, breakdown, score, abuse, sender, features)
        };
        self.ledger.mark_dirty(ctx.account);
        shared_turn.finish(ctx.account, &entry).await;
        let explanation = match cap {
            Some(cap) if verdict == "defer" => cap.to_string(),
            _ => breakdown.describe(),
        };
        let explanation = if sender.judged_on_population() {
            format!("{explanation} (population baseline: little history)")
        } else {
            explanation
        };
        self.emit(
            Event::new(EventKind::PolicyDecision)
                .account(ctx.account)
                .ip(ctx.client_ip)
                .reason(verdict)
                .target(explanation)
                .score(score)
                .observed(observe)
                .recipients(ctx.recipients.len())
                .signals(breakdown.signals.clone())
                .features(features.to_json()),
        );
        match (verdict, observe) {
            ("defer", false) => Decision::Defer,
            ("block", false) => {
                self.keep_evidence(ctx, now).await;
                let kind = self.block_kind(&account, now, sender.different());
                self.block(ctx.account, kind, score, &breakdown, abuse)
                    .await
            }
            _ => Decision::Accept,
        }
    }
}

/// What the scorer read from a message, logged as hashes (never text) so
/// `policy replay` can replay a server's decisions.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Features {
    /// Each recipient as `<keyed fingerprint>@<domain hash>`.
    pub rcpts: Vec<String>,
    pub client: ClientPrint,
    pub body_fp: u64,
    pub message_id: u64,
    pub link_domains: Vec<u32>,
    pub user_agent: u32,
    pub header_shape: u32,
    pub display_name_address: bool,
}

impl Features {
    /// The content signals these stand for.
    pub fn content(&self) -> Content {
        Content {
            link_domains: self.link_domains.len(),
            link_hashes: self.link_domains.clone(),
            display_name_address: self.display_name_address,
            fingerprint: self.body_fp,
            user_agent: self.user_agent,
            header_shape: self.header_shape,
            message_id: self.message_id,
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One message across retries: its Message-ID, else its body and
/// recipients.
fn retry_key(content: &Content, mailed: &state::Mailed) -> u64 {
    if content.message_id != 0 {
        return content.message_id;
    }
    let mut fps = mailed.fps.clone();
    fps.sort_unstable();
    let mut bytes = content.fingerprint.to_le_bytes().to_vec();
    for fp in fps {
        bytes.extend_from_slice(&fp.to_le_bytes());
    }
    content::stable_hash(&bytes)
}

/// Earlier deferred submissions of the message with `key`.
fn retries(st: &AccountState, c: &PolicyConfig, now: u64, key: u64) -> Retries {
    let window = c.retry_window.as_secs();
    let times: Vec<u64> = st
        .deferred
        .iter()
        .filter(|(at, k)| *k == key && at + window > now)
        .map(|(at, _)| *at)
        .collect();
    let gap = c.retry_min_gap.as_secs();
    let mut quick = 0;
    let mut later = now;
    for at in times.iter().rev() {
        if later.saturating_sub(*at) < gap {
            quick += 1;
            later = *at;
        } else {
            break;
        }
    }
    Retries {
        attempts: times.len(),
        quick,
    }
}

/// The hourly budget of new recipients (`new_recipients_budget_*`).
fn budget_broken(
    c: &PolicyConfig,
    st: &AccountState,
    now: u64,
    new: u32,
    normal: Option<baseline::Normal>,
) -> Option<&'static str> {
    let usual = normal.map_or(0, |n| n.top_hour_new);
    let budget = (f64::from(usual) * c.new_recipients_budget_factor)
        .max(f64::from(c.new_recipients_budget_floor));
    (new > 0 && f64::from(st.new_recipients_last_hour(now) + new) > budget)
        .then_some("new_recipients_per_hour")
}

#[cfg(test)]
mod tests;
