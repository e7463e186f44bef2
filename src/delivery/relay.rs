//! Smarthost delivery with mail-send: every message goes to one relay
//! (`[delivery.relay]`), over STARTTLS, implicit TLS or plaintext, with
//! optional AUTH. Each worker keeps its connection for the next message.
//!
//! Recipients are sent one RCPT at a time (not `send()`, which stops at the
//! first refusal), so each gets its own reply. The message bytes go out
//! unchanged: mail-send's `data()` appends CRLF.CRLF, so one trailing CRLF
//! is stripped first.
//!
//! Capabilities: a message that needs SMTPUTF8 (non-ASCII addresses or
//! header fields under SMTPUTF8) is bounced with 5.6.7 (address) or 5.6.9
//! (header) when the relay does not offer it; 8-bit content to a relay
//! without 8BITMIME is bounced with 5.6.3 (no conversion to 7 bit).
//! DSN parameters (RET, ENVID, NOTIFY, ORCPT) are passed on when the relay
//! offers DSN.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use mail_send::smtp::message::Parameters;
use mail_send::{Credentials, SmtpClient, SmtpClientBuilder};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_DSN, EXT_SIZE, EXT_SMTP_UTF8, EhloResponse, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::transport::{Diagnostic, Outcome, Outgoing, Transport, has_8bit, header_section};
use crate::config::{Config, RelayTls};
use crate::locks::Recover;

/// How to reach the relay; built once from the config.
pub struct RelaySettings {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    builder: SmtpClientBuilder<String>,
    credentials: Option<Credentials<String>>,
    pub timeout: Duration,
    pub helo: String,
    /// After a failed connection, attempts are deferred without trying for
    /// this long (so a dead relay does not cost a timeout per message).
    pub pause: Duration,
}

impl RelaySettings {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let relay = config
            .delivery
            .relay
            .as_ref()
            .context("delivery.mode = \"relay\" needs a [delivery.relay] section")?;
        crate::tls::install_provider();
        let connector = tls_connector(relay.verify_certificate, relay.ca_file.as_deref())?;
        let mut builder =
            SmtpClientBuilder::new_with_tls_connector(relay.host.clone(), relay.port, connector)
                .implicit_tls(relay.tls == RelayTls::Implicit)
                .timeout(relay.timeout)
                .say_ehlo(false);
        if !relay.verify_certificate {
            builder = builder.allow_invalid_certs();
        }
        let credentials = match (&relay.username, &relay.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).with_context(|| {
                    format!(
                        "cannot read delivery.relay.password_file {}",
                        file.display()
                    )
                })?;
                let password = password.trim_end_matches(['\r', '\n']).to_string();
                if password.is_empty() {
                    bail!("delivery.relay.password_file {} is empty", file.display());
                }
                Some(Credentials::Plain {
                    username: user.clone(),
                    secret: password,
                })
            }
            _ => None,
        };
        let helo = relay
            .helo_name
            .clone()
            .unwrap_or_else(|| config.server.hostname.clone());
        Ok(Self {
            host: relay.host.clone(),
            port: relay.port,
            tls: relay.tls,
            builder,
            credentials,
            timeout: relay.timeout,
            helo,
            pause: config.delivery.retry_schedule[0],
        })
    }
}

/// Certificate checks on by default: the system's roots (through
/// rustls-platform-verifier), plus `ca_file` when given.
fn tls_connector(
    verify: bool,
    ca_file: Option<&Path>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let config = if !verify {
        // Replaced by mail-send's accept-all verifier; any roots will do.
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    } else {
        let extra: Vec<CertificateDer<'static>> = match ca_file {
            Some(path) => CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read delivery.relay.ca_file {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("delivery.relay.ca_file {} is not valid PEM", path.display())
                })?,
            None => Vec::new(),
        };
        if ca_file.is_some() && extra.is_empty() {
            bail!("delivery.relay.ca_file holds no certificate");
        }
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
            .context(
                "cannot load CA certificates to check the relay's certificate \
                 (install the system's CA bundle, or set delivery.relay.ca_file)",
            )?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

pub(super) type Client = SmtpClient<Box<dyn Io>>;

/// An open SMTP session after EHLO (the relay's, or an MX's).
pub(super) struct Connection {
    pub(super) client: Client,
    pub(super) caps: EhloResponse<String>,
    /// A transaction may be open: RSET before the next MAIL.
    pub(super) dirty: bool,
    /// Who is at the other end, for diagnostics: "the relay", "the MX".
    pub(super) peer: &'static str,
}

