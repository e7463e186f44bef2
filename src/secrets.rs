//! The server key: 32 random bytes in a 0600 file. It keys device-password
//! hashes and encrypts TOTP secrets at rest. The store records the key's id,
//! and the server refuses to start with a missing or different key rather
//! than lock every user out of 2FA and device passwords.

use std::path::Path;

use anyhow::{Context, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::store::Store;

const KEY_ID: &str = "key_id";

pub struct ServerKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself.
        write!(f, "ServerKey({})", self.id)
    }
}

impl ServerKey {
    fn from_bytes(key: [u8; 32]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"mailwarden key id\0");
        ctx.update(&key);
        let id = ctx.finish().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { key, id }
    }

    /// A random key that is never written anywhere (benchmarks, tests).
    #[cfg(feature = "testing")]
    pub fn ephemeral() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("randomness");
        Self::from_bytes(bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA-256 under the server key.
    pub fn mac(&self, data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    /// A key for one purpose, so no two uses share key material.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.mac(format!("mailwarden derive\0{purpose}").as_bytes()));
        out
    }

    /// Encrypts with AES-256-GCM; `context` (e.g. the account address) must
    /// be given again to open it, so a sealed value cannot be moved to
    /// another account. Returns base64 of nonce and ciphertext.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        self.seal_for("seal", context, plaintext)
    }

    /// `seal` with a key of its own for `purpose`: a use that seals at
    /// anyone's request (every portal page view) does not wear the key
    /// that seals 2FA secrets.
    pub fn seal_for(&self, purpose: &str, context: &str, plaintext: &[u8]) -> String {
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.derive_key(purpose)).expect("a 32-byte AES key"),
        );
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("randomness");
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buffer,
        )
        .expect("AES-GCM sealing cannot fail for small inputs");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        STANDARD.encode(out)
    }

    /// Opens what `seal` made; `None` if it was changed or is for another context.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        self.open_for("seal", context, sealed)
    }

    /// Opens what `seal_for` made for `purpose`.
    pub fn open_for(&self, purpose: &str, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.derive_key(purpose)).ok()?);
        let mut buffer = ciphertext.to_vec();
        let plain = key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .ok()?;
        Some(plain.to_vec())
    }

    /// Loads an existing key for the CLI; never creates one.
    pub fn load_existing(path: &Path, store: &Store) -> anyhow::Result<Self> {
        match read_key(path)? {
            Some(key) => {
                let recorded = store.meta_get(KEY_ID).map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(id) = recorded
                    && id != key.id.as_bytes()
                {
                    bail!(
                        "secret key file {} (key {}) does not match the store (key {})",
                        path.display(),
                        key.id,
                        String::from_utf8_lossy(&id)
                    );
                }
                Ok(key)
            }
            None => bail!("secret key file {} is missing", path.display()),
        }
    }

    /// Loads the key for `serve`: creates it on the first start, refuses to
    /// start when the store was used with another key or the key is gone.
    pub fn load_or_create(path: &Path, store: &Store) -> anyhow::Result<Self> {
        let recorded = store
            .meta_get(KEY_ID)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let key = match read_key(path)? {
            Some(key) => key,
            None => {
                if let Some(id) = &recorded {
                    bail!(
                        "secret key file {} is missing, but the store holds secrets made with key {id}: \
                         restore that file from your backup",
                        path.display()
                    );
                }
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                if let Some(dir) = path.parent() {
                    crate::files::create_private_dir(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                crate::files::write_private(path, hex.as_bytes())?;
                tracing::info!(event = "secrets.key_created", path = %path.display());
                Self::from_bytes(bytes)
            }
        };
        match recorded {
            Some(id) if id != key.id => bail!(
                "secret key file {} (key {}) does not match the store, which was used with key {id}: \
                 restore the right key file",
                path.display(),
                key.id
            ),
            Some(_) => {}
            None => store
                .meta_set(KEY_ID, key.id.as_bytes())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        }
        Ok(key)
    }
}

/// The key file holds 64 hex digits. `None` if the file does not exist.
fn read_key(path: &Path) -> anyhow::Result<Option<ServerKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read secret key file {}", path.display()));
        }
    };
    let text = text.trim();
    let mut key = [0u8; 32];
    let valid = text.len() == 64
        && key.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        });
    if !valid {
        bail!("secret key file {} must hold 64 hex digits", path.display());
    }
    warn_if_readable_by_others(path);
    Ok(Some(ServerKey::from_bytes(key)))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            event = "secrets.key_permissions",
            path = %path.display(),
            "the secret key file is readable by other users: chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_must_match_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        let path = dir.path().join("secret.key");
        let first = ServerKey::load_or_create(&path, &store).unwrap();
        let again = ServerKey::load_or_create(&path, &store).unwrap();
        assert_eq!(first.id(), again.id());
        assert_eq!(first.mac(b"x"), again.mac(b"x"));

        std::fs::remove_file(&path).unwrap();
        let err = ServerKey::load_or_create(&path, &store).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");

        std::fs::write(&path, "ab".repeat(32)).unwrap();
        let err = ServerKey::load_or_create(&path, &store).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        std::fs::write(&path, "not hex").unwrap();
        assert!(ServerKey::load_or_create(&path, &store).is_err());
    }

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let key = ServerKey::from_bytes([7; 32]);
        let sealed = key.seal("alice@example.com", b"secret bytes");
        assert_eq!(
            key.open("alice@example.com", &sealed).unwrap(),
            b"secret bytes"
        );
        assert!(key.open("bob@example.com", &sealed).is_none());
        assert!(
            ServerKey::from_bytes([8; 32])
                .open("alice@example.com", &sealed)
                .is_none()
        );
        assert_ne!(
            sealed,
            key.seal("alice@example.com", b"secret bytes"),
            "nonces differ"
        );
    }
}
