//! Credentials and blocks: password changes, TOTP 2FA, device passwords,
//! blocks, and the unblock rule (docs/security.md, "Blocks"; docs/policy.md,
//! "After a block").
//!
//! The rule: a policy block lifts when, after it (by history sequence
//! number, never by wall clock), the password was changed to one that
//! differs from the one valid at the block AND 2FA was enabled with a new
//! secret verified by a code, each from a network that qualifies (`guard`,
//! `trust`: trusted at the block's abuse start and not one of its abuse
//! networks) or by the operator. During a block, portal changes from other
//! networks are refused, so the thief who caused it can neither lift it
//! nor lock the owner out of the steps.

use std::net::IpAddr;

use super::guard::Vetted;
use super::{
    Account, AccountError, Accounts, Block, BlockKind, DevicePassword, Origin, TotpSecret,
    check_password_rule, device, normalize, password, totp, trust,
};
use crate::config::PolicyConfig;
use crate::events::{Event, EventKind};
use crate::spool::{QueueState, QueueWrite};

/// What the user needs to add a new 2FA secret to an authenticator app.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    /// History sequence number of the enrolment (`Origin::enrolment`).
    pub seq: u64,
    pub otpauth_url: String,
    /// Uppercase base32 in groups of four.
    pub key: String,
    pub qr_png: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct BlockRequest {
    pub kind: BlockKind,
    pub reason: String,
    pub detail: Option<String>,
    pub abuse_networks: Vec<ipnet::IpNet>,
}

const MAX_DEVICE_NAME: usize = 64;

/// A 2FA enrolment pending from anywhere but `origin` is cancelled: a new
/// password ends what a thief with the old one may have started.
fn cancel_other_enrolments(a: &mut Account, now: u64, origin: &Origin) {
    let other = a
        .totp
        .pending
        .as_ref()
        .is_some_and(|p| Some(p.created_seq) != origin.enrolment);
    if other {
        a.totp.pending = None;
        a.record(now, "totp_enrolment_cancelled", origin);
    }
}

/// Marks the change just recorded: its credit towards the unblock rule,
/// and whether it came from an untrusted network.
pub(super) fn mark(a: &mut Account, credit: bool, vetted: Vetted) {
    let last = a.history.last_mut().expect("just recorded");
    last.unblock_credit = credit;
    last.untrusted = vetted.untrusted;
}

/// Applies the unblock rule; lifts the block in `a` when it is satisfied.
fn lift_if_due(a: &mut Account, now: u64) -> Option<Block> {
    let block = a.block.as_ref().filter(|b| b.kind == BlockKind::Policy)?;
    let after = |change: &str| {
        a.history
            .iter()
            .any(|h| h.seq > block.seq && h.unblock_credit && h.change == change)
    };
    if !(after("password_changed") && after("totp_enabled")) {
        return None;
    }
    let block = a.block.take()?;
    // Suspended device passwords never send again.
    a.device_passwords.clear();
    a.recovery_link = None;
    a.record(
        now,
        "unblocked",
        &Origin {
            via: "rule",
            ip: None,
            enrolment: None,
            recovery_for: None,
        },
    );
    Some(block)
}

