//! Who may change an account's credentials, and from where
//! (docs/security.md, "Trusted networks" and "Who may lift a block").
//!
//! A credential change (new password, 2FA on or off, a device password)
//! made in the portal is vetted against the account's trusted networks
//! (`trust`): while a block is on, it is refused from a network that does
//! not qualify; before any block, one from an untrusted network is made,
//! marked in the history (a policy signal and a possible abuse start) and
//! notified.

use std::net::IpAddr;

use ipnet::IpNet;

use super::trust::{self, NetworkUses, TrustRule, Trusted};
use super::{Account, AccountError, Accounts, Origin, TrustMark, normalize};
use crate::events::{Event, EventKind};

/// What vetting a change found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vetted {
    /// It may count towards lifting the block.
    pub qualifies: bool,
    /// It comes from a network not trusted for the account.
    pub untrusted: bool,
}

impl Accounts {
    /// How the account used its client networks (sending days, logins).
    pub fn network_uses(&self, address: &str) -> NetworkUses {
        self.parts.networks.uses(address)
    }

    pub fn trust_rule(&self) -> TrustRule {
        self.parts.trust
    }

    /// Whether `ip` is on a network trusted for `account` (judged at the
    /// block's abuse start while a block is on).
    pub fn trusted_from(&self, account: &Account, ip: IpAddr) -> Option<Trusted> {
        let uses = self.network_uses(&account.address);
        trust::trusted(account, &uses, self.parts.trust, ip, self.now())
    }

    /// Whether a change from `ip` may lift the account's block.
    pub fn qualifies_from(&self, account: &Account, ip: IpAddr) -> bool {
        let uses = self.network_uses(&account.address);
        trust::qualifies(account, &uses, self.parts.trust, ip, self.now())
    }

    /// Every network trusted for the account now.
    pub fn trusted_networks(&self, account: &Account) -> Vec<Trusted> {
        let uses = self.network_uses(&account.address);
        trust::trusted_networks(account, &uses, self.parts.trust, self.now())
    }

    /// Vets a credential change (`what`, for the event) from `origin`.
    /// Operator and rule changes always qualify; portal changes by their
    /// network. During a block a change that does not qualify is refused.
    pub(crate) fn vet_change(
        &self,
        account: &Account,
        origin: &Origin,
        what: &'static str,
    ) -> Result<Vetted, AccountError> {
        // A session opened by a recovery link does the steps for the block
        // it was sent for; once that block is gone it is any portal session.
        let recovering =
            origin.via == "recovery" && trust::recovering(account, origin.recovery_for);
        if recovering || !matches!(origin.via, "portal" | "recovery") {
            return Ok(Vetted {
                qualifies: true,
                untrusted: false,
            });
        }
        let (qualifies, trusted) = match origin.ip {
            Some(ip) => (
                self.qualifies_from(account, ip),
                self.trusted_from(account, ip).is_some(),
            ),
            None => (false, false),
        };
        if account.block.is_some() && !qualifies {
            let mut event = Event::new(EventKind::AccountChangeRefused)
                .account(&account.address)
                .target(what);
            event.ip = origin.ip;
            self.emit(event);
            return Err(AccountError::NeedsTrustedNetwork);
        }
        Ok(Vetted {
            qualifies,
            untrusted: !trusted,
        })
    }

    /// After a change vetted as untrusted: the event, and a word in the
    /// notice the change sends anyway.
    pub(crate) fn untrusted_change(
        &self,
        address: &str,
        origin: &Origin,
        what: &'static str,
    ) -> String {
        let mut event = Event::new(EventKind::AccountUntrustedChange)
            .account(address)
            .target(what);
        event.ip = origin.ip;
        self.emit(event);
        let from = origin.ip.map(|ip| format!(" ({ip})")).unwrap_or_default();
        format!(
            "\n\nIt was made from a network{from} you have not sent mail from before. \
             If this was not you, change your password from a computer you usually \
             send mail from, or contact support."
        )
    }

    /// An operator marks `network` trusted for the account (the office, or
    /// the owner's networks after a migration). Logged and notified.
    pub async fn trust_network(
        &self,
        address: &str,
        network: IpNet,
        origin: &Origin,
    ) -> Result<Account, AccountError> {
        let address = normalize(address)?;
        let network = network.trunc();
        let (now, origin2) = (self.now(), origin.clone());
        let account = self
            .update(&address, move |a| {
                if !a.trusted_networks.iter().any(|m| m.network == network) {
                    a.trusted_networks.push(TrustMark { network, at: now });
                }
                a.record(now, &format!("network_trusted {network}"), &origin2);
                Ok(())
            })
            .await?;
        self.emit(
            Event::new(EventKind::AccountNetworkTrusted)
                .account(&address)
                .network(network.to_string())
                .reason(origin.via),
        );
        self.notify(
            &address,
            "A network was marked as yours",
            &format!(
                "Your administrator marked the network {network} as one you use for {address}.\n\n\
                 Changes to your password and two-factor authentication made from it can lift \
                 a block. If you did not ask for this, contact support."
            ),
        )
        .await;
        Ok(account)
    }
}
