//! The recovery address, and recovery links (docs/security.md, "Recovery
//! links").
//!
//! An owner who cannot reach a trusted network during a block may ask for a
//! recovery link, sent to the account's recovery address. The address counts
//! only when it was confirmed by a link sent to it, and set from a trusted
//! network or by the operator at least 7 days before the block's abuse
//! start. The recovery link opens a portal session in the browser that
//! clicks it (24 hours, bound to the block, void at first use or at a new
//! block or lift); the owner does the help page's steps there. It never
//! approves a change made elsewhere.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::trust::{self, DAY};
use super::{Account, AccountError, Accounts, OneTimeToken, Origin, Recovery, device, normalize};
use crate::address;
use crate::events::{Event, EventKind};

/// A confirmation link works this long.
const CONFIRM_FOR: u64 = 7 * DAY;
/// A recovery link works this long.
const LINK_FOR: u64 = DAY;
/// A new recovery link is not sent sooner than this after the last one.
const LINK_RESEND_AFTER: u64 = 10 * 60;

/// What a link in a recovery mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Confirms the recovery address.
    Confirm,
    /// Opens a portal session during a block.
    Open,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Open => "open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confirm" => Some(Self::Confirm),
            "open" => Some(Self::Open),
            _ => None,
        }
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Percent-encodes a query value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const INVALID_LINK: &str = "this link is not valid any more: it was used, it expired, or the account changed since it was sent";

impl Accounts {
    fn token_hash(&self, address: &str, kind: LinkKind, token: &str) -> String {
        device::hash(
            &self.parts.key,
            address,
            &format!("recovery-{}\0{token}", kind.as_str()),
        )
    }

