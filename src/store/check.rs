//! `mailwarden store check`: reads every table and record and says what is
//! wrong, table by table, then checks every page of the file against its
//! checksum (`verify`). A table the store library cannot read (a
//! corrupted page) is reported, not fatal: even a panic inside the library
//! is caught and named.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::record::account::Account;
use super::record::queue::QueueEntry;
use super::{ACCOUNTS, ALIASES, BODIES, META, POLICY, QUEUE, Store, StoreError};

/// What `store check` found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Rows read, by table.
    pub rows: Vec<(&'static str, u64)>,
    /// Each thing wrong, in words.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct Seen {
    accounts: HashMap<String, Vec<String>>,
    aliases: HashMap<String, String>,
    queue: HashSet<u64>,
    bodies: HashSet<u64>,
}

/// Runs one table's check; a library error or panic becomes a problem.
fn table(
    report: &mut CheckReport,
    name: &'static str,
    f: impl FnOnce(&mut CheckReport) -> Result<u64, StoreError>,
) {
    match catch_unwind(AssertUnwindSafe(|| f(report))) {
        Ok(Ok(n)) => report.rows.push((name, n)),
        Ok(Err(e)) => report
            .problems
            .push(format!("table {name}: cannot be read: {e}")),
        Err(panic) => {
            let what = crate::telemetry::health::panic_message(&*panic);
            report.problems.push(format!(
                "table {name}: the store library failed reading it: {what}"
            ));
        }
    }
}

