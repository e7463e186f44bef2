//! `[accounts]`: the TOTP issuer (the name authenticator apps show) and
//! what makes a network trusted for an account (docs/security.md).

use std::time::Duration;

use serde::Deserialize;

use super::parse::de_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    pub totp_issuer: String,
    /// Distinct days with accepted, never-refused mail from a network...
    pub trusted_network_days: usize,
    /// ...spanning at least this long, before a network is trusted.
    #[serde(deserialize_with = "de_duration")]
    pub trusted_network_span: Duration,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            totp_issuer: "mailwarden".into(),
            trusted_network_days: 3,
            trusted_network_span: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
