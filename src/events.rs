//! The `Events` seam: every feature reports what happened as an `Event` with a
//! stable name (DESIGN.md, "Logs and metrics"). The default sink writes them as
//! tracing events; tests plug in a recorder.
//!
//! Events never carry passwords, OTPs, AUTH blobs or message bodies: the
//! struct has no field that could hold one.

use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// Stable name, e.g. `auth.success`.
    pub name: &'static str,
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
    /// A block's kind (`policy`, `operator`), a lockout's scope.
    pub kind: Option<&'static str>,
    /// A client network (`192.0.2.1/32`, `2001:db8::/64`).
    pub network: Option<String>,
    /// A policy score.
    pub score: Option<f64>,
    /// Observe mode: the decision was logged, not applied.
    pub observed: Option<bool>,
}

impl Event {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
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
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
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
}

pub trait Events: Send + Sync + 'static {
    fn emit(&self, event: Event);
}

/// Writes each event as one tracing event with an `event` field.
#[derive(Debug, Default)]
pub struct TracingEvents;

impl Events for TracingEvents {
    fn emit(&self, e: Event) {
        let failure = e.name.ends_with("failure")
            || e.name.ends_with("rejected")
            || e.name.ends_with("failed")
            || e.name.ends_with("lockout")
            || e.name.ends_with("blocked");
        macro_rules! emit_at {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    event = e.name,
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
                    kind = e.kind,
                    network = e.network.as_deref(),
                    score = e.score,
                    observed = e.observed,
                )
            };
        }
        if failure {
            emit_at!(tracing::Level::WARN)
        } else {
            emit_at!(tracing::Level::INFO)
        }
    }
}

/// Keeps every event in memory (tests) and also forwards to tracing.
#[derive(Debug, Default)]
pub struct RecordingEvents {
    events: Mutex<Vec<Event>>,
}

impl RecordingEvents {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.lock().unwrap())
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Events for RecordingEvents {
    fn emit(&self, event: Event) {
        TracingEvents.emit(event.clone());
        self.events.lock().unwrap().push(event);
    }
}
