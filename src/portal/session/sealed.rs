//! Sessions in the shared database (several nodes behind one HTTP
//! balancer): a browser's next request may reach any node.
//!
//! The database never holds a usable secret: a row is named by a keyed
//! hash of the cookie's value (a copy of the table signs nobody in), and
//! everything else in the session (the CSRF token, notices, one-time
//! values such as a new device password) is sealed with the server key,
//! bound to that row. One-time values are taken in a change that holds
//! the row's lock, so they are gone from the database at first read.
//!
//! A database error is logged and reads as "no such session": the browser
//! is asked to sign in again, and nothing is changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

use super::{
    Auth, Backend, Limits, MAX_SESSIONS, Notice, NoticeKind, Session, Unavailable, section,
};
use crate::secrets::ServerKey;
use crate::store::StoreError;
use crate::store::shared::{SessionRow, SessionRows};

/// Expired rows are deleted at most this often (seconds), by the node
/// that creates a session then...
const PURGE_EVERY: u64 = 60;
/// ...or after this many new sessions on this node: anyone may open the
/// sign-in page, so anonymous rows are capped (`MAX_SESSIONS`, the most
/// recently used stay) before they can pile up.
const PURGE_AFTER_NEW: u64 = 1_000;

/// The sealing key's purpose (`ServerKey::derive_key`).
const SEAL_PURPOSE: &str = "portal sessions";

pub(super) struct Sealed {
    rows: Arc<dyn SessionRows>,
    limits: Limits,
    /// Names rows after the cookie's value.
    ids: hmac::Key,
    /// Seals the rest (AES-256-GCM with a key derived from the server
    /// key for sessions only; `ServerKey::seal_for`).
    key: Arc<ServerKey>,
    last_purge: AtomicU64,
    /// New sessions since the last purge.
    created: AtomicU64,
}

/// The session as sealed: all but its id and times (the row has those).
#[derive(Serialize, Deserialize)]
struct Stored {
    csrf: String,
    auth: Auth,
    notices: Vec<StoredNotice>,
    new_device: Option<(String, String)>,
    device_profile: Option<(String, String)>,
    show_qr: bool,
    enrolment: Option<u64>,
    seen_block: Option<u64>,
    last_section: Option<String>,
    recovery_for: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredNotice {
    kind: NoticeKind,
    title: String,
    detail: Option<String>,
    at: Option<String>,
}

impl Stored {
    fn of(s: &Session) -> Self {
        Self {
            csrf: s.csrf.clone(),
            auth: s.auth.clone(),
            notices: s
                .notices
                .iter()
                .map(|n| StoredNotice {
                    kind: n.kind,
                    title: n.title.clone(),
                    detail: n.detail.clone(),
                    at: n.at.map(str::to_string),
                })
                .collect(),
            new_device: s.new_device.clone(),
            device_profile: s.device_profile.clone(),
            show_qr: s.show_qr,
            enrolment: s.enrolment,
            seen_block: s.seen_block,
            last_section: s.last_section.map(str::to_string),
            recovery_for: s.recovery_for,
        }
    }

    fn into_session(self, id: &str, row: &SessionRow) -> Session {
        Session {
            id: id.to_string(),
            csrf: self.csrf,
            created: row.created,
            last_seen: row.last_seen,
            auth: self.auth,
            notices: self
                .notices
                .into_iter()
                .map(|n| Notice {
                    kind: n.kind,
                    title: n.title,
                    detail: n.detail,
                    at: n.at.as_deref().and_then(section),
                })
                .collect(),
            new_device: self.new_device,
            device_profile: self.device_profile,
            show_qr: self.show_qr,
            enrolment: self.enrolment,
            seen_block: self.seen_block,
            last_section: self.last_section.as_deref().and_then(section),
            recovery_for: self.recovery_for,
        }
    }
}

fn logged<T>(what: &str, out: Result<T, StoreError>) -> Option<T> {
    match out {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(event = "store.error", error = %e, "portal sessions: cannot {what}");
            None
        }
    }
}

