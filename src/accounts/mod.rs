//! Accounts: the record, the password rule, and the operations the CLI,
//! admin API and (later) portal share.

mod authenticator;
pub mod password;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use authenticator::{AuthOutcome, AuthRequest, Authenticator, Identity, StoreAuthenticator};
pub use password::Passwords;

use crate::address::{self, AddressError};
use crate::clock::Clock;
use crate::events::{Event, Events};
use crate::store::{Store, StoreError};

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
    /// Sequence number of the latest history entry.
    #[serde(default)]
    pub seq: u64,
    /// Append-only record of credential and block changes.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub seq: u64,
    pub at: u64,
    pub change: String,
    /// Who made it: `cli`, `admin-api`, `portal`, `policy`.
    pub via: String,
}

impl Account {
    pub fn record(&mut self, at: u64, change: &str, via: &str) -> u64 {
        self.seq += 1;
        self.history.push(HistoryEntry {
            seq: self.seq,
            at,
            change: change.to_string(),
            via: via.to_string(),
        });
        self.seq
    }
}

#[derive(Debug)]
pub enum AccountError {
    Address(AddressError),
    Exists(String),
    NotFound(String),
    Password(&'static str),
    Store(StoreError),
    Internal(String),
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Address(e) => write!(f, "invalid address: {e}"),
            Self::Exists(a) => write!(f, "account {a} already exists"),
            Self::NotFound(a) => write!(f, "no account {a}"),
            Self::Password(why) => write!(f, "password refused: {why}"),
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

/// Account operations on a store. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    passwords: Arc<Passwords>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn Events>,
}

impl Accounts {
    pub fn new(
        store: Store,
        passwords: Arc<Passwords>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn Events>,
    ) -> Self {
        Self {
            store,
            passwords,
            clock,
            events,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?
            .map_err(AccountError::Store)
    }

    pub async fn add(
        &self,
        address: &str,
        password: &str,
        via: &str,
    ) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        check_password_rule(&address, password)?;
        let password_hash = self
            .passwords
            .hash(password)
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        let now = self.clock.unix();
        let mut account = Account {
            address: address.clone(),
            aliases: Vec::new(),
            password_hash,
            created: now,
            disabled: false,
            seq: 0,
            history: Vec::new(),
        };
        account.record(now, "created", via);
        let record = account.clone();
        if !self.blocking(move |s| s.account_create(&record)).await? {
            return Err(AccountError::Exists(address));
        }
        self.events
            .emit(Event::new("account.created").account(&address).reason(via));
        Ok(account)
    }

    /// Sets a new password (the password rule applies).
    pub async fn set_password(
        &self,
        address: &str,
        password: &str,
        via: &str,
    ) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        check_password_rule(&address, password)?;
        let hash = self
            .passwords
            .hash(password)
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        let now = self.clock.unix();
        let via = via.to_string();
        let account = self
            .update(&address, move |a| {
                a.password_hash = hash;
                a.record(now, "password_changed", &via);
                Ok(())
            })
            .await?;
        self.events.emit(
            Event::new("account.password_changed")
                .account(&address)
                .reason(account.history.last().map_or("", |h| h.via.as_str())),
        );
        Ok(account)
    }

    /// Disabled accounts cannot authenticate at all.
    pub async fn set_disabled(
        &self,
        address: &str,
        disabled: bool,
        via: &str,
    ) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        let now = self.clock.unix();
        let via = via.to_string();
        let change = if disabled { "disabled" } else { "enabled" };
        let account = self
            .update(&address, move |a| {
                a.disabled = disabled;
                a.record(now, change, &via);
                Ok(())
            })
            .await?;
        self.events.emit(
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
        let address = address::normalize(address).map_err(AccountError::Address)?;
        let key = address.clone();
        if !self.blocking(move |s| s.account_delete(&key)).await? {
            return Err(AccountError::NotFound(address));
        }
        self.events
            .emit(Event::new("account.deleted").account(&address));
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Account>, AccountError> {
        self.blocking(|s| s.account_list()).await
    }

    /// Changes one account in one store transaction.
    async fn update(
        &self,
        address: &str,
        change: impl FnOnce(&mut Account) -> Result<(), AccountError> + Send + 'static,
    ) -> Result<Account, AccountError> {
        let key = address.to_string();
        let result = self
            .blocking(move |s| {
                s.account_update(&key, |a| {
                    change(a)?;
                    Ok::<Account, AccountError>(a.clone())
                })
            })
            .await?;
        match result {
            None => Err(AccountError::NotFound(address.to_string())),
            Some(r) => r,
        }
    }

    pub async fn get(&self, address: &str) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        let key = address.clone();
        self.blocking(move |s| s.account_get(&key))
            .await?
            .ok_or(AccountError::NotFound(address))
    }
}