impl Accounts {
    /// Sets a new password (the password rule applies). It counts towards
    /// the unblock rule if it differs from the password valid at the block.
    pub async fn set_password(
        &self,
        address: &str,
        new_password: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        check_password_rule(&address, new_password)?;
        let current = self.get(&address).await?;
        let vetted = self.vet_change(&current, origin, "password")?;
        // "Different from the one at the block" needs the old hash: one
        // extra argon2 verify, only while a policy block is on.
        let differs_at = match current
            .block
            .as_ref()
            .filter(|b| b.kind == BlockKind::Policy)
        {
            Some(block) => {
                let (pw, hash) = (
                    new_password.to_string(),
                    block.password_hash_at_block.clone(),
                );
                let same =
                    tokio::task::spawn_blocking(move || password::verify_blocking(&pw, &hash))
                        .await
                        .unwrap_or(true);
                (!same).then_some(block.seq)
            }
            None => None,
        };
        let hash = self.hash_password(new_password).await?;
        let (now, origin2) = (self.now(), origin.clone());
        let (account, lifted) = self
            .update_with(&address, move |a| {
                a.password_hash = hash;
                cancel_other_enrolments(a, now, &origin2);
                a.record(now, "password_changed", &origin2);
                let credit = a
                    .block
                    .as_ref()
                    .is_some_and(|b| differs_at == Some(b.seq) && vetted.qualifies);
                mark(a, credit, vetted);
                Ok(lift_if_due(a, now))
            })
            .await?;
        self.emit(
            Event::new(EventKind::AccountPasswordChanged)
                .account(&address)
                .reason(origin.via),
        );
        let extra = self.extra_words(&address, origin, vetted, "password");
        self.notify(&address, "Your password was changed", &format!(
            "The password of {address} was changed.\n\nIf you did not do this, contact support at once.{extra}"
        ))
        .await;
        if let Some(block) = lifted {
            self.after_lift(&address, &block, "rule").await;
        }
        Ok(account)
    }

    /// Starts 2FA enrolment (or re-enrolment): a new pending secret. An
    /// active secret keeps working until the new one is verified.
    pub async fn totp_enable(
        &self,
        address: &str,
        origin: &Origin,
    ) -> Result<TotpEnrolment, AccountError> {
        let address = normalize(address)?;
        let current = self.get(&address).await?;
        let vetted = self.vet_change(&current, origin, "totp_enrolment")?;
        let secret = totp::new_secret();
        let sealed = self.parts.key.seal(&address, &secret);
        let (now, origin) = (self.now(), origin.clone());
        let (_, seq) = self
            .update_with(&address, move |a| {
                let seq = a.record(now, "totp_enrolment_started", &origin);
                mark(a, false, vetted);
                a.totp.pending = Some(TotpSecret {
                    sealed,
                    created_seq: seq,
                });
                Ok(seq)
            })
            .await?;
        let issuer = &self.parts.totp_issuer;
        Ok(TotpEnrolment {
            seq,
            otpauth_url: totp::otpauth_url(&secret, issuer, &address),
            key: totp::display_key(&secret),
            qr_png: totp::qr_png(&secret, issuer, &address),
        })
    }

    /// The pending enrolment again (the portal's QR Code button).
    pub async fn totp_pending(&self, address: &str) -> Result<Option<TotpEnrolment>, AccountError> {
        let account = self.get(address).await?;
        let Some(pending) = &account.totp.pending else {
            return Ok(None);
        };
        let secret = self
            .parts
            .key
            .open(&account.address, &pending.sealed)
            .ok_or_else(|| AccountError::SecretUnreadable)?;
        let issuer = &self.parts.totp_issuer;
        Ok(Some(TotpEnrolment {
            seq: pending.created_seq,
            otpauth_url: totp::otpauth_url(&secret, issuer, &account.address),
            key: totp::display_key(&secret),
            qr_png: totp::qr_png(&secret, issuer, &account.address),
        }))
    }

