//! `[portal]`: the web portal's public address, proxies and sessions, and
//! their checked form, `PortalSettings`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use serde::Deserialize;

use super::Config;
use super::parse::de_duration;

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

/// The portal's view of the configuration, checked at start. The portal
/// module uses it as `portal::Settings` and adds what depends on HTTP there
/// (the cookie name, the client address behind proxies).
#[derive(Debug, Clone)]
pub struct PortalSettings {
    /// `public_url` is https: the cookie is `__Host-` and `Secure`.
    pub secure: bool,
    /// The path of `public_url` without a trailing slash ("" for the root).
    pub prefix: String,
    pub trusted_proxies: Vec<IpNet>,
    pub idle_timeout: Duration,
}

impl PortalSettings {
    /// Refuses a portal that would send passwords in clear text over a
    /// network: a non-loopback bind needs an https `public_url` (TLS ends
    /// at a reverse proxy in front of the portal).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let portal = &config.portal;
        let (secure, prefix) = match &portal.public_url {
            Some(url) => parse_public_url(url)?,
            None => (false, String::new()),
        };
        let trusted_proxies = portal
            .trusted_proxies
            .iter()
            .map(|s| parse_network(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bind = config.listeners.portal;
        if !bind.ip().is_loopback() && !secure {
            bail!(
                "`listeners.portal = \"{bind}\"` is not a loopback address, so `portal.public_url` must be \
                 the https:// address users open (TLS at a reverse proxy); otherwise bind the portal to 127.0.0.1"
            );
        }
        if portal.session_idle_timeout.is_zero() {
            bail!("`portal.session_idle_timeout` must be longer than 0s");
        }
        Ok(Self {
            secure,
            prefix,
            trusted_proxies,
            idle_timeout: portal.session_idle_timeout,
        })
    }

    /// `ip` is one of `trusted_proxies`.
    pub(crate) fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// `(https?, path prefix)` of a public URL like `https://mail.example.com/account`.
fn parse_public_url(url: &str) -> anyhow::Result<(bool, String)> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!(
            "`portal.public_url` must start with https:// (or http:// for loopback testing), got {url:?}"
        );
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "?#@".contains(c)) {
        bail!("`portal.public_url` has no valid host: {url:?}");
    }
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if !path_ok || path.contains("//") {
        bail!(
            "`portal.public_url` path may only hold letters, digits and / - . _ ~ (no query): {url:?}"
        );
    }
    let prefix = path.trim_end_matches('/').to_string();
    let lower = prefix.to_ascii_lowercase();
    if let Some(taken) = SETUP_PATHS
        .iter()
        .find(|p| lower == **p || lower.starts_with(&format!("{p}/")))
    {
        bail!(
            "`portal.public_url` path {prefix:?} is taken by mail program set-up ({taken}), which is served at the root: choose another path"
        );
    }
    Ok((secure, prefix))
}

/// The paths the portal listener answers at its root whatever the path of
/// `public_url` (mail program set-up, `portal::autoconfig`).
pub const SETUP_PATHS: [&str; 4] = [
    "/.well-known/autoconfig/mail/config-v1.1.xml",
    "/mail/config-v1.1.xml",
    "/autodiscover/autodiscover.xml",
    "/autodiscover/autodiscover.json",
];

fn parse_network(s: &str) -> anyhow::Result<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            anyhow::anyhow!("`portal.trusted_proxies`: {s:?} is not an address or CIDR network")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        assert_eq!(
            parse_public_url("https://mail.example.com/account/").unwrap(),
            (true, "/account".into())
        );
        assert_eq!(
            parse_public_url("https://mail.example.com").unwrap(),
            (true, String::new())
        );
        assert_eq!(
            parse_public_url("http://127.0.0.1:8080/").unwrap(),
            (false, String::new())
        );
        assert_eq!(
            parse_public_url("https://x/autodiscover").unwrap(),
            (true, "/autodiscover".into())
        );
        for bad in [
            "mail.example.com",
            "ftp://x",
            "https:///x",
            "https://x/a?b",
            "https://x/{a}",
            "https://x/mail/config-v1.1.xml",
            "https://x/Autodiscover/Autodiscover.xml/",
            "https://x/autodiscover/autodiscover.json/v1.0",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}
