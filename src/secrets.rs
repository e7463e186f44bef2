//! The server key: 32 random bytes in a 0600 file. It keys device-password
//! hashes and encrypts TOTP secrets at rest. The store records the key's id,
//! and the server refuses to start with a missing or different key rather
//! than lock every user out of 2FA and device passwords.

use std::path::Path;

use anyhow::{Context, bail};
use aws_lc_rs::{digest, hmac};

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

    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA-256 under the server key.
    pub fn mac(&self, data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        hmac::sign(&key, data).as_ref().to_vec()
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
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                crate::tls::write_private(path, hex.as_bytes())?;
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
}
