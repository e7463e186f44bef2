//! `account import`: accounts moved in with the password hashes they have,
//! from a Dovecot passwd-file (`user@domain:{SCHEME}hash:...`) or a CSV of
//! `address,{SCHEME}hash`. The whole file is checked first: one bad line
//! imports nothing and is named. Existing accounts are never overwritten:
//! one whose hash is the file's is unchanged (re-runs change nothing), any
//! other is skipped with the reason.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::scheme::{self, Scheme};
use super::{Account, AccountError, Accounts, Origin, normalize};
use crate::events::{Event, EventKind};

/// One account to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    /// Normalised.
    pub address: String,
    pub scheme: Scheme,
    /// The hash without its `{SCHEME}` prefix.
    pub hash: String,
}

/// A line that stops the import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub dry_run: bool,
    pub created: Vec<String>,
    /// Already there with this very hash.
    pub unchanged: Vec<String>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub address: String,
    pub reason: String,
}

/// Reads a passwd-file or a CSV (a line's first `:` or `,` decides).
/// Blank lines and `#` comments are ignored, as is a CSV header line
/// starting `address,`.
pub fn parse(text: &str) -> Result<Vec<Entry>, LineError> {
    let mut entries = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fail = |problem: String| LineError { line, problem };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if entries.is_empty() && trimmed.to_ascii_lowercase().starts_with("address,") {
            continue;
        }
        let (user, value) = split(trimmed).ok_or_else(|| {
            fail("expected `user@domain:{SCHEME}hash` or `address,{SCHEME}hash`".into())
        })?;
        let address = normalize(user).map_err(|e| fail(e.to_string()))?;
        let (scheme, hash) = scheme::parse(value).map_err(|e| fail(e.to_string()))?;
        if let Some(first) = seen.insert(address.clone(), line) {
            return Err(fail(format!("{address} is also on line {first}")));
        }
        entries.push(Entry {
            line,
            address,
            scheme,
            hash,
        });
    }
    Ok(entries)
}

/// The user and the `{SCHEME}hash` field of one line.
fn split(line: &str) -> Option<(&str, &str)> {
    let at = line.find([':', ','])?;
    let (user, rest) = (line[..at].trim(), &line[at + 1..]);
    let value = match line.as_bytes()[at] {
        // passwd-file: the hash is the second field; the rest is ignored.
        b':' => rest.split(':').next()?,
        // CSV: exactly two fields (argon2 parameters hold commas, so the
        // rest of the line is the hash).
        _ => rest,
    };
    Some((user, value.trim()))
}

impl Accounts {
    /// Imports parsed entries. `dry_run` reads only.
    pub async fn import(
        &self,
        entries: Vec<Entry>,
        dry_run: bool,
    ) -> Result<Summary, AccountError> {
        let mut summary = Summary {
            dry_run,
            ..Summary::default()
        };
        for entry in entries {
            match self.record(&entry.address).await? {
                Some(existing) => summary.skipped_or_same(&existing, entry),
                None if dry_run => summary.created.push(entry.address),
                None => self.import_one(entry, &mut summary).await?,
            }
        }
        Ok(summary)
    }

    async fn import_one(&self, entry: Entry, summary: &mut Summary) -> Result<(), AccountError> {
        let now = self.now();
        let mut account = Account::new(entry.address.clone(), entry.hash, now);
        account.record(
            now,
            &format!("imported ({})", entry.scheme.name()),
            &Origin::ADMIN,
        );
        let created = self.blocking(move |s| s.account_create(&account)).await?;
        self.cache.forget(&entry.address);
        if !created {
            summary.skipped.push(Skipped {
                address: entry.address,
                reason: "the address is another account's alias".into(),
            });
            return Ok(());
        }
        self.emit(
            Event::new(EventKind::AccountImported)
                .account(&entry.address)
                .reason(entry.scheme.name()),
        );
        summary.created.push(entry.address);
        Ok(())
    }
}

impl Summary {
    fn skipped_or_same(&mut self, existing: &Account, entry: Entry) {
        if existing.password_hash == entry.hash {
            self.unchanged.push(entry.address);
            return;
        }
        let imported = existing
            .history
            .iter()
            .any(|h| h.change.starts_with("imported"));
        let reason = match imported {
            true => "its credentials changed after the import",
            false => "the account exists and was not imported",
        };
        self.skipped.push(Skipped {
            address: entry.address,
            reason: reason.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str =
        "{SHA256-CRYPT}$5$uojFf9CKlItfs93F$L3nAHc1ICvNGoeXXFfBvu/4sr.vMcQmfWHlAXY2EUmA";
    const ARGON: &str = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$KnTh0lBfYbDrAYkJac5W4w$5kuwCyQuBWSyaTF61wKKmKC3YaNTB/wM/2RwEp1FQy8";

    #[test]
    fn reads_passwd_files_and_csv() {
        let text = format!(
            "# users\n\naddress,hash\nAlice@Example.COM:{SHA}:1000:1000::/home/alice::\nbob@example.com,{ARGON}\n"
        );
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].address, "alice@example.com");
        assert_eq!(entries[0].line, 4);
        assert_eq!(entries[0].scheme, Scheme::Sha256Crypt);
        assert!(entries[0].hash.starts_with("$5$"));
        assert_eq!(entries[1].scheme, Scheme::Argon2id);
        assert!(entries[1].hash.ends_with("FQy8"));
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = format!("a@example.com:{SHA}\nb@example.com:{{PLAIN}}secret123\n");
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            "line 2: scheme PLAIN not supported"
        );
        let dup = format!("a@example.com:{SHA}\nA@example.com,{SHA}\n");
        assert_eq!(
            parse(&dup).unwrap_err().to_string(),
            "line 2: a@example.com is also on line 1"
        );
        assert_eq!(parse("nonsense\n").unwrap_err().line, 1);
        assert_eq!(parse("not an address:{SHA}").unwrap_err().line, 1);
    }
}
