//! EHLO and HELO. The name a client gives is never refused for its syntax:
//! Outlook sends its NetBIOS name (`JOHN_PC`), others a bare word or an
//! address without brackets. Only control characters and names over 255
//! octets are refused; the Received header quotes what it cannot write as
//! it is (`received_name`).

use std::borrow::Cow;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::smtp::connection::Connection;
use crate::smtp::reply::{self, Reply};

/// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
const MAX_NAME: usize = 255;

impl Session {
    pub(super) fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        host: String,
        extended: bool,
    ) -> Reply {
        if host.is_empty() || host.len() > MAX_NAME || host.contains(char::is_control) {
            return reply::SYNTAX_ERROR;
        }
        self.client.helo = Some(host.clone());
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

/// The EHLO name as the Received header's `from` clause writes it: as
/// given when it is a dot-atom (RFC 5322 §3.2.3: host names, NetBIOS names
/// such as `JOHN_PC`) or an address literal (`[192.0.2.1]`), else as a
/// quoted string with `"` and `\` escaped and anything outside printable
/// ASCII written as `\u{..}`, so the header stays 7-bit and parseable.
pub(super) fn received_name(name: &str) -> Cow<'_, str> {
    if is_dot_atom(name) || is_address_literal(name) {
        return Cow::Borrowed(name);
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            ' '..='~' => quoted.push(c),
            other => quoted.extend(other.escape_default()),
        }
    }
    quoted.push('"');
    Cow::Owned(quoted)
}

/// RFC 5322 atext.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// `[` dtext `]` (RFC 5322 §3.4.1), which covers RFC 5321's address literals.
fn is_address_literal(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inner| {
            !inner.is_empty() && inner.chars().all(|c| matches!(c, '!'..='Z' | '^'..='~'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_writes_valid_names_as_given_and_quotes_the_rest() {
        for name in [
            "client.example.com",
            "JOHN_PC",
            "localhost",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "192.0.2.1",
        ] {
            assert_eq!(received_name(name), name);
        }
        assert_eq!(received_name("a..b"), "\"a..b\"");
        assert_eq!(received_name("x;by=evil"), "\"x;by=evil\"");
        assert_eq!(received_name("(comment)"), "\"(comment)\"");
        assert_eq!(received_name("say\"hi\"\\"), "\"say\\\"hi\\\"\\\\\"");
        assert_eq!(received_name("b\u{fc}cher"), "\"b\\u{fc}cher\"");
        assert_eq!(received_name("[a[b]"), "\"[a[b]\"");
    }
}
