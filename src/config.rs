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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Required in a config file; the embedded default uses the outbox.
    pub mode: Option<DeliveryMode>,
    pub relay: Option<RelayConfig>,
    pub mx: MxConfig,
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
    pub nameservers: Vec<SocketAddr>,
}

impl Default for MxConfig {
    fn default() -> Self {
        Self {
            port: 25,
            nameservers: Vec::new(),
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    Enforce,
    Observe,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    pub shared_client_networks: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: PolicyMode::Enforce,
            shared_client_networks: Vec::new(),
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
        if let Some(relay) = &mut self.delivery.relay {
            relay.password_file = relay.password_file.as_deref().map(resolve);
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
        if self.listeners.submission.is_empty() && self.listeners.submissions.is_empty() {
            bail!("`listeners.submission` and `listeners.submissions` are both empty");
        }
        if self.delivery.mode == Some(DeliveryMode::Relay) && self.delivery.relay.is_none() {
            bail!("`delivery.mode = \"relay\"` needs a [delivery.relay] section with `host`");
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