impl Sealed {
    pub(super) fn new(limits: Limits, rows: Arc<dyn SessionRows>, key: Arc<ServerKey>) -> Self {
        Self {
            rows,
            limits,
            ids: hmac::Key::new(hmac::HMAC_SHA256, &key.derive_key("portal session ids")),
            key,
            last_purge: AtomicU64::new(0),
            created: AtomicU64::new(0),
        }
    }

    /// The row's name for a cookie value.
    fn row_id(&self, id: &str) -> Vec<u8> {
        hmac::sign(&self.ids, id.as_bytes()).as_ref().to_vec()
    }

    /// What the sealed data is bound to: its row.
    fn context(row_id: &[u8]) -> String {
        let hex: String = row_id.iter().map(|b| format!("{b:02x}")).collect();
        format!("portal session {hex}")
    }

    fn seal(&self, row_id: &[u8], s: &Session) -> String {
        let json = serde_json::to_vec(&Stored::of(s)).expect("a session serialises");
        self.key
            .seal_for(SEAL_PURPOSE, &Self::context(row_id), &json)
    }

    /// The session in `row`; `None` (logged) if it does not open: sealed
    /// with another key, or moved from another row.
    fn open(&self, id: &str, row_id: &[u8], row: &SessionRow) -> Option<Session> {
        let stored = self
            .key
            .open_for(SEAL_PURPOSE, &Self::context(row_id), &row.data)
            .and_then(|json| serde_json::from_slice::<Stored>(&json).ok());
        if stored.is_none() {
            tracing::warn!(
                event = "portal.session_unreadable",
                "a stored portal session does not open with this node's key"
            );
        }
        Some(stored?.into_session(id, row))
    }

    fn purge_now_and_then(&self, now: u64) {
        let created = self.created.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_purge.load(Ordering::Relaxed);
        let due = now >= last + PURGE_EVERY || created >= PURGE_AFTER_NEW;
        if !due
            || self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.created.store(0, Ordering::Relaxed);
        logged(
            "delete expired sessions",
            self.rows.session_purge(
                now.saturating_sub(self.limits.idle),
                now.saturating_sub(self.limits.max_age),
                MAX_SESSIONS as u64,
            ),
        );
    }
}

impl Backend for Sealed {
    fn get(&self, id: &str, now: u64) -> Result<Option<Session>, Unavailable> {
        let row_id = self.row_id(id);
        let row = logged(
            "read a session",
            self.rows
                .session_touch(&row_id, now, self.limits.idle, self.limits.max_age),
        )
        .ok_or(Unavailable)?;
        Ok(row.and_then(|row| self.open(id, &row_id, &row)))
    }

    fn insert(&self, session: &Session, now: u64) {
        self.purge_now_and_then(now);
        let row_id = self.row_id(&session.id);
        let row = SessionRow {
            data: self.seal(&row_id, session),
            created: session.created,
            last_seen: session.last_seen,
        };
        logged(
            "save a new session",
            self.rows.session_insert(&row_id, session.owner(), &row),
        );
    }

    fn update(&self, id: &str, now: u64, f: &mut dyn FnMut(&mut Session)) -> Option<Session> {
        let row_id = self.row_id(id);
        let mut changed = None;
        logged(
            "change a session",
            self.rows.session_update(
                &row_id,
                now,
                self.limits.idle,
                self.limits.max_age,
                &mut |row| {
                    let mut session = self.open(id, &row_id, row)?;
                    f(&mut session);
                    let write = (
                        session.owner().map(str::to_string),
                        self.seal(&row_id, &session),
                    );
                    changed = Some(session);
                    Some(write)
                },
            ),
        )?;
        changed
    }

    fn remove(&self, id: &str) -> Result<Option<Session>, Unavailable> {
        let row_id = self.row_id(id);
        let data = logged("end a session", self.rows.session_take(&row_id)).ok_or(Unavailable)?;
        Ok(data.and_then(|data| {
            let row = SessionRow {
                data,
                created: 0,
                last_seen: 0,
            };
            self.open(id, &row_id, &row)
        }))
    }

    fn sign_out_others(&self, address: &str, keep: &str) -> usize {
        let out = self.rows.session_delete_for(address, &self.row_id(keep));
        logged("end the account's other sessions", out)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}
