//! The bearer token Dovecot's Lua script sends: read from `[dovecot]
//! token_file` at start, compared in constant time.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// The admin API's check, the same constant-time comparison.
pub(super) use crate::admin::bearer_matches;

/// Reads the token: at least 32 characters, in a file no other user may
/// read (Dovecot's auth user reads it through its group).
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read `dovecot.token_file` {}", path.display()))?;
    if meta.permissions().mode() & 0o007 != 0 {
        bail!(
            "`dovecot.token_file` {} is readable by other users: chmod 0640 it",
            path.display()
        );
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `dovecot.token_file` {}", path.display()))?
        .trim()
        .to_string();
    if token.len() < 32 {
        bail!(
            "`dovecot.token_file` {} must hold at least 32 characters",
            path.display()
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, header};

    #[test]
    fn the_token_must_be_long_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        mode(0o644).unwrap();
        assert!(read_token(&path).is_err(), "world-readable");
        mode(0o640).unwrap();
        assert_eq!(
            read_token(&path).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        std::fs::write(&path, "short").unwrap();
        assert!(read_token(&path).is_err(), "too short");
        assert!(read_token(&dir.path().join("missing")).is_err());

        let mut headers = HeaderMap::new();
        assert!(!bearer_matches(&headers, "secret"));
        headers.insert(header::AUTHORIZATION, "Bearer secreT".parse().unwrap());
        assert!(!bearer_matches(&headers, "secret"));
        headers.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(bearer_matches(&headers, "secret"));
    }
}