/// One worker's way to the relay.
pub struct RelayTransport {
    settings: Arc<RelaySettings>,
    connection: Option<Connection>,
    /// Shared by every worker: the relay is unreachable until then.
    paused: Arc<Mutex<Option<(Instant, Diagnostic)>>>,
}

impl RelayTransport {
    /// `n` transports (one per worker) sharing the settings.
    pub fn pool(settings: Arc<RelaySettings>, n: usize) -> Vec<Box<dyn Transport>> {
        let paused = Arc::new(Mutex::new(None));
        (0..n)
            .map(|_| {
                Box::new(Self {
                    settings: settings.clone(),
                    connection: None,
                    paused: paused.clone(),
                }) as Box<dyn Transport>
            })
            .collect()
    }

    fn paused(&self) -> Option<Diagnostic> {
        match &*self.paused.lock_or_recover() {
            Some((until, why)) if Instant::now() < *until => Some(why.clone()),
            _ => None,
        }
    }

    async fn connect(&self) -> Result<Connection, Diagnostic> {
        let s = &self.settings;
        let opened = async {
            let mut client: Client = match s.tls {
                // mail-send writes a message in several small writes: without
                // TCP_NODELAY, Nagle and delayed ACKs cost 40 ms per message.
                RelayTls::None => {
                    let c = s.builder.connect_plain().await?;
                    c.stream.set_nodelay(true)?;
                    SmtpClient {
                        stream: Box::new(c.stream) as Box<dyn Io>,
                        timeout: c.timeout,
                    }
                }
                RelayTls::Starttls | RelayTls::Implicit => {
                    let c = s.builder.connect().await?;
                    c.stream.get_ref().0.set_nodelay(true)?;
                    SmtpClient {
                        stream: Box::new(c.stream) as Box<dyn Io>,
                        timeout: c.timeout,
                    }
                }
            };
            let caps = client.ehlo(&s.helo).await?;
            if let Some(credentials) = &s.credentials {
                client.authenticate(credentials, &caps).await?;
            }
            Ok::<_, mail_send::Error>(Connection {
                client,
                caps,
                dirty: false,
                peer: "the relay",
            })
        };
        match tokio::time::timeout(s.timeout, opened).await {
            Ok(Ok(c)) => {
                *self.paused.lock_or_recover() = None;
                Ok(c)
            }
            Ok(Err(e)) => Err(diagnose(&e, "the relay")),
            Err(_) => Err(Diagnostic::local(
                "timeout",
                format!("no answer from the relay within {:?}", s.timeout),
            )),
        }
    }
}

#[async_trait]
impl Transport for RelayTransport {
    async fn deliver(&mut self, message: &Outgoing<'_>) -> Vec<Outcome> {
        let mut outcomes = self.attempt(message).await;
        for o in &mut outcomes {
            let d = o.diagnostic_mut();
            if d.is_remote() && d.remote_mta.is_none() {
                d.remote_mta = Some(self.settings.host.clone());
            }
        }
        outcomes
    }

    async fn idle(&mut self) {
        if let Some(c) = self.connection.take() {
            // A relay that stopped answering must not hold the worker.
            let _ = tokio::time::timeout(Duration::from_secs(5), c.client.quit()).await;
        }
    }

    fn target(&self) -> String {
        format!("relay:{}:{}", self.settings.host, self.settings.port)
    }
}

impl RelayTransport {
    async fn attempt(&mut self, message: &Outgoing<'_>) -> Vec<Outcome> {
        let n = message.recipients.len();
        if let Some(why) = self.paused() {
            return vec![Outcome::Deferred(why); n];
        }
        let mut reused = self.connection.is_some();
        loop {
            let mut connection = match self.connection.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => c,
                    Err(why) => {
                        tracing::warn!(
                            event = "delivery.relay_unreachable",
                            relay = %self.target(),
                            error = %why.line()
                        );
                        *self.paused.lock_or_recover() =
                            Some((Instant::now() + self.settings.pause, why.clone()));
                        return vec![Outcome::Deferred(why); n];
                    }
                },
            };
            match transaction(&mut connection, message).await {
                Attempt::Done { outcomes, keep } => {
                    if keep {
                        self.connection = Some(connection);
                    }
                    return outcomes;
                }
                // A kept connection the relay has closed meanwhile: once more
                // on a new one.
                Attempt::Broken(_) if reused => reused = false,
                Attempt::Broken(why) => return vec![Outcome::Deferred(why); n],
            }
        }
    }
}

pub(super) enum Attempt {
    /// Every recipient has an outcome; `keep`: the connection is usable.
    Done { outcomes: Vec<Outcome>, keep: bool },
    /// The connection failed before MAIL was answered: nothing happened.
    Broken(Diagnostic),
}

