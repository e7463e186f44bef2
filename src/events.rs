//! The `Events` seam: every feature reports what happened as an `Event` of
//! one `EventKind` (docs/architecture.md, "Events"; the log fields in
//! docs/operator-guide.md, "Logs"). Subscribers (the scorer,
//! metrics, operator notices) match on the kind; the log renders the kind's
//! stable name, in one place (`TracingEvents`). Tests plug in a recorder.
//!
//! Events never carry passwords, OTPs, AUTH blobs or message bodies: the
//! struct has no field that could hold one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::locks::Recover;

/// What happened. `name()` is the stable `event` field of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    SessionStart,
    SessionEnd,
    /// A connection refused before its greeting (connection limits).
    SessionRefused,
    AuthSuccess,
    AuthFailure,
    AuthLockout,
    /// A wrong or reused one-time code.
    AuthOtpFailure,
    MessageAccepted,
    MessageRejected,
    /// Every 4xx/5xx reply the SMTP session sends, once each: `stage`,
    /// `code`, `enhanced`, `reason` (a closed set). Logged as
    /// `smtp.rejected` unless an `auth.failure` or `message.rejected`
    /// already says it (`covered`).
    Refusal,
    PolicyDecision,
    AccountCreated,
    AccountDeleted,
    AccountDisabled,
    AccountEnabled,
    AccountAliasAdded,
    AccountAliasRemoved,
    AccountPasswordChanged,
    /// An imported hash replaced by mailwarden's argon2id at a login.
    AccountPasswordRehashed,
    /// `account import` created accounts (`reason`: how many).
    AccountImported,
    AccountTotpEnabled,
    AccountTotpDisabled,
    AccountDevicePasswordCreated,
    AccountDevicePasswordRevoked,
    AccountBlocked,
    AccountUnblocked,
    /// An operator marked a network trusted for the account (`network`).
    AccountNetworkTrusted,
    /// A credential change from a network not trusted for the account,
    /// made (before any block: a policy signal) ...
    AccountUntrustedChange,
    /// ... or refused (during a block: it needs a qualifying network).
    AccountChangeRefused,
    /// A recovery address was set (waiting for its confirmation) ...
    AccountRecoverySet,
    /// ... and confirmed by the link sent to it.
    AccountRecoveryConfirmed,
    /// A recovery link opened a portal session during a block.
    AccountRecoveryLinkUsed,
    PortalSignin,
    PortalSigninFailure,
    DeliverySuccess,
    DeliveryDeferred,
    DeliveryFailed,
    /// A delivery status notification was queued for the sender.
    DeliveryDsn,
    /// What the next hop accepted (`delivered`) and refused for good (`bounced`) of one account's message: the scorer's bounce signal.
    DeliveryOutcome,
    /// The spool refused to record what a delivery did: every worker stops
    /// sending until it can (`messages` = outcomes kept, `error`).
    DeliveryPaused,
    /// The kept outcomes are on disk: delivery goes on (`messages`).
    DeliveryResumed,
    /// A worker or the commit thread panicked (`target` = which, `error` =
    /// the panic's message); readiness turns red.
    TaskPanicked,
}

impl EventKind {
    /// Every kind (tests render each one).
    #[cfg(any(test, feature = "testing"))]
    pub const ALL: &[EventKind] = &[
        Self::SessionStart,
        Self::SessionEnd,
        Self::SessionRefused,
        Self::AuthSuccess,
        Self::AuthFailure,
        Self::AuthLockout,
        Self::AuthOtpFailure,
        Self::MessageAccepted,
        Self::MessageRejected,
        Self::Refusal,
        Self::PolicyDecision,
        Self::AccountCreated,
        Self::AccountDeleted,
        Self::AccountDisabled,
        Self::AccountEnabled,
        Self::AccountAliasAdded,
        Self::AccountAliasRemoved,
        Self::AccountPasswordChanged,
        Self::AccountPasswordRehashed,
        Self::AccountImported,
        Self::AccountTotpEnabled,
        Self::AccountTotpDisabled,
        Self::AccountDevicePasswordCreated,
        Self::AccountDevicePasswordRevoked,
        Self::AccountBlocked,
        Self::AccountUnblocked,
        Self::AccountNetworkTrusted,
        Self::AccountUntrustedChange,
        Self::AccountChangeRefused,
        Self::AccountRecoverySet,
        Self::AccountRecoveryConfirmed,
        Self::AccountRecoveryLinkUsed,
        Self::PortalSignin,
        Self::PortalSigninFailure,
        Self::DeliverySuccess,
        Self::DeliveryDeferred,
        Self::DeliveryFailed,
        Self::DeliveryDsn,
        Self::DeliveryOutcome,
        Self::DeliveryPaused,
        Self::DeliveryResumed,
        Self::TaskPanicked,
    ];

