//! `[dovecot]`: the passdb endpoint Dovecot's Lua script asks on every
//! IMAP/POP3 login (docs/operator-guide.md, "Dovecot for IMAP").

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DovecotConfig {
    /// Loopback address of the endpoint; off when not set.
    pub listen: Option<SocketAddr>,
    /// The bearer token, shared with Dovecot's Lua script: at least 32
    /// characters, readable by Dovecot's auth user and by no one else.
    pub token_file: Option<PathBuf>,
    /// Also refuse IMAP during an operator block (by default only a policy
    /// block limits it, to the networks that may lift it).
    pub refuse_during_operator_block: bool,
}

impl DovecotConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(addr) = self.listen {
            if !addr.ip().is_loopback() {
                bail!("`dovecot.listen` must be a loopback address, got {addr}");
            }
            if self.token_file.is_none() {
                bail!("`dovecot.listen` needs `dovecot.token_file`");
            }
        }
        Ok(())
    }
}
