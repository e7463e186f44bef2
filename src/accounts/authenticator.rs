//! The `Authenticator` seam: a SASL identity and secret in, an account or a
//! failure out. The session knows nothing of how credentials are stored.
//!
//! The SMTP rule: without 2FA, the account password or a device password;
//! with 2FA, only device passwords. A device-password hit costs one HMAC;
//! every other attempt costs exactly one argon2id verify (against a dummy
//! hash when there is no usable password), so timing reveals nothing.

use std::net::IpAddr;

use async_trait::async_trait;

use super::{Accounts, device, normalize, scheme};
use crate::address;

pub struct AuthRequest<'a> {
    /// SASL authorization identity; empty or equal to `login`.
    pub authzid: &'a str,
    pub login: &'a str,
    pub secret: &'a str,
    pub ip: IpAddr,
    pub mechanism: &'static str,
    /// Who asks: `smtp`, or the Dovecot service (`imap`, `pop3`).
    pub service: &'static str,
}

/// Who a session is authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Normalised primary address.
    pub account: String,
    pub aliases: Vec<String>,
    /// The device password used, if any.
    pub device: Option<String>,
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
    /// Wrong secret, unknown login, disabled account, bad authzid, main
    /// password of a 2FA account: one reply for all.
    Failure {
        reason: &'static str,
    },
    /// Too many failures from this client or for this account: `454 4.7.0`.
    LockedOut,
    /// The verification queue is full: `454 4.7.0 Temporary ...`.
    Busy,
}

/// Seconds within which a device password's recorded last use (from the
/// same address) is left as it is.
const LAST_USE_PRECISION: u64 = 300;

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, request: AuthRequest<'_>) -> AuthOutcome;
}

#[async_trait]
impl Authenticator for Accounts {
    async fn authenticate(&self, req: AuthRequest<'_>) -> AuthOutcome {
        let login = normalize(req.login).ok();
        // Counters key on the login as typed (normalised when possible), so
        // unknown addresses count exactly like real ones.
        let counter_key = login.clone().unwrap_or_else(|| req.login.to_lowercase());
        // Before anything about the credential: 454 then 235 reveals nothing.
        if self.lockouts().check(req.ip, &counter_key).is_err() {
            return AuthOutcome::LockedOut;
        }
        let authzid_ok = req.authzid.is_empty() || normalize(req.authzid).ok() == login;
        let account = match &login {
            Some(login) => match self.record(login).await {
                Ok(account) => account,
                // The store cannot say: a temporary refusal (`454 4.7.0`),
                // never a failure that counts against the user.
                Err(e) => {
                    tracing::warn!(event = "auth.store_unavailable", error = %e);
                    return AuthOutcome::Busy;
                }
            },
            None => None,
        };
        let usable = account.as_ref().filter(|a| !a.disabled && authzid_ok);

        if let (Some(a), Some(letters)) = (usable, device::normalize(req.secret)) {
            let hash = device::hash(&self.parts.key, &a.address, &letters);
            if let Some(d) = a
                .device_passwords
                .iter()
                .find(|d| device::matches(&d.hash, &hash))
            {
                let (name, now, ip) = (d.name.clone(), self.now(), req.ip);
                let used = name.clone();
                // Last use is for the user's device list; failing to record it
                // does not refuse the login. It is kept to within five minutes
                // (enough for a person reading the device list), so a client
                // that reconnects for every message costs one store write per
                // five minutes, not one per login.
                let recent = d.last_ip == Some(ip)
                    && d.last_used
                        .is_some_and(|t| now.saturating_sub(t) < LAST_USE_PRECISION);
                if !recent {
                    let _ = self
                        .update(&a.address, move |acc| {
                            if let Some(d) =
                                acc.device_passwords.iter_mut().find(|d| d.name == used)
                            {
                                d.last_used = Some(now);
                                d.last_ip = Some(ip);
                            }
                            Ok(())
                        })
                        .await;
                }
                self.lockouts().success(req.ip, &a.address);
                return AuthOutcome::Success(Identity {
                    account: a.address.clone(),
                    aliases: a.aliases.clone(),
                    device: Some(name),
                });
            }
        }

        // The main password works only without 2FA.
        let checkable = usable.filter(|a| a.totp.active.is_none());
        let verified = match self
            .parts
            .passwords
            .verify_from(
                req.ip,
                req.secret,
                checkable.map(|a| a.password_hash.as_str()),
            )
            .await
        {
            Ok(ok) => ok,
            Err(_busy) => return AuthOutcome::Busy,
        };
        if verified {
            self.lockouts().success(req.ip, &counter_key);
        } else {
            let started = self.lockouts().failure(req.ip, &counter_key, req.secret);
            self.report_lockouts(&counter_key, Some(req.ip), started);
        }
        match (account, verified) {
            (Some(a), true) => {
                if !scheme::is_native(&a.password_hash) {
                    self.rehash(&a, req.secret, req.service).await;
                }
                AuthOutcome::Success(Identity {
                    account: a.address.clone(),
                    aliases: a.aliases.clone(),
                    device: None,
                })
            }
            (None, _) => AuthOutcome::Failure {
                reason: "unknown_account",
            },
            (Some(a), false) if a.disabled => AuthOutcome::Failure { reason: "disabled" },
            (Some(_), false) if !authzid_ok => AuthOutcome::Failure {
                reason: "authzid_mismatch",
            },
            (Some(a), false) if a.totp.active.is_some() => AuthOutcome::Failure {
                reason: "2fa_needs_device_password",
            },
            (Some(_), false) => AuthOutcome::Failure {
                reason: "bad_password",
            },
        }
    }
}
