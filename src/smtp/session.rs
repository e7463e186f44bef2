//! The SMTP state machine for one connection (RFC 5321, 6409, 4954, 3207,
//! 3030). It parses with smtp-proto, asks the seams (`Authenticator`,
//! `Policy`, `Spool`, `Events`) and answers with the replies of `reply.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE,
    RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RcptTo, Request,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::SmtpShared;
use super::connection::{Connection, Line};
use super::data::{DataError, DataReader};
use super::headers::{self, NotOwned};
use super::reply::{self, Reply};
use super::sasl;
use crate::accounts::{AuthOutcome, AuthRequest, Identity};
use crate::address;
use crate::clock::rfc5322_date;
use crate::events::{Event, EventKind};
use crate::policy::{Decision, MailContext, MessageContext, RcptContext};
use crate::spool::{Envelope, Pending, Recipient};
use crate::store::StoreError;

/// RFC 5321 §4.5.3.1.4: 512 octets for a command line...
const MAX_COMMAND_LINE: usize = 512;
/// ...more for commands that carry addresses, parameters or SASL data.
const MAX_PARAMETER_LINE: usize = 2048;
/// A SASL continuation line.
const MAX_SASL_LINE: usize = 12288;

/// MAIL parameters of the extensions EHLO advertises (SIZE, 8BITMIME,
/// SMTPUTF8, DSN; AUTH= is read and ignored). smtp-proto parses more
/// (BINARYMIME, REQUIRETLS, FUTURERELEASE, ...): those get 555.
const MAIL_FLAGS_OFFERED: u64 =
    MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_RET_FULL | MAIL_RET_HDRS | MAIL_SMTPUTF8;
const RCPT_NOTIFY: u64 =
    RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;

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
    recipients: Vec<Recipient>,
    /// A policy block: it answers every later RCPT, DATA and BDAT.
    blocked: Option<Reply>,
    /// BDAT chunks received so far (raw).
    chunks: Vec<u8>,
    /// A refused BDAT chunk: later chunks are discarded with this reply.
    chunk_error: Option<Reply>,
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
    identity: Option<Identity>,
    tx: Option<Transaction>,
    bad_commands: u32,
    auth_failures: u32,
    pub messages: u32,
    started: Instant,
}

impl Session {
    pub fn new(shared: Arc<SmtpShared>, id: u64, peer: SocketAddr, tls: bool) -> Self {
        Self {
            shared,
            id,
            peer,
            tls,
            helo: None,
            identity: None,
            tx: None,
            bad_commands: 0,
            auth_failures: 0,
            messages: 0,
            started: Instant::now(),
        }
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

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
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
        self.identity = None;
        self.tx = None;
    }

