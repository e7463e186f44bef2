//! AUTH (RFC 4954): PLAIN and LOGIN, over TLS only.

use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::accounts::{AuthOutcome, AuthRequest};
use crate::events::EventKind;
use crate::smtp::connection::{Connection, Line};
use crate::smtp::reply::{self, Reply};
use crate::smtp::sasl;

/// A SASL continuation line.
const MAX_SASL_LINE: usize = 12288;

impl Session {
    pub(super) async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
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
                service: "smtp",
            })
            .await;
        let login = credentials.authcid.chars().take(254).collect::<String>();
        // Failures and lockouts count towards `max_auth_failures`; Busy does not.
        let (reason, r, counts) = match outcome {
            AuthOutcome::Success(identity) => {
                self.client.mechanism = Some(name.to_string());
                self.client.credential = Some(
                    if identity.device.is_some() {
                        "device"
                    } else {
                        "password"
                    }
                    .to_string(),
                );
                self.identity = Some(identity);
                self.shared
                    .events
                    .emit(self.event(EventKind::AuthSuccess).mechanism(name));
                return self.answer(conn, reply::AUTH_OK);
            }
            AuthOutcome::Failure { reason } => (reason, reply::AUTH_INVALID, true),
            // Probing a lockout counts like a failed AUTH in this session.
            AuthOutcome::LockedOut => ("locked_out", reply::AUTH_LOCKED_OUT, true),
            AuthOutcome::Busy => ("busy", reply::AUTH_BUSY, false),
        };
        self.shared.events.emit(
            self.event(EventKind::AuthFailure)
                .account(login)
                .mechanism(name)
                .reason(reason)
                .code(r.code)
                .attempt(&credentials.password),
        );
        self.covered();
        if !counts {
            return self.answer(conn, r);
        }
        self.auth_failures += 1;
        self.reply(conn, &r);
        if self.auth_failures >= self.shared.limits.max_auth_failures {
            self.reply(conn, &reply::TOO_MANY_ERRORS);
            return Flow::Close;
        }
        Flow::Continue
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
        let read = tokio::time::timeout(self.read_limit(), conn.read_line(MAX_SASL_LINE)).await;
        let line = match read {
            Err(_) => {
                self.reply(conn, &reply::TIMEOUT);
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
}

enum SaslStop {
    Reply(Reply),
    Close,
}
