//! Accounts: the record, the password rule, and the operations the CLI,
//! admin API and portal share. Security operations (2FA, device passwords,
//! blocks and the unblock rule) are in `security.rs`.

mod authenticator;
mod cache;
pub mod device;
mod guard;
pub mod import;
pub mod lockout;
mod notify;
pub mod password;
pub mod recovery;
mod rehash;
mod remote;
pub mod scheme;
mod security;
pub mod totp;
pub mod trust;

use std::net::IpAddr;
use std::sync::Arc;

pub use authenticator::{AuthOutcome, AuthRequest, Authenticator, Identity};
pub use password::Passwords;
pub use security::{BlockRequest, TotpEnrolment};

pub use crate::store::record::account::{
    Account, Block, BlockKind, DevicePassword, HistoryEntry, OneTimeToken, Origin, Recovery,
    TotpSecret, TotpState, TrustMark,
};
pub use trust::{NetworkHistory, NetworkUses, TrustRule, Trusted};

use crate::address::{self, AddressError};
use crate::clock::Clock;
use crate::events::{Event, EventKind, Events};
use crate::secrets::ServerKey;
use crate::spool::Spool;
use crate::store::{AliasChange, SharedData, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid address: {0}")]
    Address(#[from] AddressError),
    #[error("{0} already exists")]
    Exists(String),
    #[error("no account {0}")]
    NotFound(String),
    /// An alias or new account would overlap this existing address.
    #[error("{0} is already an account address or an alias")]
    AddressTaken(String),
    #[error("account {account} has no alias {alias}")]
    NoAlias { account: String, alias: String },
    #[error("password refused: {0}")]
    Password(&'static str),
    /// A wrong or reused one-time code.
    #[error("the code is wrong or was already used")]
    BadCode,
    /// Too many wrong codes lately: the OTP step is locked for this many
    /// more seconds.
    #[error("too many wrong codes: try again in {} minutes", .0.div_ceil(60).max(1))]
    OtpLocked(u64),
    /// During a block, a credential change from a network that may not
    /// lift it (`trust`).
    #[error("For your safety, this change needs a network you have sent mail from before")]
    NeedsTrustedNetwork,
    /// The request does not fit the account's state (e.g. no pending 2FA).
    #[error("{0}")]
    State(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// argon2 could not hash (no memory, a full queue): the cause is kept.
    #[error(transparent)]
    Hash(#[from] password::HashError),
    /// A stored 2FA secret does not open with this server's key.
    #[error("a 2FA secret does not open with the server key")]
    SecretUnreadable,
    /// A blocking task did not finish (it panicked or was cancelled).
    #[error("an account operation did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
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

/// Hears of a block lift inside the lift's store transaction and adds the
/// rows that restart with it (the scorer's ledger restarts the account's
/// windows), so the lift and the restart are one commit wherever the lift
/// happens: the server, the offline CLI, another node.
pub trait OnLift: Send + Sync + 'static {
    fn lifted(&self, address: &str, rows: &mut LiftRows);
}

/// The rows a lift writes besides the account.
pub use crate::store::AlsoWrite as LiftRows;

/// Everything account operations need.
pub struct AccountsParts {
    /// Shared data: the embedded store, or PostgreSQL for several nodes.
    pub store: SharedData,
    /// argon2 budget for SMTP AUTH.
    pub passwords: Arc<Passwords>,
    pub lockouts: Arc<lockout::Lockouts>,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<dyn Events>,
    pub key: Arc<ServerKey>,
    /// Where notifications go, and whose mail is held on a block.
    pub spool: Arc<dyn Spool>,
    pub hostname: String,
    pub totp_issuer: String,
    /// What restarts when a block lifts.
    pub on_lift: Arc<dyn OnLift>,
    /// Where the account's network uses are read (the scorer's ledger).
    pub networks: Arc<dyn NetworkHistory>,
    /// What makes a network trusted (`[accounts]`).
    pub trust: TrustRule,
    /// "My account" as users open it (`[portal] public_url`), for notices.
    pub portal_url: Option<String>,
}

/// Account operations on a store. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    parts: Arc<AccountsParts>,
    /// Records as last written: reads on the SMTP path stay off the store.
    cache: Arc<cache::AccountCache>,
}

impl Accounts {
    pub fn new(parts: AccountsParts) -> Self {
        // Other nodes write a shared store too (`cache`).
        let cache = match parts.store.backend() {
            "redb" => cache::AccountCache::default(),
            _ => cache::AccountCache::with_max_age(cache::SHARED_MAX_AGE),
        };
        Self {
            parts: Arc::new(parts),
            cache: Arc::new(cache),
        }
    }

    /// The brute-force counters shared by SMTP AUTH and the portal.
    pub fn lockouts(&self) -> &lockout::Lockouts {
        &self.parts.lockouts
    }

    /// Emits `auth.lockout` for each lockout a failure started.
    /// `ip` is the client whose failure started them.
    pub fn report_lockouts(&self, login: &str, ip: Option<IpAddr>, started: Vec<lockout::Started>) {
        for s in started {
            let mut event = Event::new(EventKind::AuthLockout)
                .account(login)
                .scope(s.scope.as_str());
            if let Some(network) = s.network {
                event = event.network(network.to_string());
            }
            event.ip = ip;
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
        f: impl FnOnce(SharedData) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let store = self.parts.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store)).await??)
    }

    pub(crate) async fn hash_password(&self, password: &str) -> Result<String, AccountError> {
        self.parts
            .passwords
            .hash(password)
            .await
            .map_err(AccountError::from)
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
        self.cache.forget(&address);
        self.emit(
            Event::new(EventKind::AccountCreated)
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
                EventKind::AccountDisabled
            } else {
                EventKind::AccountEnabled
            })
            .account(&address),
        );
        Ok(account)
    }

    pub async fn delete(&self, address: &str) -> Result<(), AccountError> {
        let address = normalize(address)?;
        let key = address.clone();
        let deleted = self.blocking(move |s| s.account_delete(&key)).await;
        self.cache.forget(&address);
        let deleted = deleted?;
        if !deleted {
            return Err(AccountError::NotFound(address));
        }
        self.emit(Event::new(EventKind::AccountDeleted).account(&address));
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
    pub(crate) async fn find(&self, address: &str) -> Result<Option<Account>, AccountError> {
        Ok(self.record(address).await?.map(|a| (*a).clone()))
    }

    /// The account as last written, shared: from memory when this process
    /// has read or written it before, otherwise from the store on the
    /// blocking pool (never on a tokio worker). `None`: no such account.
    pub async fn record(&self, address: &str) -> Result<Option<Arc<Account>>, AccountError> {
        let (cached, seen) = self.cache.get(address);
        if let Some(record) = cached {
            return Ok(record);
        }
        let key = address.to_string();
        let record = self
            .blocking(move |s| s.account_get(&key))
            .await?
            .map(Arc::new);
        self.cache.fill(address, record.clone(), seen);
        Ok(record)
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
        let (on_lift, cache) = (self.parts.on_lift.clone(), self.cache.clone());
        let result = self
            .blocking(move |s| {
                s.account_update(&key, |a, also| {
                    let was_blocked = a.block.is_some();
                    let out = change(a)?;
                    // Whatever lifted the block (the operator, the unblock
                    // rule), what restarts with it is written with it.
                    if was_blocked && a.block.is_none() {
                        on_lift.lifted(&a.address, also);
                    }
                    // Inside the transaction: changes reach the cache in
                    // the order they commit.
                    cache.wrote(&a.address, Arc::new(a.clone()));
                    Ok::<(Account, T), AccountError>((a.clone(), out))
                })
            })
            .await;
        match result {
            Err(e) => {
                // The change may have reached the cache but not the disk.
                self.cache.forget(address);
                Err(e)
            }
            Ok(None) => Err(AccountError::NotFound(address.to_string())),
            Ok(Some(r)) => r,
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
            true => ("added", EventKind::AccountAliasAdded),
            false => ("removed", EventKind::AccountAliasRemoved),
        };
        let cache = self.cache.clone();
        let change = self
            .blocking(move |s| {
                // Inside the transaction, as in `update_with`.
                let record = |a: &mut Account| {
                    a.record(now, &format!("alias {verb}: {name}"), &origin2);
                    cache.wrote(&a.address, Arc::new(a.clone()));
                };
                match add {
                    true => s.alias_add(&key, &name, record),
                    false => s.alias_remove(&key, &name, record),
                }
            })
            .await;
        let change = change.inspect_err(|_| self.cache.forget(&address))?;
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
