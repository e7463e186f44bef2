//! Short notices to the account's own address, queued like any message
//! (from postmaster@<hostname>, null envelope sender so nothing bounces).

use super::Accounts;
use crate::clock::rfc5322_date;
use crate::spool::{Envelope, Recipient};

impl Accounts {
    /// Best effort: a notice that cannot be queued is logged, and the change
    /// it reports stands.
    pub(crate) async fn notify(&self, address: &str, subject: &str, text: &str) {
        let parts = &self.parts;
        let spool = &parts.spool;
        let id = spool.new_id();
        let postmaster = format!("postmaster@{}", parts.hostname);
        let message = format!(
            "From: Mail system <{postmaster}>\r\nTo: <{address}>\r\nSubject: {subject}\r\n\
             Date: {}\r\nMessage-ID: <{id}.notice@{}>\r\nAuto-Submitted: auto-generated\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            rfc5322_date(parts.clock.now()),
            parts.hostname,
            text.replace('\n', "\r\n")
        );
        let envelope = Envelope {
            from: String::new(),
            recipients: vec![Recipient {
                address: address.to_string(),
                orcpt: None,
                notify: 0,
            }],
            account: postmaster,
            client_ip: std::net::Ipv6Addr::LOCALHOST.into(),
            received_at: parts.clock.unix(),
            size: message.len() as u64,
            mail_flags: 0,
            envid: None,
        };
        if let Err(e) = spool.insert(id, envelope, message.into_bytes()).await {
            tracing::error!(event = "notify.failed", account = address, error = %e);
        }
    }
}
