//! The `Policy` seam: asked at MAIL, at each RCPT and at the end of DATA
//! whether the account may send. The scorer (`scorer::Scorer`) answers:
//! blocked accounts get their 554, caps defer, the score blocks.

pub mod complaint;
pub mod evidence;
pub mod notice;
pub mod scorer;

use std::net::IpAddr;

use async_trait::async_trait;

use crate::accounts::BlockKind;

/// What the session knows when it asks.
pub struct MailContext<'a> {
    pub account: &'a str,
    pub client_ip: IpAddr,
    pub from: &'a str,
    /// SIZE= from MAIL, 0 if not given.
    pub declared_size: u64,
}

pub struct RcptContext<'a> {
    pub account: &'a str,
    pub client_ip: IpAddr,
    pub from: &'a str,
    pub recipient: &'a str,
    /// Recipients accepted so far in this transaction.
    pub accepted: usize,
}

pub struct MessageContext<'a> {
    pub account: &'a str,
    pub client_ip: IpAddr,
    pub from: &'a str,
    pub recipients: &'a [String],
    /// The message as it will be queued (Received header included).
    pub message: &'a [u8],
    /// What the session learnt about the client program.
    pub client: &'a ClientHints,
    /// What was read from the message, when it is replayed from a log
    /// (`policy replay`): used instead of reading `message`.
    pub features: Option<&'a scorer::Features>,
}

/// What a session knows about the program on the other end: with the
/// message's own headers, it tells the owner's mail program from a
/// thief's script. Every field is optional; a missing one is neutral.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHints {
    /// The EHLO/HELO name.
    pub helo: Option<String>,
    /// The TLS version and cipher suite, e.g. `TLSv1_3` and
    /// `TLS13_AES_256_GCM_SHA384`.
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    /// The SASL mechanism (`PLAIN`, `LOGIN`).
    pub mechanism: Option<String>,
    /// `password` or `device`.
    pub credential: Option<String>,
}

/// The answer; the SMTP session renders it as its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// A volume cap: a temporary refusal for the whole message (`451 4.7.1`).
    Defer,
    /// The shared store is out of reach: nothing can be decided, so
    /// nothing is taken (`451 4.3.0`).
    Unavailable,
    /// A block: its 554 answers MAIL and every later RCPT, DATA and BDAT of
    /// the transaction.
    Block(Blocked),
}

/// Which account is blocked, and by whom (the reply differs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub account: String,
    pub kind: BlockKind,
}

impl Decision {
    pub fn blocked(account: &str, kind: BlockKind) -> Self {
        Self::Block(Blocked {
            account: account.to_string(),
            kind,
        })
    }
}

#[async_trait]
pub trait Policy: Send + Sync + 'static {
    async fn on_mail(&self, ctx: &MailContext<'_>) -> Decision;
    async fn on_rcpt(&self, ctx: &RcptContext<'_>) -> Decision;
    async fn on_message(&self, ctx: &MessageContext<'_>) -> Decision;
}