    /// The stable name in the log's `event` field.
    pub const fn name(self) -> &'static str {
        match self {
            Self::SessionStart => "session.start",
            Self::SessionEnd => "session.end",
            Self::SessionRefused => "session.refused",
            Self::AuthSuccess => "auth.success",
            Self::AuthFailure => "auth.failure",
            Self::AuthLockout => "auth.lockout",
            Self::AuthOtpFailure => "auth.otp_failure",
            Self::MessageAccepted => "message.accepted",
            Self::MessageRejected => "message.rejected",
            Self::Refusal => "smtp.rejected",
            Self::PolicyDecision => "policy.decision",
            Self::AccountCreated => "account.created",
            Self::AccountDeleted => "account.deleted",
            Self::AccountDisabled => "account.disabled",
            Self::AccountEnabled => "account.enabled",
            Self::AccountAliasAdded => "account.alias_added",
            Self::AccountAliasRemoved => "account.alias_removed",
            Self::AccountPasswordChanged => "account.password_changed",
            Self::AccountPasswordRehashed => "account.password_rehashed",
            Self::AccountImported => "account.imported",
            Self::AccountTotpEnabled => "account.totp_enabled",
            Self::AccountTotpDisabled => "account.totp_disabled",
            Self::AccountDevicePasswordCreated => "account.device_password_created",
            Self::AccountDevicePasswordRevoked => "account.device_password_revoked",
            Self::AccountBlocked => "account.blocked",
            Self::AccountUnblocked => "account.unblocked",
            Self::AccountNetworkTrusted => "account.network_trusted",
            Self::AccountUntrustedChange => "account.untrusted_change",
            Self::AccountChangeRefused => "account.change_refused",
            Self::AccountRecoverySet => "account.recovery_set",
            Self::AccountRecoveryConfirmed => "account.recovery_confirmed",
            Self::AccountRecoveryLinkUsed => "account.recovery_link_used",
            Self::PortalSignin => "portal.signin",
            Self::PortalSigninFailure => "portal.signin_failure",
            Self::DeliverySuccess => "delivery.success",
            Self::DeliveryDeferred => "delivery.deferred",
            Self::DeliveryFailed => "delivery.failed",
            Self::DeliveryDsn => "delivery.dsn",
            Self::DeliveryOutcome => "delivery.outcome",
            Self::DeliveryPaused => "delivery.paused",
            Self::DeliveryResumed => "delivery.resumed",
            Self::TaskPanicked => "task.panicked",
        }
    }

    /// Logged as a warning: something was refused or failed.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Self::AuthFailure
                | Self::AuthLockout
                | Self::AuthOtpFailure
                | Self::MessageRejected
                | Self::PortalSigninFailure
                | Self::DeliveryFailed
                | Self::AccountBlocked
                | Self::AccountUntrustedChange
                | Self::AccountChangeRefused
                | Self::Refusal
                | Self::DeliveryPaused
                | Self::TaskPanicked
        )
    }

    /// Published for subscribers but written to the log only at debug
    /// level: delivery outcomes are already visible through `delivery.*`.
    pub const fn is_internal(self) -> bool {
        matches!(self, Self::DeliveryOutcome)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub session: Option<u64>,
    pub ip: Option<IpAddr>,
    /// The account's primary address, or the login name tried.
    pub account: Option<String>,
    pub message_id: Option<String>,
    pub mechanism: Option<&'static str>,
    /// A short, fixed reason (`bad_credentials`, `size`, ...).
    pub reason: Option<String>,
    /// The SMTP reply code sent, when the event is a refusal.
    pub code: Option<u16>,
    pub size: Option<u64>,
    pub recipients: Option<usize>,
    pub tls: Option<bool>,
    pub target: Option<String>,
    pub duration_ms: Option<u64>,
    /// Messages accepted in a session.
    pub messages: Option<u64>,
    /// A block's kind (`policy`, `operator`), a lockout's scope; logged
    /// under the key `kind`.
    pub scope: Option<&'static str>,
    /// A client network (`192.0.2.1/32`, `2001:db8::/64`).
    pub network: Option<String>,
    /// A policy score.
    pub score: Option<f64>,
    /// Observe mode: the decision was logged, not applied.
    pub observed: Option<bool>,
    /// What the scorer read from a message, as JSON of hashes (never text):
    /// the input of `policy replay`.
    pub features: Option<String>,
    /// The points of a policy decision, by signal (not logged apart: the
    /// decision's `target` describes them).
    pub signals: Option<Vec<(&'static str, f64)>>,
    /// A wrong password's tag: a hash of it under a key that lives only in
    /// this process, so one wrong password typed again is recognised as
    /// one mistake. Never logged.
    pub attempt: Option<u64>,
    /// The SMTP stage a refusal answered: `connect`, `helo`, `auth`,
    /// `mail`, `rcpt`, `data`, `bdat` or `other` (`Refusal`).
    pub stage: Option<&'static str>,
    /// The refusal's enhanced status code, e.g. `5.7.1` (`Refusal`).
    pub enhanced: Option<String>,
    /// Another logged event already tells of this refusal (`Refusal`).
    pub covered: bool,
    /// How long it took, to the microsecond (metrics; the log has
    /// `duration_ms`).
    pub elapsed: Option<Duration>,
    /// Recipients the next hop accepted (`DeliveryOutcome`).
    pub delivered: Option<usize>,
    /// Recipients the next hop refused for good (`DeliveryOutcome`).
    pub bounced: Option<usize>,
    /// What went wrong, as the failing part said it (a store error, a
    /// panic's message): never client input.
    pub error: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            session: None,
            ip: None,
            account: None,
            message_id: None,
            mechanism: None,
            reason: None,
            code: None,
            size: None,
            recipients: None,
            tls: None,
            target: None,
            duration_ms: None,
            messages: None,
            scope: None,
            network: None,
            score: None,
            observed: None,
            features: None,
            signals: None,
            attempt: None,
            stage: None,
            enhanced: None,
            covered: false,
            elapsed: None,
            delivered: None,
            bounced: None,
            error: None,
        }
    }

    /// The stable log name of the event's kind.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn outcome(mut self, delivered: usize, bounced: usize) -> Self {
        self.delivered = Some(delivered);
        self.bounced = Some(bounced);
        self
    }
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
    pub fn session(mut self, id: u64, ip: IpAddr) -> Self {
        self.session = Some(id);
        self.ip = Some(ip);
        self
    }
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }
    pub fn mechanism(mut self, mechanism: &'static str) -> Self {
        self.mechanism = Some(mechanism);
        self
    }
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    pub fn code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }
    pub fn recipients(mut self, n: usize) -> Self {
        self.recipients = Some(n);
        self
    }
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = Some(tls);
        self
    }
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }
    pub fn score(mut self, score: f64) -> Self {
        self.score = Some((score * 100.0).round() / 100.0);
        self
    }
    pub fn observed(mut self, observed: bool) -> Self {
        self.observed = observed.then_some(true);
        self
    }
    /// Tags the password tried (see `attempt`).
    pub fn attempt(mut self, secret: &str) -> Self {
        use std::hash::Hasher;
        static KEY: std::sync::OnceLock<[u64; 2]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut bytes = [0u8; 16];
            // Without randomness the tags still tell passwords apart.
            let _ = getrandom::fill(&mut bytes);
            let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            [word(0), word(8)]
        });
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(key[0], key[1]);
        h.write(secret.as_bytes());
        self.attempt = Some(h.finish());
        self
    }
    pub fn signals(mut self, signals: Vec<(&'static str, f64)>) -> Self {
        self.signals = Some(signals);
        self
    }
    pub fn features(mut self, features: String) -> Self {
        self.features = Some(features);
        self
    }
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }
    pub fn scope(mut self, scope: &'static str) -> Self {
        self.scope = Some(scope);
        self
    }
    pub fn messages(mut self, n: u64) -> Self {
        self.messages = Some(n);
        self
    }
    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.duration_ms = Some(ms);
        self
    }

    /// `duration_ms` for the log and the exact duration for metrics.
    pub fn took(mut self, elapsed: Duration) -> Self {
        self.duration_ms = Some(elapsed.as_millis() as u64);
        self.elapsed = Some(elapsed);
        self
    }
}