    /// The link a recovery mail carries.
    fn recovery_url(&self, address: &str, kind: LinkKind, token: &str) -> String {
        let base = match &self.parts.portal_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("https://{}", self.parts.hostname),
        };
        format!(
            "{base}/recovery?a={}&k={}&t={token}",
            query_value(address),
            kind.as_str()
        )
    }

    /// Whether the account's recovery address may receive a recovery link
    /// for its current block.
    pub fn recovery_qualifies(&self, account: &Account) -> bool {
        trust::recovery_qualifies(account, self.now())
    }

    /// Sets the recovery address (a credential change: refused during a
    /// block from a network that does not qualify) and sends it a link to
    /// confirm it. Until confirmed it receives nothing else.
    pub async fn set_recovery(
        &self,
        address: &str,
        recovery: &str,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let recovery = normalize(recovery)?;
        let current = self.get(&address).await?;
        if address::owns(&current.address, &current.aliases, &recovery) {
            return Err(AccountError::State(
                "the recovery address must be another mailbox, not this account".into(),
            ));
        }
        let vetted = self.vet_change(&current, origin, "recovery_address")?;
        let token = new_token();
        let hash = self.token_hash(&address, LinkKind::Confirm, &token);
        let (now, origin2, recovery2) = (self.now(), origin.clone(), recovery.clone());
        let account = self
            .update(&address, move |a| {
                a.recovery = Some(Recovery {
                    address: recovery2,
                    set_at: now,
                    set_trusted: !vetted.untrusted,
                    confirmed_at: None,
                    confirm: Some(OneTimeToken {
                        hash,
                        created: now,
                        expires: now + CONFIRM_FOR,
                        block_seq: None,
                    }),
                });
                a.record(now, "recovery_address_set", &origin2);
                super::security::mark(a, false, vetted);
                Ok(())
            })
            .await?;
        self.emit(
            Event::new(EventKind::AccountRecoverySet)
                .account(&address)
                .reason(origin.via),
        );
        let url = self.recovery_url(&address, LinkKind::Confirm, &token);
        self.notify_only(
            &recovery,
            &address,
            "Confirm your recovery address",
            &format!(
                "{address} chose this address ({recovery}) to recover the account if it is ever \
                 blocked and its owner cannot reach a usual network.\n\n\
                 To confirm, open this link within 7 days and press Confirm:\n\n{url}\n\n\
                 If you do not know {address}, ignore this message."
            ),
        )
        .await;
        let extra = self.extra_words(&address, origin, vetted, "recovery_address");
        self.notify(
            &address,
            "A recovery address was set",
            &format!(
                "The recovery address of {address} is now {recovery} (waiting for its \
                 confirmation).\n\nIf you did not do this, contact support at once.{extra}"
            ),
        )
        .await;
        Ok(account)
    }

    /// The confirmation link was opened (and its button pressed).
    pub async fn confirm_recovery(
        &self,
        address: &str,
        token: &str,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let hash = self.token_hash(&address, LinkKind::Confirm, token);
        let now = self.now();
        let account = self
            .update(&address, move |a| {
                let r = a
                    .recovery
                    .as_mut()
                    .ok_or_else(|| AccountError::State(INVALID_LINK.into()))?;
                let valid = r
                    .confirm
                    .as_ref()
                    .is_some_and(|t| t.expires > now && device::matches(&t.hash, &hash));
                if !valid {
                    return Err(AccountError::State(INVALID_LINK.into()));
                }
                r.confirm = None;
                r.confirmed_at = Some(now);
                a.record(now, "recovery_address_confirmed", &Origin::RECOVERY);
                Ok(())
            })
            .await?;
        self.emit(Event::new(EventKind::AccountRecoveryConfirmed).account(&address));
        Ok(account)
    }

    /// Sends a recovery link for the current policy block to the recovery
    /// address, when it qualifies. `Ok(false)`: one was sent in the last
    /// 10 minutes, none sent now.
    pub async fn send_recovery_link(&self, address: &str) -> Result<bool, AccountError> {
        let address = normalize(address)?;
        let current = self.get(&address).await?;
        if !current.policy_blocked() || !self.recovery_qualifies(&current) {
            return Err(AccountError::State(
                "no recovery address can receive a recovery link for this account".into(),
            ));
        }
        let now = self.now();
        if current
            .recovery_link
            .as_ref()
            .is_some_and(|l| l.created + LINK_RESEND_AFTER > now)
        {
            return Ok(false);
        }
        let token = new_token();
        let hash = self.token_hash(&address, LinkKind::Open, &token);
        let account = self
            .update(&address, move |a| {
                let seq = a
                    .block
                    .as_ref()
                    .map(|b| b.seq)
                    .ok_or_else(|| AccountError::State("the account is not blocked".into()))?;
                a.recovery_link = Some(OneTimeToken {
                    hash,
                    created: now,
                    expires: now + LINK_FOR,
                    block_seq: Some(seq),
                });
                a.record(now, "recovery_link_sent", &Origin::RECOVERY);
                Ok(())
            })
            .await?;
        let recovery = account
            .recovery
            .as_ref()
            .map(|r| r.address.clone())
            .unwrap_or_default();
        let url = self.recovery_url(&address, LinkKind::Open, &token);
        self.notify_only(
            &recovery,
            &address,
            "Your recovery link",
            &format!(
                "Someone asked for a recovery link for {address}, which is blocked from sending.\n\n\
                 Open this link within 24 hours, in the browser you want to use, and press \
                 Continue. It signs you in to My account once; there, change the password and \
                 enable two-factor authentication (2FA), and the block lifts.\n\n{url}\n\n\
                 If you did not ask for it, do not open it, and contact support."
            ),
        )
        .await;
        Ok(true)
    }

    /// A recovery link was opened (and its button pressed): consumes it and
    /// returns the account and the block the session is bound to.
    pub async fn open_recovery_link(
        &self,
        address: &str,
        token: &str,
    ) -> Result<(Account, u64), AccountError> {
        let address = normalize(address)?;
        let hash = self.token_hash(&address, LinkKind::Open, token);
        let now = self.now();
        let (account, seq) = self
            .update_with(&address, move |a| {
                let block = a.block.as_ref().map(|b| b.seq);
                let valid = a.recovery_link.as_ref().is_some_and(|link| {
                    link.expires > now
                        && device::matches(&link.hash, &hash)
                        && block.is_some()
                        && link.block_seq == block
                });
                let Some(seq) = block.filter(|_| valid) else {
                    return Err(AccountError::State(INVALID_LINK.into()));
                };
                a.recovery_link = None;
                a.record(now, "recovery_link_used", &Origin::RECOVERY);
                Ok(seq)
            })
            .await?;
        self.emit(Event::new(EventKind::AccountRecoveryLinkUsed).account(&address));
        Ok((account, seq))
    }
}