    pub fn greet<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: &mut Connection<S>) {
        conn.queue(&reply::greeting(&self.shared.hostname));
    }

    /// Serves commands until the client quits, the connection fails, or
    /// STARTTLS is accepted.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> Flow {
        let command_timeout = self.shared.limits.command_timeout;
        let shutdown = self.shared.shutdown.clone();
        loop {
            // Shutting down: a transaction in progress may finish (the
            // server waits for it, up to its grace period); otherwise 421.
            if shutdown.is_cancelled() && self.tx.is_none() {
                conn.queue(&reply::SHUTTING_DOWN);
                return Flow::Close;
            }
            let stop = async {
                match self.tx.is_some() {
                    true => std::future::pending().await,
                    false => shutdown.cancelled().await,
                }
            };
            let read = tokio::select! {
                read = tokio::time::timeout(command_timeout, conn.read_line(MAX_PARAMETER_LINE)) => read,
                _ = stop => {
                    conn.queue(&reply::SHUTTING_DOWN);
                    return Flow::Close;
                }
            };
            let line = match read {
                Err(_elapsed) => {
                    conn.queue(&reply::TIMEOUT);
                    return Flow::Close;
                }
                Ok(Err(_)) | Ok(Ok(Line::Eof)) => return Flow::Close,
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

    /// Queues a reply, counting bad commands; `Close` once there were too many.
    fn answer<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        r: Reply,
    ) -> Flow {
        conn.queue(&r);
        if r.is_bad_command() {
            self.bad_commands += 1;
            if self.bad_commands >= self.shared.limits.max_bad_commands {
                conn.queue(&reply::TOO_MANY_ERRORS);
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
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(e) => return self.answer(conn, parse_error_reply(&e, line)),
        };
        let r = match request {
            Request::Ehlo { host } => self.ehlo(conn, host, true),
            Request::Helo { host } => self.ehlo(conn, host, false),
            Request::StartTls => {
                if self.tls {
                    reply::BAD_SEQUENCE
                } else {
                    conn.queue(&reply::READY_FOR_TLS);
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
                conn.queue(&reply::BYE);
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

    fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
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

    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        mechanism: u64,
        initial: String,
    ) -> Flow {
        if !self.tls {
            return self.answer(conn, reply::ENCRYPTION_REQUIRED);
        }
        if self.identity.is_some() {
            return self.answer(conn, reply::ALREADY_AUTHENTICATED);
        }
        if self.helo.is_none() || self.tx.is_some() {
            return self.answer(conn, reply::BAD_SEQUENCE);
        }
        let name = match mechanism {
            AUTH_PLAIN => "PLAIN",
            AUTH_LOGIN => "LOGIN",
            _ => return self.answer(conn, reply::AUTH_UNKNOWN_MECHANISM),
        };
        let credentials = match self.read_credentials(conn, mechanism, initial).await {
            Ok(c) => c,
            Err(SaslStop::Reply(r)) => return self.answer(conn, r),
            Err(SaslStop::Close) => return Flow::Close,
        };
        let outcome = self
            .shared
            .authenticator
            .authenticate(AuthRequest {
                authzid: &credentials.authzid,
                login: &credentials.authcid,
                secret: &credentials.password,
                ip: self.ip(),
                mechanism: name,
            })
            .await;
        let login = credentials.authcid.chars().take(254).collect::<String>();
        match outcome {
            AuthOutcome::Success(identity) => {
                self.identity = Some(identity);
                self.shared
                    .events
                    .emit(self.event(EventKind::AuthSuccess).mechanism(name));
                self.answer(conn, reply::AUTH_OK)
            }
            AuthOutcome::Failure { reason } => {
                self.auth_failures += 1;
                self.shared.events.emit(
                    self.event(EventKind::AuthFailure)
                        .account(login)
                        .mechanism(name)
                        .reason(reason)
                        .code(535),
                );
                conn.queue(&reply::AUTH_INVALID);
                if self.auth_failures >= self.shared.limits.max_auth_failures {
                    conn.queue(&reply::TOO_MANY_ERRORS);
                    return Flow::Close;
                }
                Flow::Continue
            }
            AuthOutcome::LockedOut => {
                self.shared.events.emit(
                    self.event(EventKind::AuthFailure)
                        .account(login)
                        .mechanism(name)
                        .reason("locked_out")
                        .code(454),
                );
                // Probing a lockout counts like a failed AUTH in this session.
                self.auth_failures += 1;
                conn.queue(&reply::AUTH_LOCKED_OUT);
                if self.auth_failures >= self.shared.limits.max_auth_failures {
                    conn.queue(&reply::TOO_MANY_ERRORS);
                    return Flow::Close;
                }
                Flow::Continue
            }
            AuthOutcome::Busy => {
                self.shared.events.emit(
                    self.event(EventKind::AuthFailure)
                        .account(login)
                        .mechanism(name)
                        .reason("busy")
                        .code(454),
                );
                self.answer(conn, reply::AUTH_BUSY)
            }
        }
    }

    /// Runs the SASL exchange (initial response or 334 challenges).
    async fn read_credentials<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        mechanism: u64,
        initial: String,
    ) -> Result<sasl::PlainCredentials, SaslStop> {
        let decode_error = || SaslStop::Reply(reply::AUTH_CANNOT_DECODE);
        if mechanism == AUTH_PLAIN {
            let response = match initial.as_str() {
                "" => self.sasl_exchange(conn, "").await?,
                "=" => return Err(decode_error()),
                _ => initial,
            };
            return sasl::decode_plain(&response).map_err(|_| decode_error());
        }
        let user = match initial.as_str() {
            "" => self.sasl_exchange(conn, "VXNlcm5hbWU6").await?,
            _ => initial,
        };
        let authcid = sasl::decode_base64_text(&user).map_err(|_| decode_error())?;
        let password = self.sasl_exchange(conn, "UGFzc3dvcmQ6").await?;
        let password = sasl::decode_base64_text(&password).map_err(|_| decode_error())?;
        if authcid.is_empty() || password.is_empty() {
            return Err(decode_error());
        }
        Ok(sasl::PlainCredentials {
            authzid: String::new(),
            authcid,
            password,
        })
    }

    /// Sends `334 <challenge>` and reads the client's response line.
    async fn sasl_exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        challenge: &str,
    ) -> Result<String, SaslStop> {
        conn.queue_raw(format!("334 {challenge}\r\n").as_bytes());
        let read = tokio::time::timeout(
            self.shared.limits.command_timeout,
            conn.read_line(MAX_SASL_LINE),
        )
        .await;
        let line = match read {
            Err(_) => {
                conn.queue(&reply::TIMEOUT);
                return Err(SaslStop::Close);
            }
            Ok(Err(_)) | Ok(Ok(Line::Eof)) => return Err(SaslStop::Close),
            Ok(Ok(Line::TooLong)) => return Err(SaslStop::Reply(reply::AUTH_LINE_TOO_LONG)),
            Ok(Ok(Line::Complete(line))) => line,
        };
        let text =
            String::from_utf8(line).map_err(|_| SaslStop::Reply(reply::AUTH_CANNOT_DECODE))?;
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            return Err(SaslStop::Reply(reply::AUTH_CANCELLED));
        }
        Ok(text.to_string())
    }

    async fn mail(&mut self, from: MailFrom<String>) -> Reply {
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
            recipients: Vec::new(),
            blocked: None,
            chunks: Vec::new(),
            chunk_error: None,
            _pending: self.shared.spool.pending(),
        };
        match decision {
            Decision::Accept => {
                self.tx = Some(tx);
                reply::SENDER_OK
            }
            Decision::Defer => reply::RATE_LIMITED,
            Decision::Block(b) => {
                let r = reply::blocked(&b, self.shared.support_contact.as_deref());
                tx.blocked = Some(r.clone());
                self.tx = Some(tx);
                r
            }
        }
    }

    async fn rcpt(&mut self, to: RcptTo<String>) -> Reply {
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
            Decision::Block(b) => {
                let r = reply::blocked(&b, self.shared.support_contact.as_deref());
                tx.blocked = Some(r.clone());
                r
            }
        }
    }

    /// The reply for DATA or BDAT when the transaction cannot take a message.
    fn transaction_refusal(&self) -> Option<Reply> {
        if self.identity.is_none() {
            return Some(reply::AUTH_REQUIRED);
        }
        match &self.tx {
            None => Some(reply::BAD_SEQUENCE),
            Some(tx) if tx.blocked.is_some() => tx.blocked.clone(),
            Some(tx) if tx.recipients.is_empty() => Some(reply::NO_VALID_RECIPIENTS),
            Some(_) => None,
        }
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>) -> Flow {
        if let Some(refusal) = self.transaction_refusal() {
            return self.answer(conn, refusal);
        }
        if self.tx.as_ref().is_some_and(|tx| !tx.chunks.is_empty()) {
            return self.answer(conn, reply::BAD_SEQUENCE);
        }
        conn.queue(&reply::START_DATA);
        let mut reader = DataReader::new(self.shared.limits.max_message_size);
        let mut body = Vec::new();
        let read = tokio::time::timeout(
            self.shared.limits.data_timeout,
            conn.read_data(&mut reader, &mut body),
        )
        .await;
        match read {
            Err(_) => {
                conn.queue(&reply::TIMEOUT);
                return Flow::Close;
            }
            Ok(Err(_)) | Ok(Ok(false)) => return Flow::Close,
            Ok(Ok(true)) => {}
        }
        let checked = reader.finish().map(|_| body);
        let r = self.finish_message(checked).await;
        self.answer(conn, r)
    }

    async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        size: usize,
        last: bool,
    ) -> Flow {
        let max = self.shared.limits.max_message_size;
        let refusal = self
            .transaction_refusal()
            .or_else(|| self.tx.as_ref().and_then(|tx| tx.chunk_error.clone()))
            .or_else(|| {
                let so_far = self.tx.as_ref().map_or(0, |tx| tx.chunks.len());
                (so_far as u64 + size as u64 > max).then_some(reply::MESSAGE_TOO_BIG)
            });
        let into = match (&refusal, self.tx.as_mut()) {
            (None, Some(tx)) => Some(&mut tx.chunks),
            _ => None,
        };
        let read =
            tokio::time::timeout(self.shared.limits.data_timeout, conn.read_chunk(size, into))
                .await;
        match read {
            Err(_) => {
                conn.queue(&reply::TIMEOUT);
                return Flow::Close;
            }
            Ok(Err(_)) | Ok(Ok(false)) => return Flow::Close,
            Ok(Ok(true)) => {}
        }
        if let Some(r) = refusal {
            // Remember a size refusal so the rest of this message is dropped too.
            if let Some(tx) = self.tx.as_mut() {
                if r == reply::MESSAGE_TOO_BIG {
                    tx.chunk_error = Some(r.clone());
                    tx.chunks = Vec::new();
                }
                if last && tx.blocked.is_none() {
                    self.tx = None;
                }
            }
            return self.answer(conn, r);
        }
        if !last {
            return self.answer(
                conn,
                Reply::owned(250, format!("2.0.0 {size} octets received")),
            );
        }
        let chunks = self
            .tx
            .as_mut()
            .map(|tx| std::mem::take(&mut tx.chunks))
            .unwrap_or_default();
        let body = normalize_line_endings(&chunks);
        let checked = if body
            .split(|&b| b == b'\n')
            .any(|l| l.len() > super::data::MAX_LINE_OCTETS + 1)
        {
            Err(DataError::LineTooLong)
        } else {
            Ok(body)
        };
        let r = self.finish_message(checked).await;
        self.answer(conn, r)
    }

    /// End of DATA or the last BDAT: check, ask the policy, queue durably.
    /// The transaction ends whatever the outcome.
    async fn finish_message(&mut self, body: Result<Vec<u8>, DataError>) -> Reply {
        let Some(tx) = self.tx.take() else {
            return reply::BAD_SEQUENCE;
        };
        let identity = self.identity.clone().expect("a transaction implies AUTH");
        let rejected = |this: &Self, r: Reply, reason: &str| {
            this.shared.events.emit(
                this.event(EventKind::MessageRejected)
                    .reason(reason)
                    .code(r.code)
                    .recipients(tx.recipients.len()),
            );
            r
        };
        let body = match body {
            Ok(body) => body,
            Err(DataError::TooBig) => return rejected(self, reply::MESSAGE_TOO_BIG, "size"),
            Err(DataError::LineTooLong) => {
                return rejected(self, reply::MESSAGE_LINE_TOO_LONG, "line_length");
            }
        };
        let inspection = match headers::inspect(&body, |a| identity.owns(a)) {
            Ok(inspection) => inspection,
            Err(NotOwned(address)) => {
                return rejected(self, reply::header_from_not_owned(&address), "header_from");
            }
        };
        let started = std::time::Instant::now();
        let id = self.shared.spool.new_id();
        let now = self.shared.clock.now();
        let mut message = self
            .received_header(&id.to_string(), &tx.recipients, now)
            .into_bytes();
        // RFC 6409 §8.2 and §8.3: the submission server supplies these.
        if !inspection.has_date {
            message.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(now)).as_bytes());
        }
        if !inspection.has_message_id {
            let hostname = &self.shared.hostname;
            message.extend_from_slice(format!("Message-ID: <{id}@{hostname}>\r\n").as_bytes());
        }
        message.extend_from_slice(&body);
        let recipients: Vec<String> = tx.recipients.iter().map(|r| r.address.clone()).collect();
        let decision = self
            .shared
            .policy
            .on_message(&MessageContext {
                account: &identity.account,
                client_ip: self.ip(),
                from: &tx.from,
                recipients: &recipients,
                message: &message,
            })
            .await;
        match decision {
            Decision::Accept => {}
            Decision::Defer => return rejected(self, reply::RATE_LIMITED, "policy_defer"),
            Decision::Block(b) => {
                let r = reply::blocked(&b, self.shared.support_contact.as_deref());
                return rejected(self, r, "policy_block");
            }
        }
        let size = message.len() as u64;
        let envelope = Envelope {
            from: tx.from.clone(),
            recipients: tx.recipients.clone(),
            account: identity.account.clone(),
            client_ip: self.ip(),
            received_at: self.shared.clock.unix(),
            size,
            mail_flags: tx.mail_flags,
            envid: tx.envid.clone(),
        };
        match self.shared.spool.insert(id, envelope, message).await {
            Ok(()) => {
                self.messages += 1;
                self.shared.events.emit(
                    self.event(EventKind::MessageAccepted)
                        .duration_ms(started.elapsed().as_millis() as u64)
                        .message_id(id.to_string())
                        .size(size)
                        .recipients(recipients.len()),
                );
                reply::queued(&id.to_string())
            }
            Err(StoreError::NoSpace(e)) => {
                tracing::error!(event = "store.error", error = %e, "cannot queue a message");
                rejected(self, reply::NO_STORAGE, "no_space")
            }
            Err(e) => {
                tracing::error!(event = "store.error", error = %e, "cannot queue a message");
                rejected(self, reply::NOT_QUEUED, "store")
            }
        }
    }

    /// `Received: from <helo> ([<ip>]) by <hostname> (mailwarden) with ESMTPSA
    /// id <id>; <date>`, with `for <rcpt>` only for exactly one recipient
    /// (several would reveal Bcc) and no login name (it would unmask aliases).
    fn received_header(
        &self,
        id: &str,
        recipients: &[Recipient],
        now: std::time::SystemTime,
    ) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let ip = match self.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let for_clause = match recipients {
            [only] => format!(" for <{}>", only.address),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}]) by {} (mailwarden) with ESMTPSA id {id}{for_clause}; {}\r\n",
            self.shared.hostname,
            rfc5322_date(now)
        )
    }
}