/// Where features publish what happened.
pub trait Events: Send + Sync + 'static {
    fn emit(&self, event: Event);
}

/// A subscriber: hears each event by reference (the fan-out hands one
/// event to all of them without copying it). Every listener can also be
/// published to directly.
pub trait Listener: Send + Sync + 'static {
    fn hear(&self, event: &Event);
}

impl<T: Listener> Events for T {
    fn emit(&self, event: Event) {
        self.hear(&event);
    }
}

/// Writes each event as one tracing event with an `event` field. Refusals
/// (`smtp.rejected`) are rate-limited per account (or client /24, /64 before
/// AUTH) and reason: a client retrying all day cannot flood the log; what
/// was left out is counted in one `log.suppressed` line per window. Metrics
/// and the other subscribers still see every event.
#[derive(Debug, Default)]
pub struct TracingEvents {
    refusals: Mutex<RefusalWindows>,
}

/// At most this many `smtp.rejected` lines per key and window.
const REFUSAL_LINES: u32 = 5;
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Keys kept at most (a scan of many addresses starts over).
const REFUSAL_KEYS: usize = 10_000;

#[derive(Debug, Default)]
struct RefusalWindows {
    /// (account or client network, reason) → its current window.
    windows: HashMap<(String, String), Window>,
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u32,
}

