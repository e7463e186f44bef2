//! TOML configuration: embedded defaults, validation with clear errors, and
//! paths resolved against the config file's folder.
//!
//! A key left out of a file takes the embedded default's value, except the two
//! things a production file must state (DESIGN.md): `delivery.mode` and the
//! certificate (`tls.cert` + `tls.key`, or `tls.self_signed = true`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub listeners: ListenersConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub portal: PortalConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub lockout: LockoutConfig,
    /// The folder relative paths were resolved against; not a TOML key.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where this configuration came from, for messages.
    #[serde(skip)]
    pub source: ConfigSource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    #[default]
    EmbeddedDefault,
    File(PathBuf),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Defaults to `<data_dir>/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    pub support_contact: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            secret_key_file: None,
            support_contact: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub portal: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub proxy_protocol_from: Vec<String>,
}

impl ListenersConfig {
    /// `proxy_protocol_from` as networks (checked by validation).
    pub fn proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.proxy_protocol_from
            .iter()
            .filter_map(|n| {
                n.parse()
                    .ok()
                    .or_else(|| n.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect()
    }
}

impl Default for ListenersConfig {
    fn default() -> Self {
        let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            submission: vec![lo(2587)],
            submissions: vec![lo(2465)],
            portal: lo(8080),
            admin: lo(9090),
            metrics: lo(9091),
            proxy_protocol_from: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed: Option<bool>,
}

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
        }
    }
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<String>,
    /// A web session unused this long is signed out.
    #[serde(deserialize_with = "de_duration")]
    pub session_idle_timeout: Duration,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            trusted_proxies: Vec::new(),
            session_idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    pub totp_issuer: String,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            totp_issuer: "mailwarden".into(),
        }
    }
}

/// Brute-force limits (docs/security.md explains the defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Distinct wrong passwords per IPv4 address or IPv6 /64...
    pub ip_max_distinct_failures: usize,
    /// ...within this window.
    #[serde(deserialize_with = "de_duration")]
    pub ip_window: Duration,
    /// Distinct wrong passwords per account (from networks it never used)...
    pub account_max_distinct_failures: usize,
    #[serde(deserialize_with = "de_duration")]
    pub account_window: Duration,
    /// A successful login makes its network known to the account this long.
    #[serde(deserialize_with = "de_duration")]
    pub trusted_network_for: Duration,
    /// Wrong OTP codes per account within `otp_window` before the OTP step
    /// locks for `otp_lock`.
    pub otp_max_failures: usize,
    #[serde(deserialize_with = "de_duration")]
    pub otp_window: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub otp_lock: Duration,
    /// argon2 verifications that may wait or run at once for SMTP AUTH
    /// (and, separately, for portal sign-in) before `454 4.7.0`.
    pub auth_queue: usize,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            ip_max_distinct_failures: 10,
            ip_window: minutes(15),
            account_max_distinct_failures: 50,
            account_window: minutes(24 * 60),
            trusted_network_for: minutes(30 * 24 * 60),
            otp_max_failures: 5,
            otp_window: minutes(15),
            otp_lock: minutes(15),
            auth_queue: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    Enforce,
    Observe,
}

/// The outbound-policy scorer (docs/policy.md explains every key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    /// Networks that count as one known client (office NAT, cloud mail apps).
    pub shared_client_networks: Vec<String>,
    /// The score at which an account is blocked.
    pub block_score: f64,
    /// Points halve after this long without new ones.
    #[serde(deserialize_with = "de_duration")]
    pub half_life: Duration,
    /// A network is familiar once it logged in to the account this long ago...
    #[serde(deserialize_with = "de_duration")]
    pub network_familiar_after: Duration,
    /// ...and stays familiar while it was used within this period.
    #[serde(deserialize_with = "de_duration")]
    pub network_familiar_for: Duration,
    /// Accounts younger than this get the new-account caps.
    #[serde(deserialize_with = "de_duration")]
    pub new_account_period: Duration,

    pub weight_new_recipient: f64,
    pub max_new_recipient_points: f64,
    pub weight_new_recipient_unfamiliar: f64,
    pub max_new_recipient_points_unfamiliar: f64,
    pub weight_repeated_body: f64,
    pub weight_repeated_body_unfamiliar: f64,
    /// A message with at least this many new recipients counts as bulk...
    pub bulk_new_recipients_per_message: u32,
    /// ...and this many bulk messages within `bulk_window` earn `weight_bulk` each.
    pub bulk_messages: usize,
    #[serde(deserialize_with = "de_duration")]
    pub bulk_window: Duration,
    pub weight_bulk: f64,
    pub spread_networks_per_hour: usize,
    pub weight_network_spread: f64,
    pub free_link_domains: usize,
    pub weight_link_domain: f64,
    pub max_link_points: f64,
    pub weight_display_name_address: f64,
    pub bounce_ratio: f64,
    pub bounce_min_recipients: u32,
    pub weight_bounces: f64,
    pub auth_failures_before_success: usize,
    pub weight_auth_failures: f64,
    pub fast_messages_per_hour: u32,
    pub weight_fast_message: f64,

    pub max_messages_per_minute: u32,
    pub max_messages_per_hour: u32,
    pub max_messages_per_day: u32,
    pub max_recipients_per_minute: u32,
    pub max_recipients_per_hour: u32,
    pub max_recipients_per_day: u32,
    pub new_account_max_messages_per_hour: u32,
    pub new_account_max_recipients_per_hour: u32,

    /// The message that tipped a block is kept this long as evidence.
    #[serde(deserialize_with = "de_duration")]
    pub evidence_retention: Duration,
    /// A second policy block within this period becomes an operator block.
    #[serde(deserialize_with = "de_duration")]
    pub repeat_block_period: Duration,
    /// After a self-service unblock: any block is an operator block, and
    /// the new-account caps apply.
    #[serde(deserialize_with = "de_duration")]
    pub probation: Duration,
    /// Told of every block and unblock, by mail.
    pub abuse_contact: Option<String>,
    /// Told of every block and unblock: a signed JSON POST.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA-256 key for `X-Mailwarden-Signature`.
    pub webhook_secret_file: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            mode: PolicyMode::Enforce,
            shared_client_networks: Vec::new(),
            block_score: 10.0,
            half_life: hours(1),
            network_familiar_after: hours(24),
            network_familiar_for: hours(30 * 24),
            new_account_period: hours(7 * 24),
            weight_new_recipient: 0.05,
            max_new_recipient_points: 1.0,
            weight_new_recipient_unfamiliar: 0.7,
            max_new_recipient_points_unfamiliar: 3.0,
            weight_repeated_body: 0.1,
            weight_repeated_body_unfamiliar: 2.0,
            bulk_new_recipients_per_message: 3,
            bulk_messages: 4,
            bulk_window: Duration::from_secs(600),
            weight_bulk: 3.0,
            spread_networks_per_hour: 4,
            weight_network_spread: 3.0,
            free_link_domains: 3,
            weight_link_domain: 1.0,
            max_link_points: 5.0,
            weight_display_name_address: 4.0,
            bounce_ratio: 0.2,
            bounce_min_recipients: 10,
            weight_bounces: 3.0,
            auth_failures_before_success: 5,
            weight_auth_failures: 3.0,
            fast_messages_per_hour: 120,
            weight_fast_message: 0.5,
            max_messages_per_minute: 30,
            max_messages_per_hour: 300,
            max_messages_per_day: 3000,
            max_recipients_per_minute: 150,
            max_recipients_per_hour: 1000,
            max_recipients_per_day: 10000,
            new_account_max_messages_per_hour: 150,
            new_account_max_recipients_per_hour: 600,
            evidence_retention: hours(14 * 24),
            repeat_block_period: hours(30 * 24),
            probation: hours(7 * 24),
            abuse_contact: None,
            webhook_url: None,
            webhook_secret_file: None,
        }
    }
}

impl Config {
    /// The configuration `mailwarden serve` runs with when given no file:
    /// loopback only, a self-signed certificate, delivery into `data/outbox`.
    pub fn embedded_default() -> anyhow::Result<Self> {
        let base = std::env::current_dir().context("cannot read the current directory")?;
        let mut cfg: Config = toml::from_str("").expect("empty TOML is a valid config");
        cfg.delivery.mode = Some(DeliveryMode::Outbox);
        cfg.tls.self_signed = Some(true);
        cfg.finish(base, ConfigSource::EmbeddedDefault)
    }

    /// Reads and validates a config file. Errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path
            .canonicalize()
            .with_context(|| format!("cannot resolve config file {}", path.display()))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::from_toml(&text, base, ConfigSource::File(path.to_path_buf()))
            .with_context(|| format!("config file {}", path.display()))
    }

    /// Parses TOML text as if it were a file in `base`.
    pub fn from_toml(text: &str, base: PathBuf, source: ConfigSource) -> anyhow::Result<Self> {
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        if cfg.delivery.mode.is_none() {
            bail!("`delivery.mode` must be set (\"outbox\", \"relay\" or \"mx\")");
        }
        let has_pem = cfg.tls.cert.is_some() || cfg.tls.key.is_some();
        match (has_pem, cfg.tls.self_signed) {
            (false, None) | (false, Some(false)) => bail!(
                "a certificate must be configured: set `tls.cert` and `tls.key`, or `tls.self_signed = true`"
            ),
            (true, Some(true)) => {
                bail!("`tls.self_signed = true` conflicts with `tls.cert`/`tls.key`: choose one")
            }
            (true, _) if cfg.tls.cert.is_none() || cfg.tls.key.is_none() => {
                bail!("`tls.cert` and `tls.key` must be set together")
            }
            _ => {}
        }
        cfg.finish(base, source)
    }

    fn finish(mut self, base: PathBuf, source: ConfigSource) -> anyhow::Result<Self> {
        let resolve = |p: &Path| resolve_path(&base, p);
        self.server.data_dir = resolve_path(&base, &self.server.data_dir);
        self.server.secret_key_file = self.server.secret_key_file.as_deref().map(resolve);
        self.tls.cert = self.tls.cert.as_deref().map(resolve);
        self.tls.key = self.tls.key.as_deref().map(resolve);
        self.policy.webhook_secret_file = self.policy.webhook_secret_file.as_deref().map(resolve);
        if let Some(relay) = &mut self.delivery.relay {
            relay.password_file = relay.password_file.as_deref().map(resolve);
            relay.ca_file = relay.ca_file.as_deref().map(resolve);
        }
        for key in &mut self.delivery.dkim {
            key.key_file = resolve(&key.key_file);
            key.domain = key.domain.trim_end_matches('.').to_ascii_lowercase();
        }
        self.base_dir = base;
        self.source = source;
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let host = &self.server.hostname;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            bail!("`server.hostname` must be a host name without spaces, got {host:?}");
        }
        if self.accounts.totp_issuer.contains(':') || self.accounts.totp_issuer.is_empty() {
            bail!("`accounts.totp_issuer` must be non-empty and contain no ':'");
        }
        let smtp = &self.smtp;
        if smtp.max_message_size < 1024 {
            bail!("`smtp.max_message_size` must be at least 1KiB");
        }
        for (key, value) in [
            ("smtp.max_recipients", smtp.max_recipients),
            ("smtp.max_connections", smtp.max_connections),
            ("smtp.max_connections_per_ip", smtp.max_connections_per_ip),
            ("smtp.max_bad_commands", smtp.max_bad_commands as usize),
            ("smtp.max_auth_failures", smtp.max_auth_failures as usize),
        ] {
            if value == 0 {
                bail!("`{key}` must be at least 1");
            }
        }
        if smtp.command_timeout.is_zero() || smtp.data_timeout.is_zero() {
            bail!("`smtp.command_timeout` and `smtp.data_timeout` must be longer than 0s");
        }
        if self.policy.block_score.is_nan() || self.policy.block_score <= 0.0 {
            bail!("`policy.block_score` must be above 0");
        }
        if self.policy.half_life.is_zero() {
            bail!("`policy.half_life` must be longer than 0s");
        }
        if let Some(url) = &self.policy.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("`policy.webhook_url` must be an http:// or https:// URL");
            }
            if self.policy.webhook_secret_file.is_none() {
                bail!("`policy.webhook_url` needs `policy.webhook_secret_file` (the HMAC key)");
            }
        }
        for net in &self.listeners.proxy_protocol_from {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                bail!(
                    "`listeners.proxy_protocol_from`: {net:?} is not an address or a network (CIDR)"
                );
            }
        }
        for net in &self.policy.shared_client_networks {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                bail!(
                    "`policy.shared_client_networks`: {net:?} is not an address or a network (CIDR)"
                );
            }
        }
        let l = &self.lockout;
        for (key, value) in [
            (
                "lockout.ip_max_distinct_failures",
                l.ip_max_distinct_failures,
            ),
            (
                "lockout.account_max_distinct_failures",
                l.account_max_distinct_failures,
            ),
            ("lockout.otp_max_failures", l.otp_max_failures),
            ("lockout.auth_queue", l.auth_queue),
        ] {
            if value == 0 {
                bail!("`{key}` must be at least 1");
            }
        }
        if self.listeners.submission.is_empty() && self.listeners.submissions.is_empty() {
            bail!("`listeners.submission` and `listeners.submissions` are both empty");
        }
        if self.delivery.mode == Some(DeliveryMode::Relay) && self.delivery.relay.is_none() {
            bail!("`delivery.mode = \"relay\"` needs a [delivery.relay] section with `host`");
        }
        let d = &self.delivery;
        if d.retry_schedule.is_empty() || d.retry_schedule.iter().any(|w| w.as_secs() == 0) {
            bail!("`delivery.retry_schedule` needs at least one wait, each of 1s or more");
        }
        if d.max_age.as_secs() == 0 {
            bail!("`delivery.max_age` must be 1s or more");
        }
        if let Some(relay) = &d.relay {
            if relay.host.trim().is_empty() {
                bail!("`delivery.relay.host` must not be empty");
            }
            if relay.connections == 0 {
                bail!("`delivery.relay.connections` must be at least 1");
            }
            if relay.timeout.is_zero() {
                bail!("`delivery.relay.timeout` must be longer than 0s");
            }
            if relay.username.is_some() != relay.password_file.is_some() {
                bail!(
                    "`delivery.relay.username` and `delivery.relay.password_file` must be set together"
                );
            }
        }
        let mx = &d.mx;
        if mx.workers == 0 || mx.connections_per_host == 0 {
            bail!(
                "`delivery.mx.workers` and `delivery.mx.connections_per_host` must be at least 1"
            );
        }
        if mx.timeout.is_zero() {
            bail!("`delivery.mx.timeout` must be longer than 0s");
        }
        let mut seen = std::collections::HashSet::new();
        for key in &d.dkim {
            let label = |s: &str| {
                !s.is_empty()
                    && s.split('.').all(|l| {
                        !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
            };
            if !label(&key.domain) || !label(&key.selector) {
                bail!(
                    "`delivery.dkim`: domain {:?} and selector {:?} must be ASCII DNS names",
                    key.domain,
                    key.selector
                );
            }
            if !seen.insert(key.domain.clone()) {
                bail!("`delivery.dkim`: two keys for domain {}", key.domain);
            }
        }
        crate::portal::Settings::from_config(self)?;
        Ok(())
    }

    pub fn delivery_mode(&self) -> DeliveryMode {
        self.delivery.mode.unwrap_or(DeliveryMode::Outbox)
    }

    pub fn secret_key_file(&self) -> PathBuf {
        self.server
            .secret_key_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("secret.key"))
    }
}