/// One mail transaction for the message's recipients.
pub(super) async fn transaction(c: &mut Connection, message: &Outgoing<'_>) -> Attempt {
    let env = message.envelope;
    let caps = c.caps.capabilities;
    let n = message.recipients.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let address = |k: usize| env.recipients[message.recipients[k]].address.as_str();

    // What the message needs against what the relay offers.
    let eight_bit = has_8bit(message.body);
    let smtputf8 = env.mail_flags & MAIL_SMTPUTF8 != 0;
    let utf8_headers = smtputf8 && has_8bit(header_section(message.body));
    let utf8_rcpts: Vec<bool> = (0..n).map(|k| !address(k).is_ascii()).collect();
    let mut use_utf8 =
        smtputf8 && (!env.from.is_ascii() || utf8_headers || utf8_rcpts.iter().any(|u| *u));
    if use_utf8 && caps & EXT_SMTP_UTF8 == 0 {
        use_utf8 = false;
        let no_utf8 = |status, what: &str| {
            Outcome::Failed(Diagnostic::local_status(
                "smtputf8",
                status,
                format!("{} does not support SMTPUTF8, needed for {what}", c.peer),
            ))
        };
        for (k, slot) in outcomes.iter_mut().enumerate() {
            if !env.from.is_ascii() {
                *slot = Some(no_utf8([5, 6, 7], "the non-ASCII sender address"));
            } else if utf8_rcpts[k] {
                *slot = Some(no_utf8([5, 6, 7], "the non-ASCII recipient address"));
            } else if utf8_headers {
                *slot = Some(no_utf8([5, 6, 9], "the message's UTF-8 header fields"));
            }
        }
    }
    if eight_bit && caps & EXT_8BIT_MIME == 0 && !use_utf8 {
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            *slot = Some(Outcome::Failed(Diagnostic::local_status(
                "8bitmime",
                [5, 6, 3],
                format!(
                    "the message has 8-bit content and {} does not support 8BITMIME \
                     (no conversion to 7 bit is done)",
                    c.peer
                ),
            )));
        }
    }
    if outcomes.iter().all(Option::is_some) {
        return Attempt::Done {
            outcomes: outcomes.into_iter().flatten().collect(),
            keep: true,
        };
    }

    let data = message.body.strip_suffix(b"\r\n").unwrap_or(message.body);
    let dsn = caps & EXT_DSN != 0;
    let mut params = Parameters::new();
    if caps & EXT_SIZE != 0 {
        params.add(("SIZE".to_string(), (data.len() + 2).to_string()));
    }
    if eight_bit && caps & EXT_8BIT_MIME != 0 {
        params.add(("BODY".to_string(), "8BITMIME".to_string()));
    }
    if use_utf8 {
        params.add("SMTPUTF8".to_string());
    }
    if dsn {
        if env.mail_flags & MAIL_RET_FULL != 0 {
            params.add(("RET".to_string(), "FULL".to_string()));
        } else if env.mail_flags & MAIL_RET_HDRS != 0 {
            params.add(("RET".to_string(), "HDRS".to_string()));
        }
        if let Some(envid) = &env.envid {
            params.add(("ENVID".to_string(), xtext(envid)));
        }
    }

    if c.dirty {
        if let Err(e) = c.client.rset().await {
            return Attempt::Broken(diagnose(&e, c.peer));
        }
        c.dirty = false;
    }
    c.dirty = true;
    match c.client.mail_from(&env.from, &params).await {
        Ok(()) => {}
        Err(mail_send::Error::UnexpectedReply(r)) if r.code != 421 => {
            let why = Diagnostic::reply(r.code, r.esc, &r.message);
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(by_class(&why));
            }
            return Attempt::Done {
                outcomes: outcomes.into_iter().flatten().collect(),
                keep: true,
            };
        }
        Err(e) => return Attempt::Broken(diagnose(&e, c.peer)),
    }

    let mut accepted = Vec::new();
    for k in 0..n {
        if outcomes[k].is_some() {
            continue;
        }
        let recipient = &env.recipients[message.recipients[k]];
        let mut params = Parameters::new();
        if dsn {
            if let Some(notify) = notify_param(recipient.notify) {
                params.add(("NOTIFY".to_string(), notify));
            }
            if let Some(orcpt) = recipient.orcpt.as_ref().filter(|o| o.is_ascii()) {
                params.add(("ORCPT".to_string(), format!("rfc822;{}", xtext(orcpt))));
            }
        }
        match c.client.rcpt_to(&recipient.address, &params).await {
            Ok(()) => accepted.push(k),
            Err(mail_send::Error::UnexpectedReply(r)) if r.code != 421 => {
                outcomes[k] = Some(by_class(&Diagnostic::reply(r.code, r.esc, &r.message)));
            }
            Err(e) => return give_up(outcomes, diagnose(&e, c.peer)),
        }
    }
    if accepted.is_empty() {
        return Attempt::Done {
            outcomes: outcomes.into_iter().flatten().collect(),
            keep: true,
        };
    }

    match c.client.data(data).await {
        Ok(r) => {
            c.dirty = false;
            let reply = Diagnostic::reply(r.code, r.esc, &r.message);
            for k in accepted {
                outcomes[k] = Some(Outcome::Delivered {
                    reply: reply.clone(),
                    dsn_passed_on: dsn,
                });
            }
            Attempt::Done {
                outcomes: outcomes.into_iter().flatten().collect(),
                keep: true,
            }
        }
        Err(mail_send::Error::UnexpectedReply(r)) if r.code != 421 => {
            let why = by_class(&Diagnostic::reply(r.code, r.esc, &r.message));
            for k in accepted {
                outcomes[k] = Some(why.clone());
            }
            Attempt::Done {
                outcomes: outcomes.into_iter().flatten().collect(),
                keep: true,
            }
        }
        Err(e) => give_up(outcomes, diagnose(&e, c.peer)),
    }
}

