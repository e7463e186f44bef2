//! DKIM signing on the way out (mail-auth 0.13): one key per sending
//! domain (`[[delivery.dkim]]`), relaxed/relaxed, rsa-sha256 or
//! ed25519-sha256. A message is signed for the domain of its header From
//! (what DMARC aligns with); a message from a domain without a key leaves
//! unsigned. `SigningTransport` wraps any transport (relay or MX), so each
//! attempt is signed afresh.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::transport::{Outcome, Outgoing, Transport, header_section};
use crate::config::DkimConfig;

/// The header fields signed (when present). From is required; the rest are
/// the ones whose change would alter what the recipient sees or replies to.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// One domain's key and the DNS record that publishes it.
pub struct DomainKey {
    pub domain: String,
    pub selector: String,
    signer: Signer,
    /// `v=DKIM1; k=rsa; p=...`
    pub record: String,
}

impl DomainKey {
    /// The TXT record's name: `selector._domainkey.domain`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

/// Every configured key, by domain.
#[derive(Default)]
pub struct DkimKeys {
    keys: HashMap<String, DomainKey>,
}

impl DkimKeys {
    /// Reads every key file; an unreadable or unusable key is an error.
    pub fn load(config: &[DkimConfig]) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for c in config {
            let key = load_key(c).with_context(|| {
                format!(
                    "delivery.dkim for {}: cannot use key_file {}",
                    c.domain,
                    c.key_file.display()
                )
            })?;
            keys.insert(c.domain.clone(), key);
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether mail from `domain` gets signed.
    pub fn has(&self, domain: &str) -> bool {
        self.keys
            .contains_key(&domain.trim_end_matches('.').to_ascii_lowercase())
    }

    /// Every key, sorted by domain.
    pub fn keys(&self) -> Vec<&DomainKey> {
        let mut keys: Vec<_> = self.keys.values().collect();
        keys.sort_by(|a, b| a.domain.cmp(&b.domain));
        keys
    }

    /// The message with a DKIM-Signature field in front, or `None` when its
    /// header From has no key (or signing failed: it then goes unsigned).
    pub fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let domain = from_domain(message)?;
        let key = self.keys.get(&domain)?;
        let signature = match &key.signer {
            Signer::Rsa(s) => s.sign(message),
            Signer::Ed25519(s) => s.sign(message),
        };
        match signature {
            Ok(signature) => {
                let mut out = Vec::with_capacity(message.len() + 512);
                signature.write_header(&mut out);
                // mail-auth folds before the final `;` when the b= value
                // ends a line. RFC 6376 drops that whitespace with the b=
                // value, some verifiers (dkimpy) do not: never fold there.
                if out.ends_with(b"\r\n\t;\r\n") {
                    out.truncate(out.len() - 6);
                    out.extend_from_slice(b";\r\n");
                }
                out.extend_from_slice(message);
                Some(out)
            }
            Err(e) => {
                tracing::warn!(event = "delivery.dkim_error", domain = %domain, error = %e);
                None
            }
        }
    }
}

fn load_key(c: &DkimConfig) -> anyhow::Result<DomainKey> {
    use aws_lc_rs::signature::KeyPair;
    let pem = std::fs::read(&c.key_file).context("cannot read the file")?;
    let der = PrivateKeyDer::from_pem_slice(&pem).context("no PEM private key in the file")?;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let rsa = match &der {
        PrivateKeyDer::Pkcs1(k) => Some(
            aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|e| anyhow::anyhow!("not an RSA key: {e}"))?,
        ),
        PrivateKeyDer::Pkcs8(k) => aws_lc_rs::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()).ok(),
        _ => bail!("unsupported key type (use RSA or Ed25519)"),
    };
    let (signer, record) = match (rsa, &der) {
        (Some(pair), _) => {
            if pair.public_modulus_len() * 8 < 1024 {
                bail!("the RSA key is shorter than 1024 bits (use 2048)");
            }
            let spki = pair
                .public_key()
                .as_der()
                .map_err(|e| anyhow::anyhow!("cannot encode the public key: {e}"))?;
            let key = RsaKey::<Sha256>::from_key_der(der.clone_key())
                .map_err(|e| anyhow::anyhow!("not an RSA key: {e}"))?;
            (
                Signer::Rsa(configure(DkimSigner::from_key(key), c)),
                format!("v=DKIM1; k=rsa; p={}", b64(spki.as_ref())),
            )
        }
        (None, PrivateKeyDer::Pkcs8(k)) => {
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                .map_err(|e| anyhow::anyhow!("neither an RSA nor an Ed25519 key: {e}"))?;
            let record = format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key()));
            (
                Signer::Ed25519(configure(DkimSigner::from_key(key), c)),
                record,
            )
        }
        (None, _) => bail!("unsupported key type (use RSA or Ed25519)"),
    };
    Ok(DomainKey {
        domain: c.domain.clone(),
        selector: c.selector.clone(),
        signer,
        record,
    })
}

fn configure<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    c: &DkimConfig,
) -> DkimSigner<T, Done> {
    signer
        .domain(c.domain.clone())
        .selector(c.selector.clone())
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// The domain of the header From's first address, lower case.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let headers = mail_parser::MessageParser::default().parse_headers(header_section(message))?;
    let address = headers.from()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// Signs each message, then hands it to the transport inside.
pub struct SigningTransport {
    inner: Box<dyn Transport>,
    keys: Arc<DkimKeys>,
}

impl SigningTransport {
    /// Wraps every transport of a pool.
    pub fn wrap(
        transports: Vec<Box<dyn Transport>>,
        keys: Arc<DkimKeys>,
    ) -> Vec<Box<dyn Transport>> {
        transports
            .into_iter()
            .map(|inner| {
                Box::new(Self {
                    inner,
                    keys: keys.clone(),
                }) as Box<dyn Transport>
            })
            .collect()
    }
}

#[async_trait]
impl Transport for SigningTransport {
    async fn deliver(&mut self, message: &Outgoing<'_>) -> Vec<Outcome> {
        match self.keys.sign(message.body) {
            Some(signed) => {
                self.inner
                    .deliver(&Outgoing {
                        id: message.id,
                        envelope: message.envelope,
                        body: &signed,
                        recipients: message.recipients,
                    })
                    .await
            }
            None => self.inner.deliver(message).await,
        }
    }

    async fn idle(&mut self) {
        self.inner.idle().await
    }

    fn target(&self) -> String {
        self.inner.target()
    }
}
