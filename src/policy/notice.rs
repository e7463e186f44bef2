//! Operators hear of every block and unblock: a mail to `[policy]
//! abuse_contact` (through the spool, like any message) and, optionally, a
//! JSON POST to `[policy] webhook_url`, signed with HMAC-SHA-256 in
//! `X-Mailwarden-Signature: sha256=<hex>` and retried.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::clock::rfc5322_date;
use crate::config::PolicyConfig;
use crate::events::{Event, EventKind, Listener};
use crate::spool::{Envelope, Recipient, Spool};

pub struct Webhook {
    url: String,
    key: hmac::Key,
}

impl Webhook {
    pub fn from_config(c: &PolicyConfig) -> anyhow::Result<Option<Self>> {
        let (Some(url), Some(secret)) = (&c.webhook_url, &c.webhook_secret_file) else {
            return Ok(None);
        };
        let secret = std::fs::read(secret).map_err(|e| {
            anyhow::anyhow!(
                "cannot read policy.webhook_secret_file {}: {e}",
                secret.display()
            )
        })?;
        Ok(Some(Self {
            url: url.clone(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.trim_ascii()),
        }))
    }

    pub fn sign(&self, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    /// One POST; Ok when the receiver answered 2xx.
    async fn post(&self, body: &[u8]) -> anyhow::Result<()> {
        let uri: hyper::Uri = self.url.parse()?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("no host in {}", self.url))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        let request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                "host",
                uri.authority().map_or(host.clone(), |a| a.to_string()),
            )
            .header("content-type", "application/json")
            .header("x-mailwarden-signature", self.sign(body))
            .body(Full::new(Bytes::copy_from_slice(body)))?;
        let status = if https {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from(host)?, tcp)
                .await?;
            send(TokioIo::new(tls), request).await?
        } else {
            send(TokioIo::new(tcp), request).await?
        };
        anyhow::ensure!(status.is_success(), "the webhook answered {status}");
        Ok(())
    }
}

async fn send<T>(io: T, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<hyper::StatusCode>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let response =
        tokio::time::timeout(Duration::from_secs(30), sender.send_request(request)).await??;
    let status = response.status();
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// Watches the event stream for blocks and unblocks.
pub struct OperatorNotices {
    spool: Arc<dyn Spool>,
    hostname: String,
    abuse_contact: Option<String>,
    webhook: Option<Arc<Webhook>>,
    /// The notice mails being queued (`App::close` waits for them).
    tasks: TaskTracker,
}

/// Attempts: now, then after each of these waits.
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

impl OperatorNotices {
    pub fn new(
        spool: Arc<dyn Spool>,
        hostname: String,
        config: &PolicyConfig,
        tasks: TaskTracker,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            spool,
            hostname,
            abuse_contact: config.abuse_contact.clone(),
            webhook: Webhook::from_config(config)?.map(Arc::new),
            tasks,
        })
    }

    fn notify(&self, event: &Event) {
        let Some(account) = event.account.clone() else {
            return;
        };
        let what = event.kind.name().trim_start_matches("account.").to_string();
        let kind = event.scope.unwrap_or("");
        let reason = event.reason.clone().unwrap_or_default();
        let now = self.spool.now();
        if let Some(contact) = self.abuse_contact.clone() {
            let (spool, hostname) = (self.spool.clone(), self.hostname.clone());
            let subject = format!("mailwarden: {account} {what}");
            let text = format!(
                "Account: {account}\r\nEvent: {what}\r\nKind: {kind}\r\nReason: {reason}\r\n\r\nSee `mailwarden account show {account}` for the details.\r\n"
            );
            self.tasks.spawn(async move {
                let id = spool.new_id();
                let postmaster = format!("postmaster@{hostname}");
                let message = format!(
                    "From: mailwarden <{postmaster}>\r\nTo: <{contact}>\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{id}.abuse@{hostname}>\r\nAuto-Submitted: auto-generated\r\n\r\n{text}",
                    rfc5322_date(std::time::UNIX_EPOCH + Duration::from_secs(now))
                );
                let envelope = Envelope {
                    from: String::new(),
                    recipients: vec![Recipient {
                        address: contact,
                        orcpt: None,
                        notify: 0,
                    }],
                    account: postmaster,
                    client_ip: std::net::Ipv6Addr::LOCALHOST.into(),
                    received_at: now,
                    size: message.len() as u64,
                    mail_flags: 0,
                    envid: None,
                };
                if let Err(e) = spool.insert(id, envelope, message.into_bytes()).await {
                    tracing::error!(event = "policy.notice_failed", error = %e);
                }
            });
        }
        if let Some(webhook) = self.webhook.clone() {
            let body = serde_json::json!({
                "event": event.kind.name(),
                "account": account,
                "kind": kind,
                "reason": reason,
                "at": now,
            })
            .to_string();
            tokio::spawn(async move {
                let mut waits = RETRIES.iter();
                loop {
                    match webhook.post(body.as_bytes()).await {
                        Ok(()) => return,
                        Err(e) => match waits.next() {
                            Some(wait) => tokio::time::sleep(*wait).await,
                            None => {
                                tracing::error!(event = "policy.webhook_failed", error = %e);
                                return;
                            }
                        },
                    }
                }
            });
        }
    }
}

impl Listener for OperatorNotices {
    fn hear(&self, event: &Event) {
        if matches!(
            event.kind,
            EventKind::AccountBlocked | EventKind::AccountUnblocked
        ) && tokio::runtime::Handle::try_current().is_ok()
        {
            self.notify(event);
        }
    }
}
