//! TLS for the SMTP listeners: rustls with the aws-lc-rs provider only, a PEM
//! certificate and key, or a self-signed ECDSA P-256 certificate generated
//! into the data folder on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::files;

pub const SELF_SIGNED_CERT: &str = "tls/self-signed-cert.pem";
pub const SELF_SIGNED_KEY: &str = "tls/self-signed-key.pem";

/// Installs aws-lc-rs as the process's crypto provider. Safe to call twice.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The certificate and key paths this configuration uses, generating the
/// self-signed pair if that is what it asks for and it is missing.
pub fn certificate_paths(config: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Ok((cert.clone(), key.clone())),
        _ => {
            let cert = config.server.data_dir.join(SELF_SIGNED_CERT);
            let key = config.server.data_dir.join(SELF_SIGNED_KEY);
            if !cert.exists() || !key.exists() {
                write_self_signed(&cert, &key, &config.server.hostname)?;
                tracing::warn!(
                    event = "tls.self_signed_generated",
                    cert = %cert.display(),
                    "generated a self-signed certificate: clients will not trust it; \
                     configure tls.cert and tls.key for production"
                );
            }
            Ok((cert, key))
        }
    }
}

/// A certificate chain (DER, leaf first) and its private key (DER).
pub type CertifiedPair = (Vec<Vec<u8>>, Vec<u8>);

/// The configured certificate chain and private key, when the config names
/// them (`None` for the self-signed development pair).
pub fn configured_pair(config: &Config) -> anyhow::Result<Option<CertifiedPair>> {
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate {} is not valid PEM", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read private key {}", key.display()))?;
    Ok(Some((chain, key.secret_der().to_vec())))
}

pub fn server_config(config: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    install_provider();
    let (cert_path, key_path) = certificate_paths(config)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("certificate {} is not valid PEM", cert_path.display()))?;
    if certs.is_empty() {
        bail!("certificate {} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read private key {}", key_path.display()))?;
    let tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "certificate {} and key {} do not form a usable pair",
                cert_path.display(),
                key_path.display()
            )
        })?;
    Ok(Arc::new(tls))
}

/// Writes a self-signed ECDSA P-256 certificate for `hostname` (plus
/// localhost and the loopback addresses); both files are mode 0600.
pub fn write_self_signed(cert_path: &Path, key_path: &Path, hostname: &str) -> anyhow::Result<()> {
    let mut names = vec![hostname.to_string()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .context("cannot generate a self-signed certificate")?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent() {
            files::create_private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    // Both live in the data folder, so both are private (the certificate
    // is public anyway, but nobody else needs to read it there).
    files::write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    files::write_private(cert_path, certified.cert.pem().as_bytes())?;
    Ok(())
}