/// A path from the config file, relative to the file's folder.
fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path.strip_prefix(".").unwrap_or(path))
    }
}

/// "25MiB", "10MB", "1048576" or an integer.
fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| serde::de::Error::custom(format!("invalid size {s:?}: {e}"))),
    }
}

/// A list of durations: `["1m", "5m"]`.
fn de_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            humantime::parse_duration(s.trim())
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
        })
        .collect()
}

/// "5m", "30s", "1h 30m".
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::from_toml(
            text,
            PathBuf::from("/etc/mw"),
            ConfigSource::EmbeddedDefault,
        )
    }

    const MINIMAL: &str = "[delivery]\nmode = \"outbox\"\n[tls]\nself_signed = true\n";

    #[test]
    fn minimal_file_takes_defaults_and_resolves_paths() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.server.data_dir, PathBuf::from("/etc/mw/data"));
        assert_eq!(cfg.smtp.max_message_size, 25 * 1024 * 1024);
        assert_eq!(cfg.smtp.command_timeout, Duration::from_secs(300));
        assert_eq!(cfg.listeners.admin.port(), 9090);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(&format!("{MINIMAL}[smtp]\nmax_recipient = 5\n")).unwrap_err();
        assert!(format!("{err:#}").contains("max_recipient"), "{err:#}");
    }

    #[test]
    fn delivery_mode_and_certificate_must_be_stated() {
        let err = parse("[tls]\nself_signed = true\n").unwrap_err();
        assert!(err.to_string().contains("delivery.mode"));
        let err = parse("[delivery]\nmode = \"outbox\"\n").unwrap_err();
        assert!(err.to_string().contains("certificate"));
        let err = parse("[delivery]\nmode = \"outbox\"\n[tls]\ncert = \"a.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("together"));
    }

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

    #[test]
    fn sizes_and_durations_parse() {
        let cfg = parse(&format!(
            "{MINIMAL}[smtp]\nmax_message_size = \"10MiB\"\ncommand_timeout = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.smtp.max_message_size, 10 * 1024 * 1024);
        assert_eq!(cfg.smtp.command_timeout, Duration::from_secs(30));
        let err = parse(&format!("{MINIMAL}[smtp]\ndata_timeout = \"soon\"\n")).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../config/mailwarden.toml");
        let cfg = Config::from_toml(
            text,
            PathBuf::from("/etc/mailwarden"),
            ConfigSource::EmbeddedDefault,
        )
        .unwrap();
        assert_eq!(cfg.server.hostname, "mail.example.com");
        assert_eq!(cfg.listeners.submission.len(), 2);
        assert_eq!(cfg.delivery_mode(), DeliveryMode::Outbox);
    }

    #[test]
    fn the_docker_config_is_valid() {
        let text = include_str!("../config/docker.toml");
        let cfg = Config::from_toml(
            text,
            PathBuf::from("/etc/mailwarden"),
            ConfigSource::EmbeddedDefault,
        )
        .unwrap();
        assert_eq!(cfg.server.data_dir, PathBuf::from("/var/lib/mailwarden"));
    }
}
