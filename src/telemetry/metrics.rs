//! Prometheus metrics. Each server instance owns its registry (no global
//! recorder), so several servers in one process, as in tests, never mix
//! their counts. Labels are low-cardinality: never an account name.

use std::sync::Arc;

use metrics::{Counter, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::events::{Event, Events};

pub const SPOOL_FSYNCS: &str = "mailwarden_spool_fsyncs_total";
pub const SPOOL_COMMITTED_WRITES: &str = "mailwarden_spool_committed_writes_total";
pub const MESSAGES_ACCEPTED: &str = "mailwarden_messages_accepted_total";
pub const MESSAGES_REJECTED: &str = "mailwarden_messages_rejected_total";
pub const SESSIONS: &str = "mailwarden_sessions_total";
pub const AUTH: &str = "mailwarden_auth_total";
pub const DELIVERIES: &str = "mailwarden_deliveries_total";
pub const AUTH_LOCKOUTS: &str = "mailwarden_auth_lockouts_total";
pub const POLICY_DECISIONS: &str = "mailwarden_policy_decisions_total";
pub const BLOCKS: &str = "mailwarden_account_blocks_total";
pub const UNBLOCKS: &str = "mailwarden_account_unblocks_total";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub spool_fsyncs: Counter,
    pub spool_committed_writes: Counter,
}

const METADATA: Metadata<'static> = Metadata::new("mailwarden", metrics::Level::INFO, None);

impl Metrics {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &METADATA);
        let spool_fsyncs = counter(SPOOL_FSYNCS);
        let spool_committed_writes = counter(SPOOL_COMMITTED_WRITES);
        // Present from the start, so a scrape shows zeros rather than nothing.
        counter(MESSAGES_ACCEPTED).increment(0);
        Arc::new(Self {
            recorder,
            handle,
            spool_fsyncs,
            spool_committed_writes,
        })
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Counts events as metrics, then passes them on.
pub struct MetricsEvents {
    metrics: Arc<Metrics>,
    next: Arc<dyn Events>,
}

impl MetricsEvents {
    pub fn new(metrics: Arc<Metrics>, next: Arc<dyn Events>) -> Self {
        Self { metrics, next }
    }
}

impl Events for MetricsEvents {
    fn emit(&self, event: Event) {
        let m = &self.metrics;
        match event.name {
            "message.accepted" => m.counter(MESSAGES_ACCEPTED, &[]).increment(1),
            "message.rejected" => {
                let class = event
                    .code
                    .map_or("unknown".to_string(), |c| format!("{}xx", c / 100));
                m.counter(MESSAGES_REJECTED, &[("class", class)])
                    .increment(1)
            }
            "session.start" => m.counter(SESSIONS, &[]).increment(1),
            "policy.decision" => {
                let decision = event.reason.clone().unwrap_or_default();
                let observed = if event.observed == Some(true) {
                    "true"
                } else {
                    "false"
                }
                .to_string();
                m.counter(
                    POLICY_DECISIONS,
                    &[("decision", decision), ("observed", observed)],
                )
                .increment(1)
            }
            "account.blocked" => {
                let kind = event.kind.unwrap_or("unknown").to_string();
                m.counter(BLOCKS, &[("kind", kind)]).increment(1)
            }
            "account.unblocked" => m.counter(UNBLOCKS, &[]).increment(1),
            "auth.lockout" => {
                let scope = event.kind.unwrap_or("unknown").to_string();
                m.counter(AUTH_LOCKOUTS, &[("scope", scope)]).increment(1)
            }
            "auth.success" | "auth.failure" => {
                let outcome = if event.name == "auth.success" {
                    "success"
                } else {
                    "failure"
                };
                let mechanism = event.mechanism.unwrap_or("unknown").to_string();
                m.counter(
                    AUTH,
                    &[("mechanism", mechanism), ("outcome", outcome.to_string())],
                )
                .increment(1)
            }
            "delivery.success" | "delivery.deferred" | "delivery.failed" => {
                let outcome = event.name.trim_start_matches("delivery.").to_string();
                m.counter(DELIVERIES, &[("outcome", outcome)]).increment(1)
            }
            _ => {}
        }
        self.next.emit(event);
    }
}
