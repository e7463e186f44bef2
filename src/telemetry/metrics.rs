//! Prometheus metrics. Each server instance owns its registry (no global
//! recorder), so several servers in one process, as in tests, never mix
//! their counts. Labels are low-cardinality: never an account name.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::events::{Event, EventKind, Listener};

pub const SPOOL_FSYNCS: &str = "mailwarden_spool_fsyncs_total";
pub const SPOOL_COMMITTED_WRITES: &str = "mailwarden_spool_committed_writes_total";
pub const MESSAGES_ACCEPTED: &str = "mailwarden_messages_accepted_total";
pub const MESSAGES_REJECTED: &str = "mailwarden_messages_rejected_total";
pub const SESSIONS: &str = "mailwarden_sessions_total";
pub const AUTH: &str = "mailwarden_auth_total";
pub const DELIVERIES: &str = "mailwarden_deliveries_total";
pub const AUTH_LOCKOUTS: &str = "mailwarden_auth_lockouts_total";
pub const CONNECTIONS_CURRENT: &str = "mailwarden_connections_current";
pub const CONNECTIONS_REFUSED: &str = "mailwarden_connections_refused_total";
/// 1 while the shared PostgreSQL store answers, 0 while it does not
/// (`store.backend = "postgres"` only).
pub const SHARED_STORE_UP: &str = "mailwarden_shared_store_up";
/// Renamed: kept one release as a summary fed in whole milliseconds;
/// `SESSION_DURATION` is the histogram with sub-millisecond resolution.
pub const SESSION_SECONDS: &str = "mailwarden_session_duration_seconds";
/// Renamed: see `ACCEPT_DURATION`.
pub const ACCEPT_SECONDS: &str = "mailwarden_data_to_queued_seconds";
/// How long a session lasted, as a histogram in seconds.
pub const SESSION_DURATION: &str = "mailwarden_smtp_session_duration_seconds";
/// From the end of DATA to the 250 (spool commit included), as a histogram.
pub const ACCEPT_DURATION: &str = "mailwarden_message_accept_duration_seconds";

/// Histogram buckets in seconds: 100 µs to 5 minutes.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every family with its `# HELP` text.
const HELP: &[(&str, &str)] = &[
    (
        SPOOL_FSYNCS,
        "Spool commits written to disk (one fsync each).",
    ),
    (SPOOL_COMMITTED_WRITES, "Writes carried by spool commits."),
    (
        MESSAGES_ACCEPTED,
        "Messages accepted (250 after the commit).",
    ),
    (
        MESSAGES_REJECTED,
        "Messages refused at the end of DATA, by reply class.",
    ),
    (SESSIONS, "SMTP sessions started."),
    (AUTH, "AUTH attempts, by mechanism and outcome."),
    (
        DELIVERIES,
        "Delivery results per message attempt, by outcome.",
    ),
    (AUTH_LOCKOUTS, "Brute-force lockouts started, by scope."),
    (CONNECTIONS_CURRENT, "SMTP connections open now."),
    (
        CONNECTIONS_REFUSED,
        "Connections refused over the connection limits.",
    ),
    (
        SHARED_STORE_UP,
        "1 while the shared PostgreSQL store answers, 0 while it does not.",
    ),
    (
        SESSION_SECONDS,
        "Renamed to mailwarden_smtp_session_duration_seconds (whole milliseconds).",
    ),
    (
        ACCEPT_SECONDS,
        "Renamed to mailwarden_message_accept_duration_seconds (whole milliseconds).",
    ),
    (
        SESSION_DURATION,
        "How long SMTP sessions lasted, in seconds.",
    ),
    (
        ACCEPT_DURATION,
        "From the end of DATA to the 250, commit included, in seconds.",
    ),
    (QUEUE_DEPTH, "Messages queued for delivery."),
    (QUEUE_HELD, "Messages held (blocked accounts, evidence)."),
    (
        QUEUE_OLDEST,
        "Age of the oldest queued message, in seconds.",
    ),
    (
        POLICY_DECISIONS,
        "Scorer decisions, by decision and observe mode.",
    ),
    (BLOCKS, "Accounts blocked, by kind."),
    (UNBLOCKS, "Blocks lifted."),
    (
        SMTP_REJECTS,
        "Every 4xx/5xx reply an SMTP session sent, by stage, code and reason.",
    ),
    (
        TASK_PANICS,
        "Panics caught in a delivery worker or the spool commit thread, by part.",
    ),
];
pub const QUEUE_DEPTH: &str = "mailwarden_queue_messages";
pub const QUEUE_HELD: &str = "mailwarden_queue_held_messages";
pub const QUEUE_OLDEST: &str = "mailwarden_queue_oldest_age_seconds";
pub const POLICY_DECISIONS: &str = "mailwarden_policy_decisions_total";
pub const BLOCKS: &str = "mailwarden_account_blocks_total";
pub const UNBLOCKS: &str = "mailwarden_account_unblocks_total";
/// Every 4xx/5xx an SMTP session sent, by stage, code and reason.
pub const SMTP_REJECTS: &str = "mailwarden_smtp_rejects_total";
/// Panics caught in a worker or the commit thread, by part.
pub const TASK_PANICS: &str = "mailwarden_task_panics_total";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub spool_fsyncs: Counter,
    pub spool_committed_writes: Counter,
}