impl Store {
    /// Reads every table in one read transaction and checks each record.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let tx = self.db()?.begin_read()?;
        let mut report = CheckReport::default();
        let mut seen = Seen::default();
        table(&mut report, "accounts", |r| {
            let t = tx.open_table(ACCOUNTS)?;
            let mut n = 0;
            for row in t.iter()? {
                let (k, v) = row?;
                n += 1;
                match serde_json::from_slice::<Account>(v.value()) {
                    Ok(a) if a.address == k.value() => {
                        seen.accounts.insert(a.address.clone(), a.aliases.clone());
                    }
                    Ok(a) => r.problems.push(format!(
                        "account {}: the record says it is {}",
                        k.value(),
                        a.address
                    )),
                    Err(e) => r
                        .problems
                        .push(format!("account {}: does not decode: {e}", k.value())),
                }
            }
            Ok(n)
        });
        table(&mut report, "aliases", |r| {
            let t = tx.open_table(ALIASES)?;
            let mut n = 0;
            for row in t.iter()? {
                let (k, v) = row?;
                n += 1;
                let (alias, account) = (k.value().to_string(), v.value().to_string());
                match seen.accounts.get(&account) {
                    None => r.problems.push(format!(
                        "alias {alias}: its account {account} does not exist"
                    )),
                    Some(list) if !list.contains(&alias) => r
                        .problems
                        .push(format!("alias {alias}: account {account} does not list it")),
                    Some(_) => {}
                }
                seen.aliases.insert(alias, account);
            }
            Ok(n)
        });
        for (account, aliases) in &seen.accounts {
            for alias in aliases {
                if seen.aliases.get(alias) != Some(account) {
                    report.problems.push(format!(
                        "account {account}: alias {alias} is missing from the alias table"
                    ));
                }
            }
        }
        table(&mut report, "queue", |r| {
            let t = tx.open_table(QUEUE)?;
            let mut n = 0;
            for row in t.iter()? {
                let (k, v) = row?;
                n += 1;
                let id = k.value();
                match serde_json::from_slice::<QueueEntry>(v.value()) {
                    Ok(e) if e.id.0 == id => {
                        seen.queue.insert(id);
                    }
                    Ok(e) => r
                        .problems
                        .push(format!("message {id}: the record says it is {}", e.id)),
                    Err(e) => r
                        .problems
                        .push(format!("message {id}: does not decode: {e}")),
                }
            }
            Ok(n)
        });
        table(&mut report, "bodies", |_| {
            let t = tx.open_table(BODIES)?;
            let mut n = 0;
            for row in t.iter()? {
                let (k, _) = row?;
                n += 1;
                seen.bodies.insert(k.value());
            }
            Ok(n)
        });
        for id in seen.queue.difference(&seen.bodies) {
            report
                .problems
                .push(format!("message {id}: its body is missing"));
        }
        for id in seen.bodies.difference(&seen.queue) {
            report
                .problems
                .push(format!("body {id}: no queued message holds it"));
        }
        table(&mut report, "policy", |r| {
            let t = tx.open_table(POLICY)?;
            let mut n = 0;
            for row in t.iter()? {
                let (k, v) = row?;
                n += 1;
                if serde_json::from_slice::<serde_json::Value>(v.value())
                    .map_or(true, |v| !v.is_object())
                {
                    r.problems
                        .push(format!("scorer state of {}: does not decode", k.value()));
                }
            }
            Ok(n)
        });
        table(&mut report, "meta", |r| {
            let t = tx.open_table(META)?;
            let mut n = 0;
            let mut keys = HashSet::new();
            for row in t.iter()? {
                let (k, _) = row?;
                n += 1;
                keys.insert(k.value().to_string());
            }
            for needed in ["key_id", "store_id"] {
                if !keys.contains(needed) {
                    r.problems.push(format!("meta: no {needed}"));
                }
            }
            Ok(n)
        });
        // The records above may come from the cache; the checksums of the
        // file's pages, as it holds them now.
        match self.verify() {
            Ok(super::verify::Verdict::Intact) => {}
            Ok(super::verify::Verdict::Damaged(what)) => {
                report.problems.push(format!("file: damaged: {what}"))
            }
            Err(e) => report
                .problems
                .push(format!("file: cannot be verified: {e}")),
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_inconsistency() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        let mut alice = Account::new("alice@example.com".into(), "x".into(), 1);
        alice.aliases = vec!["al@example.com".into()];
        let tx = store.db().unwrap().begin_write().unwrap();
        {
            let mut accounts = tx.open_table(ACCOUNTS).unwrap();
            let json = serde_json::to_vec(&alice).unwrap();
            accounts
                .insert("alice@example.com", json.as_slice())
                .unwrap();
            accounts
                .insert("bob@example.com", b"{not json".as_slice())
                .unwrap();
            let mut aliases = tx.open_table(ALIASES).unwrap();
            aliases
                .insert("ghost@example.com", "carol@example.com")
                .unwrap();
            let mut bodies = tx.open_table(BODIES).unwrap();
            bodies.insert(42u64, b"orphan".as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let report = store.check().unwrap();
        let problems = report.problems.join("\n");
        for expected in [
            "account bob@example.com: does not decode",
            "alias ghost@example.com: its account carol@example.com does not exist",
            "account alice@example.com: alias al@example.com is missing from the alias table",
            "body 42: no queued message holds it",
            "meta: no store_id",
        ] {
            assert!(
                problems.contains(expected),
                "{expected:?} not in:\n{problems}"
            );
        }
        assert!(!report.ok());
        assert!(!problems.contains("file:"), "{problems}");
    }

    #[test]
    fn names_a_page_that_fails_its_checksum_though_every_record_reads() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        let tx = store.db().unwrap().begin_write().unwrap();
        tx.open_table(BODIES)
            .unwrap()
            .insert(7u64, "body-seven-".repeat(1000).as_bytes())
            .unwrap();
        tx.commit().unwrap();
        let bytes = std::fs::read(store.path()).unwrap();
        let at = bytes.windows(11).position(|w| w == b"body-seven-").unwrap() as u64;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(store.path())
            .unwrap();
        file.write_all_at(&[0xA5; 4096], at & !4095).unwrap();
        // The records still read (from the cache): only the file check
        // sees it.
        let report = store.check().unwrap();
        assert_eq!(
            report
                .problems
                .iter()
                .filter(|p| p.starts_with("file: damaged: "))
                .count(),
            1,
            "{:?}",
            report.problems
        );
    }
}
