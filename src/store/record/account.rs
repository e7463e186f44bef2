//! The account record as the store keeps it (one JSON value per primary
//! address): credentials, 2FA, device passwords, block and history. The
//! encoding is stable: fields are only ever added, with defaults.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Normalised primary address.
    pub address: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Unix seconds.
    pub created: u64,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub totp: TotpState,
    #[serde(default)]
    pub device_passwords: Vec<DevicePassword>,
    #[serde(default)]
    pub block: Option<Block>,
    /// The operator's per-account policy limits (`account policy set`).
    #[serde(default)]
    pub policy_overrides: std::collections::BTreeMap<String, f64>,
    /// Where recovery links and copies of security notices go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// A recovery link sent during a block, not used yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_link: Option<OneTimeToken>,
    /// Networks an operator marked trusted (`account trust`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_networks: Vec<TrustMark>,
    /// Sequence number of the latest history entry.
    #[serde(default)]
    pub seq: u64,
    /// Append-only record of credential and block changes.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// 2FA state. `active` is what sign-in checks; `pending` is a new secret
/// waiting for its first code (the old one keeps working until then).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TotpState {
    pub active: Option<TotpSecret>,
    pub pending: Option<TotpSecret>,
    /// The last step a code was accepted for: each step works once.
    #[serde(default)]
    pub last_step: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpSecret {
    /// Sealed with the server key, bound to the account address.
    pub sealed: String,
    /// History sequence number of the enrolment that created it.
    pub created_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicePassword {
    pub name: String,
    /// HMAC under the server key; the password itself is never stored.
    pub hash: String,
    pub created: u64,
    #[serde(default)]
    pub last_used: Option<u64>,
    #[serde(default)]
    pub last_ip: Option<IpAddr>,
}

/// The account's recovery address. It counts for a recovery link only
/// once confirmed by a link sent to it, when it was set from a trusted
/// network or by the operator, at least 7 days before the abuse start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recovery {
    pub address: String,
    pub set_at: u64,
    /// Set by the operator or from a network trusted for the account.
    pub set_trusted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<u64>,
    /// The confirmation link waiting to be opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<OneTimeToken>,
}

/// A link's secret as stored: an HMAC under the server key, never the
/// token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OneTimeToken {
    pub hash: String,
    pub created: u64,
    pub expires: u64,
    /// A recovery link works only for the block it was sent for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_seq: Option<u64>,
}

/// A network an operator marked trusted for the account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustMark {
    pub network: ipnet::IpNet,
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Set by the scorer (or `block --self-service`): lifts by the unblock rule.
    Policy,
    /// Set by an operator: lifts only by `account unblock`.
    Operator,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block {
    pub kind: BlockKind,
    /// A category in plain words, shown to the user.
    pub reason: String,
    /// Operators only: the full evidence (score breakdown).
    #[serde(default)]
    pub detail: Option<String>,
    /// Client /24s and /64s that used the account while the abuse built up.
    #[serde(default)]
    pub abuse_networks: Vec<ipnet::IpNet>,
    pub seq: u64,
    pub at: u64,
    /// When the thief is taken to have arrived: trust earned from then on
    /// does not count while this block is on (`accounts::trust`). Blocks
    /// written before it existed use `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse_start: Option<u64>,
    /// The password hash valid at the block: a "new" password equal to it
    /// does not count towards the unblock rule.
    pub password_hash_at_block: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub seq: u64,
    pub at: u64,
    pub change: String,
    /// Who made it: `admin`, `portal`, `policy`, `smtp`.
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Counts towards lifting the current policy block.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unblock_credit: bool,
    /// A credential change made from a network not trusted for the
    /// account: a policy signal, and a possible abuse start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
}

/// History changes after which other web sessions must sign in again.
const CREDENTIAL_CHANGES: &[&str] = &[
    "password_changed",
    "totp_enabled",
    "totp_disabled",
    "unblocked",
];

impl Account {
    /// A new account: no aliases, 2FA off, no device passwords, no block,
    /// no history yet.
    pub fn new(address: String, password_hash: String, created: u64) -> Self {
        Self {
            address,
            aliases: Vec::new(),
            password_hash,
            created,
            disabled: false,
            totp: TotpState::default(),
            device_passwords: Vec::new(),
            block: None,
            policy_overrides: Default::default(),
            trusted_networks: Vec::new(),
            recovery: None,
            recovery_link: None,
            seq: 0,
            history: Vec::new(),
        }
    }

    pub fn record(&mut self, at: u64, change: &str, origin: &Origin) -> u64 {
        self.seq += 1;
        self.history.push(HistoryEntry {
            seq: self.seq,
            at,
            change: change.to_string(),
            via: origin.via.to_string(),
            ip: origin.ip,
            unblock_credit: false,
            untrusted: false,
        });
        self.seq
    }

    /// The history sequence number of the latest change that ends every
    /// web session but the one that made it: a new password, 2FA turned on
    /// (a new authenticator) or off, a lift (by the rule or the operator).
    pub fn credentials_seq(&self) -> u64 {
        self.history
            .iter()
            .rev()
            .find(|h| CREDENTIAL_CHANGES.contains(&h.change.as_str()))
            .map_or(0, |h| h.seq)
    }

    pub fn totp_status(&self) -> &'static str {
        match (&self.totp.active, &self.totp.pending) {
            (Some(_), _) => "on",
            (None, Some(_)) => "pending",
            (None, None) => "off",
        }
    }

    pub fn policy_blocked(&self) -> bool {
        self.block
            .as_ref()
            .is_some_and(|b| b.kind == BlockKind::Policy)
    }
}

/// Who asks for a change, and from where. Portal changes from a network in
/// the block's `abuse_networks` do not count towards the unblock rule.
#[derive(Debug, Clone)]
pub struct Origin {
    pub via: &'static str,
    pub ip: Option<IpAddr>,
    /// The pending 2FA enrolment this requester started (its history
    /// sequence number): a password change keeps it and cancels any other.
    pub enrolment: Option<u64>,
    /// A portal session opened by a recovery link: the block it was sent
    /// for (its changes qualify while that block is on).
    pub recovery_for: Option<u64>,
}

impl Origin {
    pub const ADMIN: Origin = Origin {
        via: "admin",
        ip: None,
        enrolment: None,
        recovery_for: None,
    };

    /// A recovery mail's link (confirming the address, opening a session).
    pub const RECOVERY: Origin = Origin {
        via: "recovery",
        ip: None,
        enrolment: None,
        recovery_for: None,
    };

    pub fn portal(ip: IpAddr) -> Self {
        Self {
            via: "portal",
            ip: Some(ip),
            enrolment: None,
            recovery_for: None,
        }
    }
}
