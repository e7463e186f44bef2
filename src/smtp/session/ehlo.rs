//! EHLO and HELO.

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::smtp::connection::Connection;
use crate::smtp::reply::{self, Reply};

impl Session {
    pub(super) fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        host: String,
        extended: bool,
    ) -> Reply {
        let host: String = host
            .chars()
            .filter(|c| !c.is_control() && !c.is_whitespace())
            .take(255)
            .collect();
        if host.is_empty() {
            return reply::SYNTAX_ERROR;
        }
        self.helo = Some(host);
        self.tx = None;
        let hostname = &self.shared.hostname;
        if !extended {
            return Reply::owned(250, hostname.clone());
        }
        let mut lines = vec![
            hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.shared.limits.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.tls {
            lines.push("AUTH PLAIN LOGIN".into());
            if self.shared.limits.legacy_auth_line {
                lines.push("AUTH=PLAIN LOGIN".into());
            }
        } else {
            lines.push("STARTTLS".into());
        }
        let (last, rest) = lines.split_last().expect("EHLO has lines");
        let mut text = String::new();
        for l in rest {
            text.push_str(&format!("250-{l}\r\n"));
        }
        // The caller queues the last line as a normal reply.
        conn.queue_raw(text.as_bytes());
        Reply::owned(250, last.clone())
    }
}