    /// Verifies a code for the pending secret: 2FA is then on with it.
    pub async fn totp_verify(
        &self,
        address: &str,
        code: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let current = self.get(&address).await?;
        let vetted = self.vet_change(&current, origin, "totp_enable")?;
        let bucket = self.otp_gate(&current, origin.ip)?;
        let (now, origin2, key, code) = (
            self.now(),
            origin.clone(),
            self.parts.key.clone(),
            code.to_string(),
        );
        let (account, (lifted, old_devices)) = self
            .update_with(&address, move |a| {
                let pending =
                    a.totp.pending.clone().ok_or_else(|| {
                        AccountError::State("2FA enrolment was not started".into())
                    })?;
                let secret = key
                    .open(&a.address, &pending.sealed)
                    .ok_or_else(|| AccountError::SecretUnreadable)?;
                let step = totp::check(&secret, &code, now, a.totp.last_step)
                    .ok_or(AccountError::BadCode)?;
                a.totp.last_step = step;
                a.totp.active = a.totp.pending.take();
                a.record(now, "totp_enabled", &origin2);
                let credit = a
                    .block
                    .as_ref()
                    .is_some_and(|b| pending.created_seq > b.seq && vetted.qualifies);
                mark(a, credit, vetted);
                let devices: Vec<String> =
                    a.device_passwords.iter().map(|d| d.name.clone()).collect();
                Ok((lift_if_due(a, now), devices))
            })
            .await
            .map_err(|e| self.code_error(e, &address, &bucket, origin.ip))?;
        self.lockouts().otp_success(&bucket);
        self.emit(
            Event::new(EventKind::AccountTotpEnabled)
                .account(&address)
                .reason(origin.via),
        );
        let extra = self.extra_words(&address, origin, vetted, "totp_enable");
        self.notify(
            &address,
            "Two-factor authentication is on",
            &format!(
                "Two-factor authentication was enabled for {address}.\n\n\
             Desktop mail programs now need a device password instead of your password.{extra}"
            ),
        )
        .await;
        if let Some(block) = lifted {
            for name in old_devices {
                self.emit(
                    Event::new(EventKind::AccountDevicePasswordRevoked)
                        .account(&address)
                        .target(name),
                );
            }
            self.after_lift(&address, &block, "rule").await;
        }
        Ok(account)
    }

    /// Checks a code against the active secret (sign-in, disabling 2FA).
    /// A code for the active secret; `ip` is the client that typed it (for
    /// the failure and lockout events).
    pub async fn totp_check(
        &self,
        address: &str,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), AccountError> {
        let address = normalize(address)?;
        let current = self.get(&address).await?;
        let bucket = self.otp_gate(&current, ip)?;
        let (now, key, code) = (self.now(), self.parts.key.clone(), code.to_string());
        self.update(&address, move |a| {
            let active = a
                .totp
                .active
                .clone()
                .ok_or_else(|| AccountError::State("2FA is not enabled".into()))?;
            let secret = key
                .open(&a.address, &active.sealed)
                .ok_or_else(|| AccountError::SecretUnreadable)?;
            a.totp.last_step =
                totp::check(&secret, &code, now, a.totp.last_step).ok_or(AccountError::BadCode)?;
            Ok(())
        })
        .await
        .map(|_| self.lockouts().otp_success(&bucket))
        .map_err(|e| self.code_error(e, &address, &bucket, ip))
    }

    /// Counts a wrong code towards the OTP lockout of its bucket.
    fn code_error(
        &self,
        e: AccountError,
        address: &str,
        bucket: &str,
        ip: Option<IpAddr>,
    ) -> AccountError {
        if matches!(e, AccountError::BadCode) {
            let mut event = Event::new(EventKind::AuthOtpFailure).account(address);
            event.ip = ip;
            self.emit(event);
            if let Some(started) = self.lockouts().otp_failure(bucket, ip) {
                self.report_lockouts(address, ip, vec![started]);
            }
        }
        e
    }

    /// The lockout bucket of a code or portal password typed from `ip`:
    /// each network trusted for the account has its own, every other
    /// network shares one, so failures elsewhere never lock the owner's
    /// trusted network.
    pub fn lockout_bucket(&self, account: &Account, ip: Option<IpAddr>) -> String {
        match ip.and_then(|ip| self.trusted_from(account, ip)) {
            Some(t) => format!("{} {}", account.address, t.network()),
            None => account.address.clone(),
        }
    }

