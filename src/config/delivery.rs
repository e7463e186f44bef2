//! `[delivery]`: the mode, the retry schedule, and the `relay`, `mx` and
//! `dkim` subsections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{de_duration, de_durations};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    Outbox,
    Relay,
    Mx,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Required in a config file; the embedded default uses the outbox.
    pub mode: Option<DeliveryMode>,
    /// Waits before the 1st, 2nd, ... retry of a temporary failure; the last
    /// one repeats (docs/delivery.md).
    #[serde(deserialize_with = "de_durations")]
    pub retry_schedule: Vec<Duration>,
    /// A recipient still failing temporarily this long after the message was
    /// accepted is bounced (`5.4.7`).
    #[serde(deserialize_with = "de_duration")]
    pub max_age: Duration,
    /// A "delayed" DSN goes to senders who asked for one (NOTIFY=DELAY) once
    /// a recipient has waited this long.
    #[serde(deserialize_with = "de_duration")]
    pub delay_warning: Duration,
    pub relay: Option<RelayConfig>,
    pub mx: MxConfig,
    /// DKIM keys, one per sending domain (`[[delivery.dkim]]`).
    pub dkim: Vec<DkimConfig>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            mode: None,
            retry_schedule: vec![
                minutes(1),
                minutes(5),
                minutes(15),
                minutes(30),
                minutes(60),
                minutes(120),
                minutes(240),
            ],
            max_age: minutes(5 * 24 * 60),
            delay_warning: minutes(4 * 60),
            relay: None,
            mx: MxConfig::default(),
            dkim: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    Starttls,
    Implicit,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    pub host: String,
    #[serde(default = "default_relay_port")]
    pub port: u16,
    #[serde(default = "default_relay_tls")]
    pub tls: RelayTls,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub verify_certificate: bool,
    /// Extra trusted roots (PEM) for a relay with a private CA, added to the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for each command (DATA: sending the message
    /// and reading the reply).
    #[serde(default = "default_relay_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Connections (and delivery workers) to the relay at once.
    #[serde(default = "default_relay_connections")]
    pub connections: usize,
    /// The EHLO name; `server.hostname` by default.
    pub helo_name: Option<String>,
}

fn default_relay_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_relay_connections() -> usize {
    2
}

fn default_relay_port() -> u16 {
    587
}
fn default_relay_tls() -> RelayTls {
    RelayTls::Starttls
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MxConfig {
    pub port: u16,
    /// DNS servers to ask; empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Delivery workers: messages in delivery at once.
    pub workers: usize,
    /// Connections in use at once to one MX address.
    pub connections_per_host: usize,
    /// Limit for connecting and for each command.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// The EHLO name; `server.hostname` by default.
    pub helo_name: Option<String>,
}

impl Default for MxConfig {
    fn default() -> Self {
        Self {
            port: 25,
            nameservers: Vec::new(),
            workers: 8,
            connections_per_host: 4,
            timeout: Duration::from_secs(300),
            helo_name: None,
        }
    }
}

/// One DKIM key: mail whose header From is in `domain` is signed with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
    pub key_file: PathBuf,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn delivery_keys_have_defaults_and_are_checked() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.delivery.max_age, Duration::from_secs(5 * 24 * 3600));
        assert_eq!(cfg.delivery.retry_schedule[0], Duration::from_secs(60));
        assert_eq!(cfg.delivery.retry_schedule.len(), 7);
        let relay = "[delivery]\nmode = \"relay\"\nretry_schedule = [\"1s\", \"2m\"]\n\
                     max_age = \"1h\"\n[delivery.relay]\nhost = \"smtp.example.net\"\n\
                     ca_file = \"ca.pem\"\n[tls]\nself_signed = true\n";
        let cfg = parse(relay).unwrap();
        let r = cfg.delivery.relay.as_ref().unwrap();
        assert_eq!(
            cfg.delivery.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!((r.port, r.tls, r.connections), (587, RelayTls::Starttls, 2));
        assert_eq!(r.timeout, Duration::from_secs(120));
        assert_eq!(r.ca_file.as_deref(), Some(Path::new("/etc/mw/ca.pem")));
        assert!(r.verify_certificate);
        let err = parse(&relay.replace("ca_file", "username = \"u\"\nca_file")).unwrap_err();
        assert!(err.to_string().contains("password_file"), "{err}");
        let err = parse(&relay.replace("[\"1s\", \"2m\"]", "[]")).unwrap_err();
        assert!(err.to_string().contains("retry_schedule"), "{err}");
    }
}
