//! The figures: latency distributions per phase and errors by reply.

use std::collections::BTreeMap;
use std::time::Duration;

/// Latencies of one phase.
#[derive(Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn merge(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// p50, p90, p99 and max in milliseconds (the list gets sorted).
    pub fn summary(&mut self) -> [f64; 4] {
        self.0.sort_unstable();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let at = |p: f64| {
            let i = ((self.0.len() as f64 * p).ceil() as usize).saturating_sub(1);
            self.0.get(i).map_or(0.0, ms)
        };
        [at(0.50), at(0.90), at(0.99), self.0.last().map_or(0.0, ms)]
    }
}

/// Everything one worker measured; merged at the end.
#[derive(Default)]
pub struct Report {
    /// From the moment a message was started (or due, with --rate) to its
    /// 250; the first message of a session includes connect, TLS and AUTH.
    pub submission: Samples,
    pub connect: Samples,
    pub tls: Samples,
    pub auth: Samples,
    pub envelope: Samples,
    pub data: Samples,
    pub errors: BTreeMap<String, usize>,
    pub failed_messages: usize,
    pub sessions: usize,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.submission.merge(other.submission);
        self.connect.merge(other.connect);
        self.tls.merge(other.tls);
        self.auth.merge(other.auth);
        self.envelope.merge(other.envelope);
        self.data.merge(other.data);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.failed_messages += other.failed_messages;
        self.sessions += other.sessions;
    }

    pub fn error(&mut self, key: String) {
        *self.errors.entry(key).or_default() += 1;
    }

    /// Rows of (phase, [p50, p90, p99, max]).
    pub fn phases(&mut self) -> Vec<(&'static str, [f64; 4])> {
        vec![
            ("submission", self.submission.summary()),
            ("connect", self.connect.summary()),
            ("tls", self.tls.summary()),
            ("ehlo+auth", self.auth.summary()),
            ("envelope", self.envelope.summary()),
            ("data", self.data.summary()),
        ]
    }
}
