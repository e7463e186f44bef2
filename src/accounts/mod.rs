//! Accounts: the record, the password rule, and the operations the CLI,
//! admin API and portal share. Security operations (2FA, device passwords,
//! blocks and the unblock rule) are in `security.rs`.

mod authenticator;
pub mod device;
pub mod lockout;
mod notify;
pub mod password;
mod security;
pub mod totp;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use authenticator::{AuthOutcome, AuthRequest, Authenticator, Identity};
pub use password::Passwords;
pub use security::{BlockRequest, TotpEnrolment};

use crate::address::{self, AddressError};
use crate::clock::Clock;
use crate::events::{Event, Events};
use crate::secrets::ServerKey;
use crate::spool::Spool;
use crate::store::{AliasChange, Store, StoreError};

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
}

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
        });
        self.seq
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
}

impl Origin {
    pub const ADMIN: Origin = Origin {
        via: "admin",
        ip: None,
    };

    pub fn portal(ip: IpAddr) -> Self {
        Self {
            via: "portal",
            ip: Some(ip),
        }
    }
}

#[derive(Debug)]
pub enum AccountError {
    Address(AddressError),
    Exists(String),
    NotFound(String),
    /// An alias or new account would overlap this existing address.
    AddressTaken(String),
    NoAlias {
        account: String,
        alias: String,
    },
    Password(&'static str),
    /// A wrong or reused one-time code.
    BadCode,
    /// Too many wrong codes lately: the OTP step is locked for this many
    /// more seconds.
    OtpLocked(u64),
    /// The request does not fit the account's state (e.g. no pending 2FA).
    State(String),
    Store(StoreError),
    Internal(String),
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Address(e) => write!(f, "invalid address: {e}"),
            Self::Exists(a) => write!(f, "{a} already exists"),
            Self::NotFound(a) => write!(f, "no account {a}"),
            Self::AddressTaken(a) => write!(f, "{a} is already an account address or an alias"),
            Self::NoAlias { account, alias } => write!(f, "account {account} has no alias {alias}"),
            Self::Password(why) => write!(f, "password refused: {why}"),
            Self::BadCode => write!(f, "the code is wrong or was already used"),
            Self::OtpLocked(left) => write!(
                f,
                "too many wrong codes: try again in {} minutes",
                left.div_ceil(60).max(1)
            ),
            Self::State(why) => write!(f, "{why}"),
            Self::Store(e) => write!(f, "{e}"),
            Self::Internal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AccountError {}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The password rule shared by the CLI and the portal: 12 to 1024
/// characters, not the address, no composition rules.
pub fn check_password_rule(address: &str, password: &str) -> Result<(), AccountError> {
    let len = password.chars().count();
    if len < 12 {
        return Err(AccountError::Password(
            "it must be at least 12 characters long",
        ));
    }
    if len > 1024 {
        return Err(AccountError::Password(
            "it must be at most 1024 characters long",
        ));
    }
    let lowered = password.trim().to_lowercase();
    let local = address.split('@').next().unwrap_or_default();
    if lowered == address || lowered == local {
        return Err(AccountError::Password("it must not be the email address"));
    }
    Ok(())
}

/// Everything account operations need.
pub struct AccountsParts {
    pub store: Store,
    /// argon2 budget for SMTP AUTH.
    pub passwords: Arc<Passwords>,
    /// A separate argon2 budget for portal sign-in.
    pub portal_passwords: Arc<Passwords>,
    pub lockouts: Arc<lockout::Lockouts>,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<dyn Events>,
    pub key: Arc<ServerKey>,
    /// Where notifications go, and whose mail is held on a block.
    pub spool: Arc<dyn Spool>,
    pub hostname: String,
    pub totp_issuer: String,
}

/// Account operations on a store. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    parts: Arc<AccountsParts>,
}

impl Accounts {
    pub fn new(parts: AccountsParts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    pub fn store(&self) -> &Store {
        &self.parts.store
    }

    /// The brute-force counters shared by SMTP AUTH and the portal.
    pub fn lockouts(&self) -> &lockout::Lockouts {
        &self.parts.lockouts
    }

    /// The portal's own argon2 budget.
    pub fn portal_passwords(&self) -> &Passwords {
        &self.parts.portal_passwords
    }

    /// Emits `auth.lockout` for each lockout a failure started.
    pub fn report_lockouts(&self, login: &str, started: Vec<lockout::Started>) {
        for s in started {
            let mut event = Event::new("auth.lockout")
                .account(login)
                .kind(s.scope.as_str());
            if let Some(network) = s.network {
                event = event.network(network.to_string());
            }
            self.emit(event);
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.parts.clock.unix()
    }

    pub(crate) fn emit(&self, event: Event) {
        self.parts.events.emit(event);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let store = self.parts.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?
            .map_err(AccountError::Store)
    }

    pub(crate) async fn hash_password(&self, password: &str) -> Result<String, AccountError> {
        self.parts
            .passwords
            .hash(password)
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))
    }

