//! RCPT TO: one recipient of the transaction, with its DSN parameters.

use smtp_proto::{
    MAIL_SMTPUTF8, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    RcptTo,
};

use super::Session;
use crate::address;
use crate::policy::{Decision, RcptContext};
use crate::smtp::reply::{self, Reply};
use crate::spool::Recipient;

const RCPT_NOTIFY: u64 =
    RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;

impl Session {
    pub(super) async fn rcpt(&mut self, to: RcptTo<String>) -> Reply {
        let hostname = self.shared.hostname.clone();
        let max_recipients = self.shared.limits.max_recipients;
        let (ip, policy) = (self.ip(), self.shared.policy.clone());
        let Some(identity) = self.identity.clone() else {
            return reply::AUTH_REQUIRED;
        };
        let Some(tx) = self.tx.as_mut() else {
            return reply::BAD_SEQUENCE;
        };
        if let Some(blocked) = &tx.blocked {
            return blocked.clone();
        }
        if to.flags & !RCPT_NOTIFY != 0 || to.rrvs != 0 {
            return reply::UNSUPPORTED_PARAMETER;
        }
        // RFC 3461 §4.1: NEVER stands alone.
        if to.flags & RCPT_NOTIFY_NEVER != 0 && to.flags & !RCPT_NOTIFY_NEVER != 0 {
            return reply::SYNTAX_ERROR;
        }
        if tx.mail_flags & MAIL_SMTPUTF8 == 0 && !to.address.is_ascii() {
            return reply::non_ascii_address(&to.address);
        }
        // smtp-proto reads `<Postmaster>` as an empty address.
        let recipient = if to.address.is_empty() || to.address.eq_ignore_ascii_case("postmaster") {
            format!("postmaster@{hostname}")
        } else {
            match address::normalize(&to.address) {
                Ok(a) if address::is_fully_qualified(&a) => a,
                _ => return reply::recipient_not_qualified(&to.address),
            }
        };
        if tx.recipients.len() >= max_recipients {
            return reply::TOO_MANY_RECIPIENTS;
        }
        let decision = policy
            .on_rcpt(&RcptContext {
                account: &identity.account,
                client_ip: ip,
                from: &tx.from,
                recipient: &recipient,
                accepted: tx.recipients.len(),
            })
            .await;
        match decision {
            Decision::Accept => {
                tx.recipients.push(Recipient {
                    address: recipient,
                    orcpt: to.orcpt,
                    notify: to.flags,
                });
                reply::RECIPIENT_OK
            }
            Decision::Defer => reply::RATE_LIMITED,
            Decision::Unavailable => reply::NOT_QUEUED,
            Decision::Block(b) => {
                let r = reply::blocked(&b, self.shared.support_contact.as_deref());
                tx.blocked = Some(r.clone());
                r
            }
        }
    }
}