const METADATA: Metadata<'static> = Metadata::new("mailwarden", metrics::Level::INFO, None);

impl Metrics {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(SESSION_DURATION.into()), BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ACCEPT_DURATION.into()), BUCKETS))
            .expect("the bucket list is not empty")
            .build_recorder();
        for (name, help) in HELP {
            recorder.describe_counter(KeyName::from(*name), None, SharedString::from(*help));
        }
        let handle = recorder.handle();
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &METADATA);
        let spool_fsyncs = counter(SPOOL_FSYNCS);
        let spool_committed_writes = counter(SPOOL_COMMITTED_WRITES);
        // Present from the start, so a scrape shows zeros rather than nothing.
        counter(MESSAGES_ACCEPTED).increment(0);
        counter(SESSIONS).increment(0);
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

    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_name(name), &METADATA)
    }

    pub fn histogram(&self, name: &'static str) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_name(name), &METADATA)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Counts events as metrics.
pub struct MetricsEvents {
    metrics: Arc<Metrics>,
}

impl MetricsEvents {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl Listener for MetricsEvents {
    fn hear(&self, event: &Event) {
        let m = &self.metrics;
        match event.kind {
            EventKind::MessageAccepted => {
                m.counter(MESSAGES_ACCEPTED, &[]).increment(1);
                if let Some(ms) = event.duration_ms {
                    m.histogram(ACCEPT_SECONDS).record(ms as f64 / 1000.0);
                }
                if let Some(took) = event.elapsed {
                    m.histogram(ACCEPT_DURATION).record(took.as_secs_f64());
                }
            }
            EventKind::MessageRejected => {
                let class = event
                    .code
                    .map_or("unknown".to_string(), |c| format!("{}xx", c / 100));
                m.counter(MESSAGES_REJECTED, &[("class", class)])
                    .increment(1)
            }
            EventKind::SessionStart => {
                m.counter(SESSIONS, &[]).increment(1);
                m.gauge(CONNECTIONS_CURRENT).increment(1.0);
            }
            EventKind::SessionEnd => {
                m.gauge(CONNECTIONS_CURRENT).decrement(1.0);
                if let Some(ms) = event.duration_ms {
                    m.histogram(SESSION_SECONDS).record(ms as f64 / 1000.0);
                }
                if let Some(took) = event.elapsed {
                    m.histogram(SESSION_DURATION).record(took.as_secs_f64());
                }
            }
            EventKind::SessionRefused => m.counter(CONNECTIONS_REFUSED, &[]).increment(1),
            EventKind::PolicyDecision => {
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
            EventKind::AccountBlocked => {
                let kind = event.scope.unwrap_or("unknown").to_string();
                m.counter(BLOCKS, &[("kind", kind)]).increment(1)
            }
            EventKind::AccountUnblocked => m.counter(UNBLOCKS, &[]).increment(1),
            EventKind::TaskPanicked => {
                let task = event.target.clone().unwrap_or_default();
                m.counter(TASK_PANICS, &[("task", task)]).increment(1)
            }
            // Bounded labels: a fixed set of stages and reasons, and codes.
            EventKind::Refusal => m
                .counter(
                    SMTP_REJECTS,
                    &[
                        ("stage", event.stage.unwrap_or("other").to_string()),
                        ("code", event.code.unwrap_or(0).to_string()),
                        ("reason", event.reason.clone().unwrap_or_default()),
                    ],
                )
                .increment(1),
            EventKind::AuthLockout => {
                let scope = event.scope.unwrap_or("unknown").to_string();
                m.counter(AUTH_LOCKOUTS, &[("scope", scope)]).increment(1)
            }
            EventKind::AuthSuccess | EventKind::AuthFailure => {
                let outcome = if event.kind == EventKind::AuthSuccess {
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
            EventKind::DeliverySuccess
            | EventKind::DeliveryDeferred
            | EventKind::DeliveryFailed => {
                let outcome = event
                    .kind
                    .name()
                    .trim_start_matches("delivery.")
                    .to_string();
                m.counter(DELIVERIES, &[("outcome", outcome)]).increment(1)
            }
            _ => {}
        }
    }
}
