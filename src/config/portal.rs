//! `[portal]`: the web portal's public address, proxies and sessions.

use std::time::Duration;

use serde::Deserialize;

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
