//! DATA and BDAT (RFC 3030): the message, its Received header, the spool.

use std::borrow::Cow;
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::clock::rfc5322_date;
use crate::events::EventKind;
use crate::policy::{Decision, MessageContext};
use crate::smtp::connection::Connection;
use crate::smtp::data::{DataError, DataReader, RESERVATION_STEP};
use crate::smtp::headers::{self, NotOwned};
use crate::smtp::reply::{self, Reply};
use crate::spool::{Envelope, Recipient};
use crate::store::StoreError;

impl Session {
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

    /// What a message reserves of the in-flight budget before it is taken:
    /// the SIZE declared at MAIL, else a first step (`RESERVATION_STEP`,
    /// at most `max_message_size`). Either grows as the body arrives.
    ///
    /// Not `max_message_size` without SIZE: many clients never declare it,
    /// and 25 MiB each would let only 40 of them send at once under the
    /// default 1 GiB, whatever the size of their mail.
    fn expected_size(&self) -> u64 {
        match self.tx.as_ref().map_or(0, |tx| tx.declared_size) {
            0 => RESERVATION_STEP.min(self.shared.limits.max_message_size),
            declared => declared,
        }
    }

    /// The in-flight budget had no room: `452 4.3.1`, logged as a refused
    /// message.
    fn no_room(&self) -> Reply {
        let recipients = self.tx.as_ref().map_or(0, |tx| tx.recipients.len());
        self.shared.events.emit(
            self.event(EventKind::MessageRejected)
                .reason("memory_budget")
                .code(reply::NO_STORAGE.code)
                .recipients(recipients),
        );
        self.covered();
        reply::NO_STORAGE
    }

    pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> Flow {
        if let Some(refusal) = self.transaction_refusal() {
            return self.answer(conn, refusal);
        }
        if self.tx.as_ref().is_some_and(|tx| !tx.chunks.is_empty()) {
            return self.answer(conn, reply::BAD_SEQUENCE);
        }
        // Reserved before 354, so a refusal costs the client no upload.
        let Some(reservation) = self.shared.inflight.try_reserve(self.expected_size()) else {
            let r = self.no_room();
            return self.answer(conn, r);
        };
        self.reply(conn, &reply::START_DATA);
        let mut reader =
            DataReader::new(self.shared.limits.max_message_size).with_budget(reservation);
        let mut body = Vec::new();
        let read = tokio::time::timeout(
            self.shared.limits.data_timeout,
            conn.read_data(&mut reader, &mut body),
        )
        .await;
        match read {
            Err(_) => {
                self.reply(conn, &reply::TIMEOUT);
                return Flow::Close;
            }
            Ok(Err(_)) | Ok(Ok(false)) => return Flow::Close,
            Ok(Ok(true)) => {}
        }
        let checked = reader.finish().map(|_| body);
        let r = self.finish_message(checked).await;
        // Only now is the message queued or refused: the reader's
        // reservation goes back with it.
        drop(reader);
        self.answer(conn, r)
    }

    pub(super) async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        size: usize,
        last: bool,
    ) -> Flow {
        let max = self.shared.limits.max_message_size;
        let mut refusal = self
            .transaction_refusal()
            .or_else(|| self.tx.as_ref().and_then(|tx| tx.chunk_error.clone()))
            .or_else(|| {
                let so_far = self.tx.as_ref().map_or(0, |tx| tx.chunks.len());
                (so_far as u64 + size as u64 > max).then_some(reply::MESSAGE_TOO_BIG)
            });
        if refusal.is_none() && !self.reserve_chunk(size) {
            refusal = Some(self.no_room());
        }
        let into = match (&refusal, self.tx.as_mut()) {
            (None, Some(tx)) => Some(&mut tx.chunks),
            _ => None,
        };
        let read =
            tokio::time::timeout(self.shared.limits.data_timeout, conn.read_chunk(size, into))
                .await;
        match read {
            Err(_) => {
                self.reply(conn, &reply::TIMEOUT);
                return Flow::Close;
            }
            Ok(Err(_)) | Ok(Ok(false)) => return Flow::Close,
            Ok(Ok(true)) => {}
        }
        if let Some(r) = refusal {
            // Remember a size or memory refusal so the rest of this message
            // is dropped too.
            if let Some(tx) = self.tx.as_mut() {
                if r == reply::MESSAGE_TOO_BIG || r == reply::NO_STORAGE {
                    tx.chunk_error = Some(r.clone());
                    tx.chunks = Vec::new();
                    tx.reservation = None;
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
        drop(chunks);
        let checked = if body
            .split(|&b| b == b'\n')
            .any(|l| l.len() > crate::smtp::data::MAX_LINE_OCTETS + 1)
        {
            Err(DataError::LineTooLong)
        } else {
            Ok(body)
        };
        let r = self.finish_message(checked).await;
        self.answer(conn, r)
    }

    /// Makes the transaction's reservation cover its chunks so far plus
    /// `size` more; the first chunk reserves `expected_size` or what it
    /// brings, whichever is more. `false` when the in-flight budget has no
    /// room.
    fn reserve_chunk(&mut self, size: usize) -> bool {
        let expected = self.expected_size();
        let budget = self.shared.inflight.clone();
        let Some(tx) = self.tx.as_mut() else {
            return true;
        };
        let needed = tx.chunks.len() as u64 + size as u64;
        match &mut tx.reservation {
            Some(r) => r.grow_to(needed),
            None => match budget.try_reserve(expected.max(needed)) {
                Some(r) => {
                    tx.reservation = Some(r);
                    true
                }
                None => false,
            },
        }
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
            this.covered();
            r
        };
        let body = match body {
            Ok(body) => body,
            Err(DataError::TooBig) => return rejected(self, reply::MESSAGE_TOO_BIG, "size"),
            Err(DataError::LineTooLong) => {
                return rejected(self, reply::MESSAGE_LINE_TOO_LONG, "line_length");
            }
            Err(DataError::NoRoom) => return rejected(self, reply::NO_STORAGE, "memory_budget"),
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
        // One copy of the message from here on, while it waits for the
        // policy and the commit.
        drop(body);
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
                client: &self.client,
                features: None,
            })
            .await;
        match decision {
            Decision::Accept => {}
            Decision::Defer => return rejected(self, reply::RATE_LIMITED, "policy_defer"),
            Decision::Unavailable => {
                return rejected(self, reply::NOT_QUEUED, "store_unavailable");
            }
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
                        .took(started.elapsed())
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
        let helo = self
            .helo
            .as_deref()
            .map_or(Cow::Borrowed("unknown"), super::ehlo::received_name);
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
}