impl TracingEvents {
    /// Whether this refusal is written, after any `log.suppressed` lines
    /// for windows that have ended.
    fn admit_refusal(&self, e: &Event) -> bool {
        let now = Instant::now();
        let key = (
            e.account.clone().unwrap_or_else(|| {
                e.ip.map_or("unknown".into(), |ip| {
                    crate::address::client_network(ip).to_string()
                })
            }),
            e.reason.clone().unwrap_or_default(),
        );
        let mut w = self.refusals.lock_or_recover();
        if w.swept
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            w.swept = Some(now);
            w.windows.retain(|(who, reason), window| {
                let over = now.duration_since(window.start) >= REFUSAL_WINDOW;
                if over && window.suppressed > 0 {
                    suppressed(who, reason, window.suppressed);
                }
                !over
            });
            if w.windows.len() >= REFUSAL_KEYS {
                w.windows.clear();
            }
        }
        let window = w.windows.entry(key).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if window.logged < REFUSAL_LINES {
            window.logged += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }
}

fn suppressed(who: &str, reason: &str, count: u32) {
    tracing::warn!(
        event = "log.suppressed",
        about = "smtp.rejected",
        who,
        reason,
        count,
        window_s = REFUSAL_WINDOW.as_secs()
    );
}

impl Listener for TracingEvents {
    fn hear(&self, e: &Event) {
        if e.kind == EventKind::Refusal && !e.covered && !self.admit_refusal(e) {
            return;
        }
        macro_rules! emit_at {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    event = e.kind.name(),
                    session = e.session,
                    ip = e.ip.map(tracing::field::display),
                    account = e.account.as_deref(),
                    message_id = e.message_id.as_deref(),
                    mechanism = e.mechanism,
                    reason = e.reason.as_deref(),
                    code = e.code,
                    size = e.size,
                    recipients = e.recipients,
                    tls = e.tls,
                    target = e.target.as_deref(),
                    duration_ms = e.duration_ms,
                    messages = e.messages,
                    kind = e.scope,
                    network = e.network.as_deref(),
                    score = e.score,
                    observed = e.observed,
                    features = e.features.as_deref(),
                    delivered = e.delivered,
                    bounced = e.bounced,
                    stage = e.stage,
                    enhanced = e.enhanced.as_deref(),
                    error = e.error.as_deref(),
                )
            };
        }
        // A refusal another event already tells of is only for debugging.
        if e.kind.is_internal() || (e.kind == EventKind::Refusal && e.covered) {
            emit_at!(tracing::Level::DEBUG)
        } else if e.kind.is_failure() {
            emit_at!(tracing::Level::WARN)
        } else {
            emit_at!(tracing::Level::INFO)
        }
    }
}

/// Hands every event to each subscriber in turn, in the order given (the
/// scorer first, the log last). Assembled once, in `app`.
pub struct Fanout(Vec<Arc<dyn Listener>>);

impl Fanout {
    pub fn new(listeners: Vec<Arc<dyn Listener>>) -> Self {
        Self(listeners)
    }
}

impl Events for Fanout {
    fn emit(&self, event: Event) {
        for listener in &self.0 {
            listener.hear(&event);
        }
    }
}

/// Keeps every event in memory (tests) and also forwards to tracing.
#[cfg(feature = "testing")]
#[derive(Debug, Default)]
pub struct RecordingEvents {
    events: std::sync::Mutex<Vec<Event>>,
    log: TracingEvents,
}

#[cfg(feature = "testing")]
impl RecordingEvents {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.lock_or_recover())
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock_or_recover().clone()
    }
}

#[cfg(feature = "testing")]
impl Listener for RecordingEvents {
    fn hear(&self, event: &Event) {
        self.log.hear(event);
        self.events.lock_or_recover().push(event.clone());
    }
}
