//! `[smtp]`: the limits of an SMTP session, and how EHLO speaks to old
//! clients.

use std::time::Duration;

use serde::Deserialize;

use super::parse::{de_duration, de_size};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    #[serde(deserialize_with = "de_size")]
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    #[serde(deserialize_with = "de_duration")]
    pub command_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub data_timeout: Duration,
    pub max_bad_commands: u32,
    pub max_auth_failures: u32,
    /// Message bytes all sessions together may hold in memory: each DATA or
    /// BDAT reserves its declared SIZE (else 256 KiB) first, more as it grows.
    #[serde(deserialize_with = "de_size")]
    pub max_inflight_bytes: u64,
    /// Commands a session may send before it has authenticated.
    pub unauthenticated_commands: u32,
    /// How long a session may stay connected without authenticating.
    #[serde(deserialize_with = "de_duration")]
    pub unauthenticated_timeout: Duration,
    /// After TLS, EHLO also sends `250-AUTH=PLAIN LOGIN`, the pre-RFC 4954
    /// form old Outlook versions look for (Postfix's
    /// `broken_sasl_auth_clients`).
    pub legacy_auth_line: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 10_000,
            max_connections_per_ip: 20,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_bad_commands: 10,
            max_auth_failures: 3,
            max_inflight_bytes: 1024 * 1024 * 1024,
            unauthenticated_commands: 20,
            unauthenticated_timeout: Duration::from_secs(60),
            legacy_auth_line: false,
        }
    }
}
