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
    /// An alias or new account would overlap this existing address.
    AddressTaken(String),
    NoAlias {
        account: String,
        alias: String,
    },
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
            Self::AddressTaken(a) => {
                write!(f, "{a} is already an account address or an alias")
            }
            Self::NoAlias { account, alias } => write!(f, "account {account} has no alias {alias}"),
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
            // Say which kind of address is in the way.
            return Err(match self.get(&address).await {
                Ok(_) => AccountError::Exists(address),
                Err(_) => AccountError::AddressTaken(address),
            });
        }
        self.events
            .emit(Event::new("account.created").account(&address).reason(via));
        Ok(account)
    }

    pub async fn get(&self, address: &str) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        let key = address.clone();
        self.blocking(move |s| s.account_get(&key))
            .await?
            .ok_or(AccountError::NotFound(address))
    }

    /// Adds an alias (normalised). It must not overlap any account address
    /// or alias, `+tag` forms included.
    pub async fn alias_add(
        &self,
        address: &str,
        alias: &str,
        via: &str,
    ) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        let alias = address::normalize(alias).map_err(AccountError::Address)?;
        let now = self.clock.unix();
        let (key, name, via_owned) = (address.clone(), alias.clone(), via.to_string());
        let change = self
            .blocking(move |s| {
                s.alias_add(&key, &name, |a| {
                    a.record(now, &format!("alias added: {name}"), &via_owned);
                })
            })
            .await?;
        let account = self.alias_outcome(change, &address, &alias)?;
        self.events.emit(
            Event::new("account.alias_added")
                .account(&address)
                .reason(via),
        );
        Ok(account)
    }

    pub async fn alias_remove(
        &self,
        address: &str,
        alias: &str,
        via: &str,
    ) -> Result<Account, AccountError> {
        let address = address::normalize(address).map_err(AccountError::Address)?;
        let alias = address::normalize(alias).map_err(AccountError::Address)?;
        let now = self.clock.unix();
        let (key, name, via_owned) = (address.clone(), alias.clone(), via.to_string());
        let change = self
            .blocking(move |s| {
                s.alias_remove(&key, &name, |a| {
                    a.record(now, &format!("alias removed: {name}"), &via_owned);
                })
            })
            .await?;
        let account = self.alias_outcome(change, &address, &alias)?;
        self.events.emit(
            Event::new("account.alias_removed")
                .account(&address)
                .reason(via),
        );
        Ok(account)
    }

    pub async fn alias_list(&self, address: &str) -> Result<Vec<String>, AccountError> {
        Ok(self.get(address).await?.aliases)
    }

    fn alias_outcome(
        &self,
        change: AliasChange,
        address: &str,
        alias: &str,
    ) -> Result<Account, AccountError> {
        match change {
            AliasChange::Done(account) => Ok(account),
            AliasChange::NoAccount => Err(AccountError::NotFound(address.to_string())),
            AliasChange::Taken(_) => Err(AccountError::AddressTaken(alias.to_string())),
            AliasChange::NoAlias => Err(AccountError::NoAlias {
                account: address.to_string(),
                alias: alias.to_string(),
            }),
        }
    }
}
