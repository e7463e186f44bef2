//! Short notices to the account's own address (and a copy to its confirmed
//! recovery address), queued like any message (from postmaster@<hostname>,
//! null envelope sender so nothing bounces).

use super::Accounts;
use crate::clock::rfc5322_date;
use crate::spool::{Envelope, Recipient};

impl Accounts {
    /// Best effort: a notice that cannot be queued is logged, and the change
    /// it reports stands. The account's confirmed recovery address gets a
    /// copy, so a thief who reads the mailbox cannot hide what he did.
    pub(crate) async fn notify(&self, address: &str, subject: &str, text: &str) {
        let mut to = vec![address.to_string()];
        if let Ok(Some(account)) = self.record(address).await
            && let Some(r) = account
                .recovery
                .as_ref()
                .filter(|r| r.confirmed_at.is_some())
        {
            to.push(r.address.clone());
        }
        self.queue_notice(&to, address, subject, text).await;
    }

    /// A notice about `account` to `recipient` alone (a recovery address's
    /// confirmation, a recovery link).
    pub(crate) async fn notify_only(
        &self,
        recipient: &str,
        account: &str,
        subject: &str,
        text: &str,
    ) {
        self.queue_notice(&[recipient.to_string()], account, subject, text)
            .await;
    }

    async fn queue_notice(&self, to: &[String], account: &str, subject: &str, text: &str) {
        let parts = &self.parts;
        let spool = &parts.spool;
        let id = spool.new_id();
        let postmaster = format!("postmaster@{}", parts.hostname);
        let message = format!(
            "From: Mail system <{postmaster}>\r\nTo: {}\r\nSubject: {subject}\r\n\
             Date: {}\r\nMessage-ID: <{id}.notice@{}>\r\nAuto-Submitted: auto-generated\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            to.iter()
                .map(|a| format!("<{a}>"))
                .collect::<Vec<_>>()
                .join(", "),
            rfc5322_date(parts.clock.now()),
            parts.hostname,
            text.replace('\n', "\r\n")
        );
        let envelope = Envelope {
            from: String::new(),
            recipients: to
                .iter()
                .map(|a| Recipient {
                    address: a.clone(),
                    orcpt: None,
                    notify: 0,
                })
                .collect(),
            account: postmaster,
            client_ip: std::net::Ipv6Addr::LOCALHOST.into(),
            received_at: parts.clock.unix(),
            size: message.len() as u64,
            mail_flags: 0,
            envid: None,
        };
        if let Err(e) = spool.insert(id, envelope, message.into_bytes()).await {
            tracing::error!(event = "notify.failed", account, error = %e);
        }
    }
}