    /// Refuses OTP checks while the bucket's OTP step is locked; returns
    /// the bucket.
    fn otp_gate(&self, account: &Account, ip: Option<IpAddr>) -> Result<String, AccountError> {
        let bucket = self.lockout_bucket(account, ip);
        self.lockouts()
            .otp_check(&bucket)
            .map_err(AccountError::OtpLocked)?;
        Ok(bucket)
    }

    /// The words a notice adds for a change from an untrusted network.
    pub(super) fn extra_words(
        &self,
        address: &str,
        origin: &Origin,
        vetted: Vetted,
        what: &'static str,
    ) -> String {
        if vetted.untrusted {
            self.untrusted_change(address, origin, what)
        } else {
            String::new()
        }
    }

    /// Turns 2FA off and revokes every device password. Needs a current
    /// code, unless an operator does it (`code` is `None`).
    pub async fn totp_disable(
        &self,
        address: &str,
        code: Option<&str>,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let current = self.get(&address).await?;
        let vetted = self.vet_change(&current, origin, "totp_disable")?;
        if let Some(code) = code {
            self.totp_check(&address, code, origin.ip).await?;
        }
        let (now, origin2) = (self.now(), origin.clone());
        let (account, revoked) = self
            .update_with(&address, move |a| {
                if a.totp.active.is_none() && a.totp.pending.is_none() {
                    return Err(AccountError::State("2FA is not enabled".into()));
                }
                a.totp.active = None;
                a.totp.pending = None;
                let revoked: Vec<String> = a.device_passwords.drain(..).map(|d| d.name).collect();
                a.record(now, "totp_disabled", &origin2);
                mark(a, false, vetted);
                Ok(revoked)
            })
            .await?;
        self.emit(
            Event::new(EventKind::AccountTotpDisabled)
                .account(&address)
                .reason(origin.via),
        );
        for name in revoked {
            self.emit(
                Event::new(EventKind::AccountDevicePasswordRevoked)
                    .account(&address)
                    .target(name),
            );
        }
        let extra = self.extra_words(&address, origin, vetted, "totp_disable");
        self.notify(&address, "Two-factor authentication is off", &format!(
            "Two-factor authentication was turned off for {address}, and every device password was revoked.{extra}"
        ))
        .await;
        Ok(account)
    }

    /// Creates a device password and returns it; it is never shown again.
    pub async fn device_password_add(
        &self,
        address: &str,
        name: &str,
        origin: &Origin,
    ) -> Result<String, AccountError> {
        let address = normalize(address)?;
        let name = name.trim().to_string();
        if name.is_empty()
            || name.chars().count() > MAX_DEVICE_NAME
            || name.chars().any(char::is_control)
        {
            return Err(AccountError::State(format!(
                "a device password needs a name of 1 to {MAX_DEVICE_NAME} characters"
            )));
        }
        let current = self.get(&address).await?;
        let vetted = self.vet_change(&current, origin, "device_password")?;
        let plain = device::generate();
        let hash = device::hash(
            &self.parts.key,
            &address,
            &device::normalize(&plain).expect("well formed"),
        );
        let (now, origin2, name2) = (self.now(), origin.clone(), name.clone());
        self.update(&address, move |a| {
            if a.policy_blocked() {
                return Err(AccountError::State(
                    "the account is blocked: change the password and enable 2FA first".into(),
                ));
            }
            if a.device_passwords.iter().any(|d| d.name == name2) {
                return Err(AccountError::Exists(format!(
                    "a device password named {name2:?}"
                )));
            }
            a.device_passwords.push(DevicePassword {
                name: name2,
                hash,
                created: now,
                last_used: None,
                last_ip: None,
            });
            a.record(now, "device_password_created", &origin2);
            mark(a, false, vetted);
            Ok(())
        })
        .await?;
        self.emit(
            Event::new(EventKind::AccountDevicePasswordCreated)
                .account(&address)
                .target(&name),
        );
        self.notify(
            &address,
            "A device password was created",
            &format!(
                "A device password named \"{name}\" was created for {address}.\n\n\
             If you did not do this, change your password and revoke it.{}",
                self.extra_words(&address, origin, vetted, "device_password")
            ),
        )
        .await;
        Ok(plain)
    }