/// The connection broke mid-transaction: whatever has no outcome yet is
/// deferred, and the connection is dropped.
fn give_up(outcomes: Vec<Option<Outcome>>, why: Diagnostic) -> Attempt {
    Attempt::Done {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Deferred(why.clone())))
            .collect(),
        keep: false,
    }
}

/// 5xx: permanent; anything else: try again.
fn by_class(why: &Diagnostic) -> Outcome {
    match why.code {
        Some(500..=599) => Outcome::Failed(why.clone()),
        _ => Outcome::Deferred(why.clone()),
    }
}

/// A mail-send error as a diagnostic; `peer`: "the relay", "the MX".
pub(super) fn diagnose(e: &mail_send::Error, peer: &str) -> Diagnostic {
    use mail_send::Error as E;
    match e {
        E::UnexpectedReply(r) => Diagnostic::reply(r.code, r.esc, &r.message),
        E::Io(e) => Diagnostic::local("connection", format!("connection to {peer} failed: {e}")),
        E::Tls(e) => Diagnostic::local("tls", format!("TLS with {peer} failed: {e}")),
        E::Timeout => Diagnostic::local("timeout", format!("{peer} did not answer in time")),
        E::AuthenticationFailed(r) => Diagnostic::local(
            "auth",
            format!(
                "{peer} refused our AUTH: {} {}",
                r.code,
                r.message.replace(['\r', '\n'], " ")
            ),
        ),
        E::UnsupportedAuthMechanism | E::MissingCredentials | E::Auth(_) => {
            Diagnostic::local("auth", format!("AUTH with {peer} failed: {e}"))
        }
        E::MissingStartTls => Diagnostic::local("tls", format!("{peer} does not offer STARTTLS")),
        E::InvalidTLSName => {
            Diagnostic::local("tls", format!("{peer}'s host is not a valid TLS name"))
        }
        E::UnparseableReply => Diagnostic::local(
            "connection",
            format!("{peer} closed the connection or sent an unreadable reply"),
        ),
        other => Diagnostic::local("protocol", other.to_string()),
    }
}

/// `NOTIFY=` value for the relay, from smtp-proto's bits.
fn notify_param(bits: u64) -> Option<String> {
    if bits & RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let words: Vec<&str> = [
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, w)| w)
    .collect();
    (!words.is_empty()).then(|| words.join(","))
}

/// RFC 3461 xtext: `+`, `=` and anything outside `!`..`~` as `+XX`.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_and_notify() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(notify_param(0), None);
        assert_eq!(notify_param(RCPT_NOTIFY_NEVER), Some("NEVER".into()));
        assert_eq!(
            notify_param(RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY),
            Some("FAILURE,DELAY".into())
        );
    }

    #[test]
    fn replies_map_to_outcomes() {
        assert!(matches!(
            by_class(&Diagnostic::reply(550, [5, 1, 1], "no")),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            by_class(&Diagnostic::reply(451, [4, 3, 0], "later")),
            Outcome::Deferred(_)
        ));
        assert!(matches!(
            by_class(&Diagnostic::local("timeout", "slow")),
            Outcome::Deferred(_)
        ));
    }
}