enum SaslStop {
    Reply(Reply),
    Close,
}

/// MAIL, RCPT and AUTH lines may be up to 2048 octets; others 512.
fn takes_long_line(line: &[u8]) -> bool {
    let verb = line.get(..4).unwrap_or_default();
    [&b"MAIL"[..], b"RCPT", b"AUTH"]
        .iter()
        .any(|v| verb.eq_ignore_ascii_case(v))
}

fn names_postmaster(line: &[u8]) -> bool {
    line.windows(12)
        .any(|w| w.eq_ignore_ascii_case(b"<postmaster>"))
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

fn parse_error_reply(e: &ParseError, line: &[u8]) -> Reply {
    match e {
        ParseError::UnknownCommand => reply::UNRECOGNIZED,
        ParseError::UnsupportedParameter { .. } => reply::UNSUPPORTED_PARAMETER,
        ParseError::ResponseTooLong => reply::LINE_TOO_LONG,
        // smtp-proto refuses `<bob>`; to a person that is an address
        // without a domain, which RFC 6409 §4.2 answers with 554.
        ParseError::InvalidSenderAddress => {
            domainless(line).map_or(reply::SYNTAX_ERROR, |a| reply::sender_not_qualified(&a))
        }
        ParseError::InvalidRecipientAddress => {
            domainless(line).map_or(reply::SYNTAX_ERROR, |a| reply::recipient_not_qualified(&a))
        }
        _ => reply::SYNTAX_ERROR,
    }
}

/// The `<...>` of a MAIL or RCPT line when it is a plain local part.
fn domainless(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let inner = text.split_once('<')?.1.split_once('>')?.0;
    let plain = !inner.is_empty()
        && inner.len() <= 64
        && inner
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"@<>\"".contains(c));
    plain.then(|| inner.to_string())
}

/// Bare CR or LF become CRLF (BDAT bodies; DATA does this as it reads).
fn normalize_line_endings(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 64);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_are_normalised() {
        assert_eq!(normalize_line_endings(b"a\rb\nc\r\nd"), b"a\r\nb\r\nc\r\nd");
    }

    #[test]
    fn domainless_addresses_are_named() {
        assert_eq!(domainless(b"RCPT TO:<bob>\r\n").as_deref(), Some("bob"));
        assert_eq!(domainless(b"MAIL FROM:<a b>\r\n"), None);
        assert_eq!(domainless(b"MAIL FROM:<a@>\r\n"), None);
        assert_eq!(domainless(b"MAIL FROM:bob\r\n"), None);
    }

    #[test]
    fn long_lines_only_for_address_commands() {
        assert!(takes_long_line(b"mail FROM:<a@b.c>\r\n"));
        assert!(takes_long_line(b"AUTH PLAIN xyz\r\n"));
        assert!(!takes_long_line(b"EHLO x\r\n"));
    }
}