    pub async fn device_password_revoke(
        &self,
        address: &str,
        name: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let (now, origin2, name2) = (self.now(), origin.clone(), name.to_string());
        let account = self
            .update(&address, move |a| {
                let before = a.device_passwords.len();
                a.device_passwords.retain(|d| d.name != name2);
                if a.device_passwords.len() == before {
                    return Err(AccountError::NotFound(format!("device password {name2:?}")));
                }
                a.record(now, "device_password_revoked", &origin2);
                Ok(())
            })
            .await?;
        self.emit(
            Event::new(EventKind::AccountDevicePasswordRevoked)
                .account(&address)
                .target(name),
        );
        Ok(account)
    }

    /// Blocks sending. A policy block never replaces an operator block.
    /// The account's queued mail is held until the block lifts.
    pub async fn block(
        &self,
        address: &str,
        request: BlockRequest,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let (now, origin2, req) = (self.now(), origin.clone(), request.clone());
        let uses = self.network_uses(&address);
        let account = self
            .update(&address, move |a| {
                if a.block
                    .as_ref()
                    .is_some_and(|b| b.kind == BlockKind::Operator)
                    && req.kind == BlockKind::Policy
                {
                    return Ok(());
                }
                let change = match req.kind {
                    BlockKind::Policy => "blocked_policy",
                    BlockKind::Operator => "blocked_operator",
                };
                let abuse_start = trust::abuse_start(a, &uses, &req.abuse_networks, now);
                // A link sent for an earlier block opens nothing now.
                a.recovery_link = None;
                let seq = a.record(now, change, &origin2);
                a.block = Some(Block {
                    kind: req.kind,
                    reason: req.reason,
                    detail: req.detail,
                    abuse_networks: req.abuse_networks,
                    seq,
                    at: now,
                    abuse_start: Some(abuse_start),
                    password_hash_at_block: a.password_hash.clone(),
                });
                Ok(())
            })
            .await?;
        let held = self
            .set_mail_state(&address, QueueState::Queued, QueueState::Held)
            .await;
        let kind = match request.kind {
            BlockKind::Policy => "policy",
            BlockKind::Operator => "operator",
        };
        self.emit(
            Event::new(EventKind::AccountBlocked)
                .account(&address)
                .reason(&request.reason)
                .scope(kind)
                .recipients(held),
        );
        let what_to_do = match request.kind {
            BlockKind::Policy => {
                let where_ = match &self.parts.portal_url {
                    Some(url) => format!("sign in to My account at {url}"),
                    None => "sign in to My account".to_string(),
                };
                format!(
                    "To send again, {where_}, change your password and enable \
                     two-factor authentication (2FA). The block then lifts by itself."
                )
            }
            BlockKind::Operator => "Please contact support.".to_string(),
        };
        self.notify(
            &address,
            "Your account has been blocked from sending",
            &format!(
                "Your account {address} has been blocked from sending ({}).\n\n{what_to_do}",
                request.reason
            ),
        )
        .await;
        Ok(account)
    }

