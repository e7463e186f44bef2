//! TOML configuration: embedded defaults, validation with clear errors, and
//! paths resolved against the config file's folder.
//!
//! A key left out of a file takes the embedded default's value, except the two
//! things a production file must state (docs/operator-guide.md, "Configure"):
//! `delivery.mode` and the
//! certificate (`tls.cert` + `tls.key`, or `tls.self_signed = true`).

mod accounts;
mod autoconfig;
mod delivery;
pub mod diff;
mod dovecot;
mod listeners;
mod lockout;
mod parse;
mod policy;
mod portal;
mod server;
mod smtp;
mod store;
mod tls;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

pub use accounts::AccountsConfig;
pub use autoconfig::{AutoconfigConfig, IncomingServer, is_dns_name};
pub use delivery::{DeliveryConfig, DeliveryMode, DkimConfig, MxConfig, RelayConfig, RelayTls};
pub use dovecot::DovecotConfig;
pub use listeners::ListenersConfig;
pub use lockout::LockoutConfig;
pub use policy::{PolicyConfig, PolicyMode};
pub use portal::{PortalConfig, PortalSettings, SETUP_PATHS};
pub use server::ServerConfig;
pub use smtp::SmtpConfig;
pub use store::{StoreBackend, StoreConfig};
pub use tls::TlsConfig;

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
    #[serde(default)]
    pub autoconfig: AutoconfigConfig,
    #[serde(default)]
    pub dovecot: DovecotConfig,
    #[serde(default)]
    pub store: StoreConfig,
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
        let cfg: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", located(&e, text)))?;
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
        self.dovecot.token_file = self.dovecot.token_file.as_deref().map(resolve);
        if let Some(relay) = &mut self.delivery.relay {
            relay.password_file = relay.password_file.as_deref().map(resolve);
            relay.ca_file = relay.ca_file.as_deref().map(resolve);
        }
        for key in &mut self.delivery.dkim {
            key.key_file = resolve(&key.key_file);
            key.domain = key.domain.trim_end_matches('.').to_ascii_lowercase();
        }
        self.autoconfig.normalize()?;
        self.base_dir = base;
        self.source = source;
        self.validate()?;
        Ok(self)
    }

    fn validate_store(&self) -> anyhow::Result<()> {
        let s = &self.store;
        match (s.backend, &s.url) {
            (StoreBackend::Postgres, None) => {
                bail!("`store.backend = \"postgres\"` needs `store.url` (postgres://...)")
            }
            (StoreBackend::Postgres, Some(url))
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                bail!("`store.url` must start with postgres:// or postgresql://")
            }
            (StoreBackend::Redb, Some(_)) => {
                bail!("`store.url` is only used with `store.backend = \"postgres\"`")
            }
            _ => {}
        }
        if s.pool_size == 0 {
            bail!("`store.pool_size` must be at least 1");
        }
        if s.statement_timeout.is_zero() || s.connect_timeout.is_zero() {
            bail!("`store.statement_timeout` and `store.connect_timeout` must be longer than 0s");
        }
        Ok(())
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
        if smtp.max_inflight_bytes < smtp.max_message_size {
            bail!(
                "`smtp.max_inflight_bytes` must be at least `smtp.max_message_size`, \
                 or a message of the largest size could never be taken"
            );
        }
        // EHLO, STARTTLS, EHLO again and AUTH.
        if smtp.unauthenticated_commands < 4 {
            bail!(
                "`smtp.unauthenticated_commands` must be at least 4 (EHLO, STARTTLS, EHLO, AUTH)"
            );
        }
        if smtp.unauthenticated_timeout.is_zero() {
            bail!("`smtp.unauthenticated_timeout` must be longer than 0s");
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
        self.validate_store()?;
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
        self.autoconfig.validate()?;
        self.dovecot.validate()?;
        PortalSettings::from_config(self)?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    pub(super) fn parse(text: &str) -> anyhow::Result<Config> {
        Config::from_toml(
            text,
            PathBuf::from("/etc/mw"),
            ConfigSource::EmbeddedDefault,
        )
    }

    pub(super) const MINIMAL: &str = "[delivery]\nmode = \"outbox\"\n[tls]\nself_signed = true\n";

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
    fn session_budgets_have_defaults_and_bounds() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.smtp.max_inflight_bytes, 1024 * 1024 * 1024);
        assert_eq!(cfg.smtp.unauthenticated_commands, 20);
        assert_eq!(cfg.smtp.unauthenticated_timeout, Duration::from_secs(60));
        let cfg = parse(&format!(
            "{MINIMAL}[smtp]\nmax_message_size = \"1MiB\"\nmax_inflight_bytes = \"1MiB\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.smtp.max_inflight_bytes, 1024 * 1024);
        for (extra, key) in [
            ("max_inflight_bytes = \"10MiB\"", "max_inflight_bytes"),
            ("unauthenticated_commands = 3", "unauthenticated_commands"),
            (
                "unauthenticated_timeout = \"0s\"",
                "unauthenticated_timeout",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}[smtp]\n{extra}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{extra}: {err}");
        }
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
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../config/mailwarden.toml");
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
        let text = include_str!("../../config/docker.toml");
        let cfg = Config::from_toml(
            text,
            PathBuf::from("/etc/mailwarden"),
            ConfigSource::EmbeddedDefault,
        )
        .unwrap();
        assert_eq!(cfg.server.data_dir, PathBuf::from("/var/lib/mailwarden"));
    }
}

/// A TOML error with where it is: `line 9, `smtp.max_connections`: invalid
/// type: string "100", expected usize`. The key is read from the line the
/// error points at and the table above it.
fn located(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let this_line = text[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or_default();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = this_line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let name = match (table, key) {
        (Some(t), Some(k)) => format!(", `{t}.{k}`"),
        (None, Some(k)) => format!(", `{k}`"),
        _ => String::new(),
    };
    format!("line {line}{name}: {}", e.message())
}
