//! The SMTP state machine for one connection (RFC 5321, 6409, 4954, 3207,
//! 3030). It parses with smtp-proto, asks the seams (`Authenticator`,
//! `Policy`, `Spool`, `Events`) and answers with the replies of `reply.rs`.

mod auth;
mod data;
mod ehlo;
mod mail;
mod parse;
mod rcpt;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use self::parse::{names_postmaster, parse_command, takes_long_line};
use super::SmtpShared;
use super::connection::{Connection, Line};
use super::limits::Reservation;
use super::reply::{self, Reply};
use crate::accounts::Identity;
use crate::events::{Event, EventKind};
use crate::policy::ClientHints;
use crate::spool::{Pending, Recipient};

/// RFC 5321 §4.5.3.1.4: 512 octets for a command line...
const MAX_COMMAND_LINE: usize = 512;
/// ...more for commands that carry addresses, parameters or SASL data.
const MAX_PARAMETER_LINE: usize = 2048;

/// What the connection handler must do after `run` returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Reply 220 was sent: start TLS on the raw stream, then run again.
    StartTls,
    Close,
}

struct Transaction {
    /// Normalised reverse path; empty for `<>`.
    from: String,
    mail_flags: u64,
    envid: Option<String>,
    /// MAIL's SIZE=; 0 when not given.
    declared_size: u64,
    recipients: Vec<Recipient>,
    /// A policy block: it answers every later RCPT, DATA and BDAT.
    blocked: Option<Reply>,
    /// BDAT chunks received so far (raw).
    chunks: Vec<u8>,
    /// A refused BDAT chunk: later chunks are discarded with this reply.
    chunk_error: Option<Reply>,
    /// The BDAT chunks' share of the in-flight budget, from the first chunk
    /// until the message is queued or refused (DATA's is its reader's).
    reservation: Option<Reservation>,
    /// Tells the spool's group commit a message is probably coming.
    _pending: Option<Pending>,
}

pub struct Session {
    shared: Arc<SmtpShared>,
    id: u64,
    peer: SocketAddr,
    tls: bool,
    /// The EHLO/HELO name, once given.
    helo: Option<String>,
    /// The client program as the scorer sees it (HELO, TLS, AUTH).
    client: ClientHints,
    identity: Option<Identity>,
    tx: Option<Transaction>,
    bad_commands: u32,
    auth_failures: u32,
    /// Commands read before AUTH succeeded.
    unauthenticated_commands: u32,
    pub messages: u32,
    started: Instant,
    /// The stage the next refusal answers (`connect`, `helo`, `auth`,
    /// `mail`, `rcpt`, `data`, `bdat`, `other`).
    stage: &'static str,
    /// The next refusal is already told by an `auth.failure` or a
    /// `message.rejected` event.
    covered: std::cell::Cell<bool>,
}

impl Session {
    pub fn new(shared: Arc<SmtpShared>, id: u64, peer: SocketAddr, tls: bool) -> Self {
        Self {
            shared,
            id,
            peer,
            tls,
            helo: None,
            client: ClientHints::default(),
            identity: None,
            tx: None,
            bad_commands: 0,
            auth_failures: 0,
            unauthenticated_commands: 0,
            messages: 0,
            started: Instant::now(),
            stage: "connect",
            covered: std::cell::Cell::new(false),
        }
    }

    /// The reply about to be queued is already told by another event.
    fn covered(&self) {
        self.covered.set(true);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn ip(&self) -> IpAddr {
        self.peer.ip().to_canonical()
    }

    pub fn account(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.account.as_str())
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// How long the next read from the client may take: `command_timeout`,
    /// and before AUTH no longer than what is left of
    /// `unauthenticated_timeout`, counted from the connection.
    pub fn read_limit(&self) -> Duration {
        let limits = &self.shared.limits;
        match self.identity {
            Some(_) => limits.command_timeout,
            None => limits.command_timeout.min(
                limits
                    .unauthenticated_timeout
                    .saturating_sub(self.started.elapsed()),
            ),
        }
    }

    fn event(&self, kind: EventKind) -> Event {
        let e = Event::new(kind).session(self.id, self.ip());
        match self.account() {
            Some(a) => e.account(a),
            None => e,
        }
    }

    /// RFC 3207 §4.2: after TLS starts, everything learnt before is forgotten.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.client = ClientHints::default();
        self.identity = None;
        self.tx = None;
    }

    /// The TLS version and cipher suite the handshake agreed on.
    pub fn tls_negotiated(&mut self, version: Option<String>, cipher: Option<String>) {
        self.client.tls_version = version;
        self.client.tls_cipher = cipher;
    }