    /// Lifts any block (the operator's `account unblock`).
    pub async fn unblock(&self, address: &str, origin: &Origin) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let (now, origin2) = (self.now(), origin.clone());
        let (account, block) = self
            .update_with(&address, move |a| {
                let block = a
                    .block
                    .take()
                    .ok_or_else(|| AccountError::State(format!("{} is not blocked", a.address)))?;
                if block.kind == BlockKind::Policy {
                    a.device_passwords.clear();
                }
                a.recovery_link = None;
                a.record(now, "unblocked", &origin2);
                Ok(block)
            })
            .await?;
        self.after_lift(&address, &block, origin.via).await;
        Ok(account)
    }

    /// Recovery: a new password, 2FA off, every device password revoked, and
    /// an operator block until the operator unblocks.
    pub async fn reset(
        &self,
        address: &str,
        new_password: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        check_password_rule(&address, new_password)?;
        let hash = self.hash_password(new_password).await?;
        let (now, origin2) = (self.now(), origin.clone());
        let account = self
            .update(&address, move |a| {
                a.password_hash = hash;
                a.record(now, "password_changed", &origin2);
                a.totp.active = None;
                a.totp.pending = None;
                a.device_passwords.clear();
                a.record(now, "totp_disabled", &origin2);
                let seq = a.record(now, "blocked_operator", &origin2);
                a.block = Some(Block {
                    kind: BlockKind::Operator,
                    reason: "account recovery by the administrator".into(),
                    detail: None,
                    abuse_networks: Vec::new(),
                    seq,
                    at: now,
                    abuse_start: None,
                    password_hash_at_block: a.password_hash.clone(),
                });
                Ok(())
            })
            .await?;
        self.set_mail_state(&address, QueueState::Queued, QueueState::Held)
            .await;
        for kind in [
            EventKind::AccountPasswordChanged,
            EventKind::AccountTotpDisabled,
        ] {
            self.emit(Event::new(kind).account(&address).reason(origin.via));
        }
        self.emit(
            Event::new(EventKind::AccountBlocked)
                .account(&address)
                .scope("operator")
                .reason("reset"),
        );
        Ok(account)
    }

    /// Events, released mail and the user's notice once a block has lifted.
    async fn after_lift(&self, address: &str, block: &Block, how: &str) {
        let released = self
            .set_mail_state(address, QueueState::Held, QueueState::Queued)
            .await;
        self.emit(
            Event::new(EventKind::AccountUnblocked)
                .account(address)
                .reason(how)
                .recipients(released),
        );
        self.notify(
            address,
            "Your account has been unblocked",
            &format!(
                "Your account {address} can send email again (the block for {} was lifted).",
                block.reason
            ),
        )
        .await;
    }

    /// Moves the account's own messages between queued and held; returns
    /// how many moved. A failure is logged: the block itself stands.
    pub(super) async fn set_mail_state(
        &self,
        address: &str,
        from: QueueState,
        to: QueueState,
    ) -> usize {
        let spool = &self.parts.spool;
        let moved: Vec<QueueWrite> = match spool.list().await {
            Ok(list) => list
                .into_iter()
                .filter(|e| e.envelope.account == address && e.state == from)
                .map(|e| QueueWrite::SetState(e.id, to))
                .collect(),
            Err(e) => {
                tracing::error!(event = "store.error", error = %e, "cannot read the queue to hold or release mail");
                return 0;
            }
        };
        let n = moved.len();
        if n > 0
            && let Err(e) = spool.apply(moved).await
        {
            tracing::error!(event = "store.error", error = %e, "cannot hold or release mail");
            return 0;
        }
        n
    }
}

impl Accounts {
    /// Sets (or with `None` removes) a per-account policy limit.
    pub async fn set_policy_override(
        &self,
        address: &str,
        key: &str,
        value: Option<f64>,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        if !PolicyConfig::OVERRIDE_KEYS.contains(&key) {
            return Err(AccountError::State(format!(
                "unknown policy key {key:?}; one of: {}",
                PolicyConfig::OVERRIDE_KEYS.join(", ")
            )));
        }
        let address = normalize(address)?;
        let (now, origin, key) = (self.now(), origin.clone(), key.to_string());
        self.update(&address, move |a| {
            let change = match value {
                Some(v) => {
                    a.policy_overrides.insert(key.clone(), v);
                    format!("policy {key}={v}")
                }
                None => {
                    a.policy_overrides.remove(&key);
                    format!("policy {key}=default")
                }
            };
            a.record(now, &change, &origin);
            Ok(())
        })
        .await
    }
}
