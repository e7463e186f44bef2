//! The `Authenticator` seam: a SASL identity and secret in, an account or a
//! failure out. The session knows nothing of how credentials are stored.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::Passwords;
use crate::address;
use crate::store::Store;

pub struct AuthRequest<'a> {
    /// SASL authorization identity; empty or equal to `login`.
    pub authzid: &'a str,
    pub login: &'a str,
    pub secret: &'a str,
    pub ip: IpAddr,
    pub mechanism: &'static str,
}

/// Who a session is authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Normalised primary address.
    pub account: String,
    pub aliases: Vec<String>,
}

impl Identity {
    /// Whether this account may use `address` (normalised) as a sender.
    pub fn owns(&self, address: &str) -> bool {
        address::owns(&self.account, &self.aliases, address)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Success(Identity),
    /// Wrong secret, unknown login, disabled account, bad authzid: one reply.
    Failure {
        reason: &'static str,
    },
    /// Too many failures from this client or for this account: `454 4.7.0`.
    LockedOut,
    /// The verification queue is full: `454 4.7.0 Temporary ...`.
    Busy,
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, request: AuthRequest<'_>) -> AuthOutcome;
}

/// Checks the account password stored in the embedded store.
pub struct StoreAuthenticator {
    store: Store,
    passwords: Arc<Passwords>,
}

impl StoreAuthenticator {
    pub fn new(store: Store, passwords: Arc<Passwords>) -> Self {
        Self { store, passwords }
    }
}

#[async_trait]
impl Authenticator for StoreAuthenticator {
    async fn authenticate(&self, req: AuthRequest<'_>) -> AuthOutcome {
        let login = address::normalize(req.login).ok();
        let authzid_ok = req.authzid.is_empty()
            || address::normalize(req.authzid)
                .ok()
                .is_some_and(|a| Some(&a) == login.as_ref());
        let account = match &login {
            Some(login) => {
                let store = self.store.clone();
                let key = login.clone();
                tokio::task::spawn_blocking(move || store.account_get(&key))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            }
            None => None,
        };
        // Exactly one argon2 verify whatever the case, so timing says nothing.
        let usable = account.as_ref().filter(|a| !a.disabled && authzid_ok);
        let verified = match self
            .passwords
            .verify(req.secret, usable.map(|a| a.password_hash.as_str()))
            .await
        {
            Ok(ok) => ok,
            Err(_busy) => return AuthOutcome::Busy,
        };
        match (account, verified) {
            (Some(a), true) => AuthOutcome::Success(Identity {
                account: a.address,
                aliases: a.aliases,
            }),
            (None, _) => AuthOutcome::Failure {
                reason: "unknown_account",
            },
            (Some(a), false) if a.disabled => AuthOutcome::Failure { reason: "disabled" },
            (Some(_), false) if !authzid_ok => AuthOutcome::Failure {
                reason: "authzid_mismatch",
            },
            (Some(_), false) => AuthOutcome::Failure {
                reason: "bad_password",
            },
        }
    }
}
