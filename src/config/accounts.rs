//! `[accounts]`: the TOTP issuer, the name authenticator apps show.

use serde::Deserialize;

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
