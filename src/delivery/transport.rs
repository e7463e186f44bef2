//! The seam between the queue runner (retries, per-recipient state, DSNs,
//! feedback) and the ways a message leaves: the smarthost relay now, direct
//! MX delivery later. A transport makes one attempt for some recipients of
//! one message and says, per recipient, what happened; it never touches the
//! spool.

use async_trait::async_trait;

use crate::spool::{Envelope, QueueId};

/// What the next hop answered, or why there was no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The reply code, when the next hop answered.
    pub code: Option<u16>,
    /// The enhanced status code, from the reply or chosen locally.
    pub status: Option<[u8; 3]>,
    /// The reply text (one line, printable ASCII), or the local reason.
    pub text: String,
    /// A short fixed word for events and metrics: `reply` (the next hop
    /// answered so), `connection`,
    /// `timeout`, `tls`, `auth`, `protocol`, `smtputf8`, `8bitmime`,
    /// `expired`.
    pub reason: &'static str,
    /// The host that answered (a DSN's `Remote-MTA`), when one did.
    pub remote_mta: Option<String>,
}

impl Diagnostic {
    /// A reply from the next hop.
    pub fn reply(code: u16, esc: [u8; 3], text: &str) -> Self {
        Self {
            code: Some(code),
            status: (esc[0] != 0).then_some(esc),
            text: clean(text),
            reason: "reply",
            remote_mta: None,
        }
    }

    /// A failure with no reply (connection, TLS, timeout...).
    pub fn local(reason: &'static str, text: impl AsRef<str>) -> Self {
        Self {
            code: None,
            status: None,
            text: clean(text.as_ref()),
            reason,
            remote_mta: None,
        }
    }

    /// A failure decided here, with its enhanced status code.
    pub fn local_status(reason: &'static str, status: [u8; 3], text: impl AsRef<str>) -> Self {
        Self {
            status: Some(status),
            ..Self::local(reason, text)
        }
    }

    /// Names the host that gave a reply (nothing for local reasons).
    pub fn from_host(mut self, host: &str) -> Self {
        if self.is_remote() {
            self.remote_mta = Some(host.to_string());
        }
        self
    }

    /// Whether the next hop itself answered.
    pub fn is_remote(&self) -> bool {
        self.code.is_some()
    }

    /// `550 5.1.1 No such user`, `451 Try later`, or the local reason.
    pub fn line(&self) -> String {
        match (self.code, self.status) {
            (Some(code), Some([a, b, c])) => format!("{code} {a}.{b}.{c} {}", self.text),
            (Some(code), None) => format!("{code} {}", self.text),
            (None, Some([a, b, c])) => format!("{a}.{b}.{c} {}", self.text),
            (None, None) => self.text.clone(),
        }
    }

    /// The enhanced status code for a DSN, defaulting from the reply class:
    /// `class` is 2, 4 or 5.
    pub fn status_for(&self, class: u8) -> String {
        match self.status {
            Some([a, b, c]) if a == class => format!("{a}.{b}.{c}"),
            Some([_, b, c]) => format!("{class}.{b}.{c}"),
            None => format!("{class}.0.0"),
        }
    }
}

/// One line of printable ASCII, at most 400 characters.
fn clean(text: &str) -> String {
    let mut out: String = text
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.len() > 400 {
        out.truncate(400);
    }
    out
}

/// What became of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took responsibility for it. `dsn_passed_on`: it also
    /// took the DSN request (NOTIFY, ORCPT), so success reports are its job.
    Delivered {
        reply: Diagnostic,
        dsn_passed_on: bool,
    },
    /// Try again later.
    Deferred(Diagnostic),
    /// Never try again: bounce.
    Failed(Diagnostic),
}

/// One message, as a transport sees it.
pub struct Outgoing<'a> {
    pub id: QueueId,
    pub envelope: &'a Envelope,
    /// The message exactly as queued (Received header included).
    pub body: &'a [u8],
    /// Indexes into `envelope.recipients` to try in this attempt.
    pub recipients: &'a [usize],
}

/// A way out. Each delivery worker owns one, so it may keep a connection
/// open between messages.
#[async_trait]
pub trait Transport: Send {
    /// One attempt for `message.recipients`: exactly one outcome for each,
    /// in the same order, each naming the host that answered (MX delivery
    /// talks to several).
    async fn deliver(&mut self, message: &Outgoing<'_>) -> Vec<Outcome>;
    /// Called when there has been nothing to send for a while: close
    /// connections kept for reuse.
    async fn idle(&mut self);
    /// For events: `relay:smtp.example.net:587`.
    fn target(&self) -> String;
}

impl Outcome {
    /// The diagnostic, whatever the outcome.
    pub fn diagnostic_mut(&mut self) -> &mut Diagnostic {
        match self {
            Self::Delivered { reply, .. } => reply,
            Self::Deferred(d) | Self::Failed(d) => d,
        }
    }
}

/// Whether `bytes` has any octet above 127.
pub fn has_8bit(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| *b >= 0x80)
}

/// The header section (without the empty line that ends it).
pub fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_lines() {
        let d = Diagnostic::reply(550, [5, 1, 1], "No such user\r\nreally");
        assert_eq!(d.line(), "550 5.1.1 No such user really");
        assert_eq!(d.status_for(5), "5.1.1");
        let d = Diagnostic::reply(451, [0, 0, 0], "later");
        assert_eq!(d.line(), "451 later");
        assert_eq!(d.status_for(4), "4.0.0");
        assert_eq!(d.status_for(5), "5.0.0");
        let d = Diagnostic::reply(451, [4, 4, 1], "busy");
        assert_eq!(d.status_for(5), "5.4.1");
        let d = Diagnostic::local("connection", "connection refused \u{e9}");
        assert_eq!(d.line(), "connection refused ?");
        assert!(!d.is_remote());
    }

    #[test]
    fn header_sections() {
        assert_eq!(
            header_section(b"A: b\r\nC: d\r\n\r\nbody\r\n"),
            b"A: b\r\nC: d\r\n"
        );
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert!(has_8bit("caf\u{e9}".as_bytes()));
        assert!(!has_8bit(b"plain"));
    }
}
