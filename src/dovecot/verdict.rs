//! One Dovecot login judged: the SMTP AUTH rules (`Authenticator`: main
//! password only while 2FA is off, device passwords always, the shared
//! lockouts counted on the client's address), then the block rule for
//! reading mail: during a policy block only a network that may lift it
//! (trusted at the abuse start, not an abuse network) reads mail.

use std::net::IpAddr;

use super::DovecotParts;
use crate::accounts::{AuthOutcome, AuthRequest, BlockKind};
use crate::events::{Event, EventKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The canonical address Dovecot logs the user in as.
    Ok(String),
    /// Every failure alike.
    Failed,
    /// A lockout or a full argon2 queue.
    TryLater,
}

/// Dovecot's service names, as the events' `mechanism`.
fn service(name: &str) -> &'static str {
    match name {
        "imap" => "imap",
        "pop3" => "pop3",
        _ => "dovecot",
    }
}

pub(super) async fn judge(
    parts: &DovecotParts,
    user: &str,
    password: &str,
    rip: &str,
    service_name: &str,
) -> Verdict {
    let service = service(service_name);
    // Without the client's address nothing could be counted.
    let Ok(ip) = rip.parse::<IpAddr>() else {
        return Verdict::Failed;
    };
    let outcome = parts
        .authenticator
        .authenticate(AuthRequest {
            authzid: "",
            login: user,
            secret: password,
            ip,
            mechanism: "PLAIN",
            service,
        })
        .await;
    let login: String = user.chars().take(254).collect();
    let event = |kind, reason: &str| {
        let mut e = Event::new(kind)
            .account(login.clone())
            .mechanism(service)
            .reason(reason);
        e.ip = Some(ip);
        e
    };
    let identity = match outcome {
        AuthOutcome::Success(identity) => identity,
        AuthOutcome::Failure { reason } => {
            parts
                .events
                .emit(event(EventKind::AuthFailure, reason).attempt(password));
            return Verdict::Failed;
        }
        AuthOutcome::LockedOut => {
            parts
                .events
                .emit(event(EventKind::AuthFailure, "locked_out"));
            return Verdict::TryLater;
        }
        AuthOutcome::Busy => {
            parts.events.emit(event(EventKind::AuthFailure, "busy"));
            return Verdict::TryLater;
        }
    };
    if let Some(reason) = refused_by_block(parts, &identity.account, ip).await {
        parts.events.emit(event(EventKind::AuthFailure, reason));
        return Verdict::Failed;
    }
    parts.events.emit(event(EventKind::AuthSuccess, "ok"));
    Verdict::Ok(identity.account)
}

/// Why a block refuses reading mail from `ip`, if it does.
async fn refused_by_block(parts: &DovecotParts, address: &str, ip: IpAddr) -> Option<&'static str> {
    let account = match parts.accounts.record(address).await {
        Ok(Some(account)) => account,
        // The account went away between the two reads.
        _ => return Some("unknown_account"),
    };
    let block = account.block.as_ref()?;
    match block.kind {
        BlockKind::Operator if parts.refuse_during_operator_block => Some("operator_block"),
        BlockKind::Operator => None,
        BlockKind::Policy if parts.accounts.qualifies_from(&account, ip) => None,
        BlockKind::Policy => Some("blocked_network"),
    }
}