    pub fn greet<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Connection<S>) {
        self.reply(conn, &reply::greeting(&self.shared.hostname));
    }

    /// Serves commands until the client quits, the connection fails, or
    /// STARTTLS is accepted.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> Flow {
        let shutdown = self.shared.shutdown.clone();
        loop {
            // Shutting down: a transaction in progress may finish (the
            // server waits for it, up to its grace period); otherwise 421.
            if shutdown.is_cancelled() && self.tx.is_none() {
                self.reply(conn, &reply::SHUTTING_DOWN);
                return Flow::Close;
            }
            let stop = async {
                match self.tx.is_some() {
                    true => std::future::pending().await,
                    false => shutdown.cancelled().await,
                }
            };
            let read = tokio::select! {
                read = tokio::time::timeout(self.read_limit(), conn.read_line(MAX_PARAMETER_LINE)) => read,
                _ = stop => {
                    self.reply(conn, &reply::SHUTTING_DOWN);
                    return Flow::Close;
                }
            };
            let line = match read {
                Err(_elapsed) => {
                    self.reply(conn, &reply::TIMEOUT);
                    return Flow::Close;
                }
                Ok(Err(_)) | Ok(Ok(Line::Eof)) => return Flow::Close,
                // Before AUTH every line counts, whatever it holds.
                Ok(Ok(_)) if !self.count_unauthenticated() => {
                    self.reply(conn, &reply::TOO_MANY_ERRORS);
                    return Flow::Close;
                }
                Ok(Ok(Line::TooLong)) => {
                    if self.answer(conn, reply::LINE_TOO_LONG) == Flow::Close {
                        return Flow::Close;
                    }
                    continue;
                }
                Ok(Ok(Line::Complete(line))) => line,
            };
            if line.len() > MAX_COMMAND_LINE && !takes_long_line(&line) {
                if self.answer(conn, reply::LINE_TOO_LONG) == Flow::Close {
                    return Flow::Close;
                }
                continue;
            }
            // Boxed: a command's future (AUTH, DATA and the spool) is large,
            // and an idle session should not carry its space between commands.
            match Box::pin(self.command(conn, &line)).await {
                Flow::Continue => {}
                other => return other,
            }
        }
    }

    /// Counts a command read before AUTH; `false` once there were
    /// `unauthenticated_commands` already (the session then closes).
    fn count_unauthenticated(&mut self) -> bool {
        if self.identity.is_some() {
            return true;
        }
        if self.unauthenticated_commands >= self.shared.limits.unauthenticated_commands {
            return false;
        }
        self.unauthenticated_commands += 1;
        true
    }

    /// Queues a reply. Every refusal (4xx, 5xx) is also one `Refusal` event
    /// with its code and enhanced status: the one place replies leave.
    fn reply<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Connection<S>, r: &Reply) {
        let covered = self.covered.replace(false);
        if r.code >= 400 {
            let status = r.text.split_whitespace().next().unwrap_or_default();
            let mut event = self
                .event(EventKind::Refusal)
                .code(r.code)
                .reason(reply::refusal_reason(r));
            event.stage = Some(self.stage);
            event.enhanced = Some(status.to_string());
            event.covered = covered;
            self.shared.events.emit(event);
        }
        conn.queue(r);
    }

    /// Queues a reply, counting bad commands; `Close` once there were too many.
    fn answer<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        r: Reply,
    ) -> Flow {
        self.reply(conn, &r);
        if r.is_bad_command() {
            self.bad_commands += 1;
            if self.bad_commands >= self.shared.limits.max_bad_commands {
                self.reply(conn, &reply::TOO_MANY_ERRORS);
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        line: &[u8],
    ) -> Flow {
        let request = match parse_command(line) {
            Ok(request) => request,
            Err(r) => {
                self.stage = "other";
                return self.answer(conn, r);
            }
        };
        self.stage = match &request {
            Request::Ehlo { .. } | Request::Helo { .. } => "helo",
            Request::Auth { .. } => "auth",
            Request::Mail { .. } => "mail",
            Request::Rcpt { .. } => "rcpt",
            Request::Data => "data",
            Request::Bdat { .. } => "bdat",
            _ => "other",
        };
        let r = match request {
            Request::Ehlo { host } => self.ehlo(conn, host, true),
            Request::Helo { host } => self.ehlo(conn, host, false),
            Request::StartTls => {
                if self.tls {
                    reply::BAD_SEQUENCE
                } else {
                    self.reply(conn, &reply::READY_FOR_TLS);
                    return Flow::StartTls;
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(conn, mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from).await,
            // smtp-proto reads both `<Postmaster>` and `<>` as ""; only the
            // first is a valid forward path.
            Request::Rcpt { to } if to.address.is_empty() && !names_postmaster(line) => {
                reply::SYNTAX_ERROR
            }
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => return self.data(conn).await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(conn, chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                reply::RESET_OK
            }
            Request::Noop { .. } => reply::OK,
            Request::Quit => {
                self.reply(conn, &reply::BYE);
                return Flow::Close;
            }
            Request::Vrfy { .. } => reply::CANNOT_VRFY,
            Request::Help { .. } => Reply::new(
                214,
                "2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
            ),
            Request::Expn { .. } | Request::Etrn { .. } => reply::NOT_IMPLEMENTED,
            Request::Lhlo { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                reply::NOT_IMPLEMENTED
            }
        };
        self.answer(conn, r)
    }
}