    pub async fn add(
        &self,
        address: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        check_password_rule(&address, password)?;
        let password_hash = self.hash_password(password).await?;
        let now = self.now();
        let mut account = Account::new(address.clone(), password_hash, now);
        account.record(now, "created", origin);
        let record = account.clone();
        if !self.blocking(move |s| s.account_create(&record)).await? {
            // Say which kind of address is in the way.
            return Err(match self.find(&address).await? {
                Some(_) => AccountError::Exists(format!("account {address}")),
                None => AccountError::AddressTaken(address),
            });
        }
        self.emit(
            Event::new("account.created")
                .account(&address)
                .reason(origin.via),
        );
        Ok(account)
    }

    /// Disabled accounts cannot authenticate at all.
    pub async fn set_disabled(
        &self,
        address: &str,
        disabled: bool,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let now = self.now();
        let origin = origin.clone();
        let change = if disabled { "disabled" } else { "enabled" };
        let account = self
            .update(&address, move |a| {
                a.disabled = disabled;
                a.record(now, change, &origin);
                Ok(())
            })
            .await?;
        self.emit(
            Event::new(if disabled {
                "account.disabled"
            } else {
                "account.enabled"
            })
            .account(&address),
        );
        Ok(account)
    }

    pub async fn delete(&self, address: &str) -> Result<(), AccountError> {
        let address = normalize(address)?;
        let key = address.clone();
        if !self.blocking(move |s| s.account_delete(&key)).await? {
            return Err(AccountError::NotFound(address));
        }
        self.emit(Event::new("account.deleted").account(&address));
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Account>, AccountError> {
        self.blocking(|s| s.account_list()).await
    }

    pub async fn get(&self, address: &str) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        self.find(&address)
            .await?
            .ok_or(AccountError::NotFound(address))
    }

    /// By normalised address; `None` if there is no such account.
    ///
    /// Read in place: a point read from redb's cache takes microseconds,
    /// less than a trip through the blocking pool and back. Writes, which
    /// wait for fsync, stay on the blocking pool.
    pub(crate) async fn find(&self, address: &str) -> Result<Option<Account>, AccountError> {
        self.parts
            .store
            .account_get(address)
            .map_err(AccountError::Store)
    }

    /// Changes one account in one store transaction and returns it.
    pub(crate) async fn update<T: Send + 'static>(
        &self,
        address: &str,
        change: impl FnOnce(&mut Account) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<Account, AccountError> {
        self.update_with(address, change).await.map(|(a, _)| a)
    }

    /// Like `update`, also returning what the closure returned.
    pub(crate) async fn update_with<T: Send + 'static>(
        &self,
        address: &str,
        change: impl FnOnce(&mut Account) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<(Account, T), AccountError> {
        let key = address.to_string();
        let result = self
            .blocking(move |s| {
                s.account_update(&key, |a| {
                    let out = change(a)?;
                    Ok::<(Account, T), AccountError>((a.clone(), out))
                })
            })
            .await?;
        match result {
            None => Err(AccountError::NotFound(address.to_string())),
            Some(r) => r,
        }
    }
}

impl Accounts {
    /// Adds an alias (normalised). It must not overlap any account address
    /// or alias, `+tag` forms included.
    pub async fn alias_add(
        &self,
        address: &str,
        alias: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        self.alias_change(address, alias, origin, true).await
    }

    pub async fn alias_remove(
        &self,
        address: &str,
        alias: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        self.alias_change(address, alias, origin, false).await
    }

    async fn alias_change(
        &self,
        address: &str,
        alias: &str,
        origin: &Origin,
        add: bool,
    ) -> Result<Account, AccountError> {
        let (address, alias) = (normalize(address)?, normalize(alias)?);
        let (now, origin2) = (self.now(), origin.clone());
        let (key, name) = (address.clone(), alias.clone());
        let (verb, event) = match add {
            true => ("added", "account.alias_added"),
            false => ("removed", "account.alias_removed"),
        };
        let change = self
            .blocking(move |s| {
                let record = |a: &mut Account| {
                    a.record(now, &format!("alias {verb}: {name}"), &origin2);
                };
                match add {
                    true => s.alias_add(&key, &name, record),
                    false => s.alias_remove(&key, &name, record),
                }
            })
            .await?;
        let account = alias_outcome(change, &address, &alias)?;
        self.emit(Event::new(event).account(&address).reason(origin.via));
        Ok(account)
    }

    pub async fn alias_list(&self, address: &str) -> Result<Vec<String>, AccountError> {
        Ok(self.get(address).await?.aliases)
    }
}

fn alias_outcome(change: AliasChange, address: &str, alias: &str) -> Result<Account, AccountError> {
    match change {
        AliasChange::Done(account) => Ok(*account),
        AliasChange::NoAccount => Err(AccountError::NotFound(address.to_string())),
        AliasChange::Taken(_) => Err(AccountError::AddressTaken(alias.to_string())),
        AliasChange::NoAlias => Err(AccountError::NoAlias {
            account: address.to_string(),
            alias: alias.to_string(),
        }),
    }
}

pub(crate) fn normalize(address: &str) -> Result<String, AccountError> {
    address::normalize(address).map_err(AccountError::Address)
}
