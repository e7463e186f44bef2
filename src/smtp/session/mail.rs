//! MAIL FROM: the sender must be the account's, and the parameters offered.

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
};

use super::{Session, Transaction};
use crate::address;
use crate::policy::{Decision, MailContext};
use crate::smtp::reply::{self, Reply};

/// MAIL parameters of the extensions EHLO advertises (SIZE, 8BITMIME,
/// SMTPUTF8, DSN; AUTH= is read and ignored). smtp-proto parses more
/// (BINARYMIME, REQUIRETLS, FUTURERELEASE, ...): those get 555.
const MAIL_FLAGS_OFFERED: u64 =
    MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_RET_FULL | MAIL_RET_HDRS | MAIL_SMTPUTF8;

impl Session {
    pub(super) async fn mail(&mut self, from: MailFrom<String>) -> Reply {
        let Some(identity) = self.identity.clone() else {
            return reply::AUTH_REQUIRED;
        };
        if self.helo.is_none() || self.tx.is_some() {
            return reply::BAD_SEQUENCE;
        }
        if !mail_parameters_offered(&from) {
            return reply::UNSUPPORTED_PARAMETER;
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return reply::non_ascii_address(&from.address);
        }
        if from.size as u64 > self.shared.limits.max_message_size {
            return reply::MESSAGE_TOO_BIG;
        }
        // RFC 6409 §3.2: the null sender is allowed.
        let sender = if from.address.is_empty() {
            String::new()
        } else {
            match address::normalize(&from.address) {
                Ok(a) if address::is_fully_qualified(&a) => a,
                _ => return reply::sender_not_qualified(&from.address),
            }
        };
        if !sender.is_empty() && !identity.owns(&sender) {
            return reply::sender_not_owned(&from.address);
        }
        let decision = self
            .shared
            .policy
            .on_mail(&MailContext {
                account: &identity.account,
                client_ip: self.ip(),
                from: &sender,
                declared_size: from.size as u64,
            })
            .await;
        let mut tx = Transaction {
            from: sender,
            mail_flags: from.flags,
            envid: from.env_id,
            declared_size: from.size as u64,
            recipients: Vec::new(),
            blocked: None,
            chunks: Vec::new(),
            chunk_error: None,
            reservation: None,
            _pending: self.shared.spool.pending(),
        };
        match decision {
            Decision::Accept => {
                self.tx = Some(tx);
                reply::SENDER_OK
            }
            Decision::Defer => reply::RATE_LIMITED,
            Decision::Unavailable => reply::NOT_QUEUED,
            Decision::Block(b) => {
                let r = reply::blocked(&b, self.shared.support_contact.as_deref());
                tx.blocked = Some(r.clone());
                self.tx = Some(tx);
                r
            }
        }
    }
}

fn mail_parameters_offered(from: &MailFrom<String>) -> bool {
    from.flags & !MAIL_FLAGS_OFFERED == 0
        && from.trans_id.is_none()
        && from.by == 0
        && from.solicit.is_none()
        && from.mtrk.is_none()
        && from.hold_for == 0
        && from.hold_until == 0
        && from.mt_priority == 0
}
