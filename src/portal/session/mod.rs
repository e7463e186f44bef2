//! Web sessions: random 256-bit ids, a CSRF token each, idle and absolute
//! expiry on the portal's `Clock`. A new id at every sign-in step (the old
//! one stops working). One-time values (notices, a new device password)
//! ride here and are shown once.
//!
//! Where they live (`Backend`): in this process's memory (`memory`, one
//! node), or in the shared database, sealed with the server key, so a
//! browser may land on any node behind a balancer (`sealed`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::accounts::Account;
use crate::clock::Clock;
use crate::secrets::ServerKey;
use crate::store::shared::SessionRows;

mod memory;
mod sealed;

pub const MAX_SESSIONS: usize = 50_000;
/// A signed-in session ends after this long, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);
/// The password step is good for this long before the OTP step.
pub const OTP_STEP_TIME: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Auth {
    Anonymous,
    /// The password was right; the account has 2FA and needs a code.
    OtpPending {
        address: String,
        since: u64,
        /// The password hash the password was checked against.
        password_hash: String,
    },
    SignedIn {
        address: String,
        /// When this web session last passed an OTP (device passwords).
        otp_at: Option<u64>,
        /// The password hash valid at sign-in: when it changes (another
        /// session or the CLI changed the password), this session ends.
        password_hash: String,
        /// `Account::credentials_seq` at sign-in: a new password or 2FA
        /// turned on or off anywhere else ends this session.
        credentials: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoticeKind {
    Success,
    Error,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub title: String,
    pub detail: Option<String>,
    /// The page section it belongs to (shown there); `None`: the top.
    pub at: Option<&'static str>,
}

impl Notice {
    pub fn success(title: &str) -> Self {
        Self {
            kind: NoticeKind::Success,
            title: title.into(),
            detail: None,
            at: None,
        }
    }
    pub fn error(title: &str) -> Self {
        Self {
            kind: NoticeKind::Error,
            title: title.into(),
            detail: None,
            at: None,
        }
    }
    pub fn info(title: &str) -> Self {
        Self {
            kind: NoticeKind::Info,
            title: title.into(),
            detail: None,
            at: None,
        }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn at(mut self, section: &'static str) -> Self {
        self.at = Some(section);
        self
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub csrf: String,
    pub created: u64,
    pub last_seen: u64,
    pub auth: Auth,
    pub notices: Vec<Notice>,
    /// A device password just created: (name, password), shown once.
    pub new_device: Option<(String, String)>,
    /// The device password the page just showed, for one `.mobileconfig`
    /// download: taken by the download, replaced (or cleared) by the next
    /// My account page.
    pub device_profile: Option<(String, String)>,
    /// The QR Code button was pressed (shown while enrolment is pending).
    pub show_qr: bool,
    /// The 2FA enrolment this session started (its history sequence
    /// number): this session's password change keeps it.
    pub enrolment: Option<u64>,
    /// The block this session has shown; when it is gone, say so once.
    pub seen_block: Option<u64>,
    /// The section of the last action, where its notices show.
    pub last_section: Option<&'static str>,
    /// Opened by a recovery link: the block it was sent for.
    pub recovery_for: Option<u64>,
}

impl Session {
    pub fn csrf_matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    pub fn address(&self) -> Option<&str> {
        match &self.auth {
            Auth::SignedIn { address, .. } => Some(address),
            _ => None,
        }
    }

    /// The account this session is (or is becoming) signed in to.
    fn owner(&self) -> Option<&str> {
        match &self.auth {
            Auth::SignedIn { address, .. } | Auth::OtpPending { address, .. } => Some(address),
            Auth::Anonymous => None,
        }
    }
}

/// The page sections notices belong to (`Notice::at`).
pub const SECTIONS: [&str; 4] = ["password", "two-factor", "devices", "recovery"];

/// `name` as one of `SECTIONS` (sessions read back from the database
/// carry it as text); `None` for anything else.
fn section(name: &str) -> Option<&'static str> {
    SECTIONS.iter().copied().find(|s| *s == name)
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: u64,
    max_age: u64,
}

impl Limits {
    fn expired(&self, s: &Session, now: u64) -> bool {
        now >= s.last_seen + self.idle || now >= s.created + self.max_age
    }
}

/// The sessions could not be read or changed (the shared database is
/// away; logged where it happened). The request is answered 503 and the
/// browser keeps its cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Where sessions are kept. Every method is given the time.
trait Backend: Send + Sync {
    /// The live session, marked as used at `now`.
    fn get(&self, id: &str, now: u64) -> Result<Option<Session>, Unavailable>;
    fn insert(&self, session: &Session, now: u64);
    /// Changes a live session; returns it as changed.
    fn update(&self, id: &str, now: u64, f: &mut dyn FnMut(&mut Session)) -> Option<Session>;
    /// Ends a session; what it held.
    fn remove(&self, id: &str) -> Result<Option<Session>, Unavailable>;
    /// Ends every session of `address` but `keep`; how many.
    fn sign_out_others(&self, address: &str, keep: &str) -> usize;
}

pub struct SessionStore {
    backend: Box<dyn Backend>,
    clock: Arc<dyn Clock>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn limits(idle: Duration) -> Limits {
    Limits {
        idle: idle.as_secs().max(1),
        max_age: MAX_AGE.as_secs(),
    }
}

impl SessionStore {
    /// Sessions in this process's memory (one node).
    pub fn new(idle: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend: Box::new(memory::Memory::new(limits(idle))),
            clock,
        }
    }

    /// Sessions in the shared database, sealed with `key` (several nodes).
    pub fn shared(
        idle: Duration,
        clock: Arc<dyn Clock>,
        rows: Arc<dyn SessionRows>,
        key: Arc<ServerKey>,
    ) -> Self {
        Self {
            backend: Box::new(sealed::Sealed::new(limits(idle), rows, key)),
            clock,
        }
    }

    /// The live session with this id, marked as used now.
    pub fn get(&self, id: &str) -> Result<Option<Session>, Unavailable> {
        self.backend.get(id, self.clock.unix())
    }

    /// A new session with a fresh id and CSRF token.
    pub fn create(&self, auth: Auth) -> Session {
        self.create_with(auth, Vec::new())
    }

    /// A new session holding `notices` already (one write).
    pub fn create_with(&self, auth: Auth, notices: Vec<Notice>) -> Session {
        let now = self.clock.unix();
        let session = Session {
            id: random_token(),
            csrf: random_token(),
            created: now,
            last_seen: now,
            auth,
            notices,
            new_device: None,
            device_profile: None,
            show_qr: false,
            enrolment: None,
            seen_block: None,
            last_section: None,
            recovery_for: None,
        };
        self.backend.insert(&session, now);
        session
    }

    /// Ends `old` and starts a new session (new id, new CSRF token) with
    /// `auth`; notices move over. Used at every sign-in step.
    pub fn rotate(&self, old: &str, auth: Auth) -> Session {
        // An old row the database could not delete is anonymous or half
        // signed in, and its id is not handed out again: it expires.
        let notices = self
            .backend
            .remove(old)
            .ok()
            .flatten()
            .map(|s| s.notices)
            .unwrap_or_default();
        self.create_with(auth, notices)
    }

    /// Ends `old` and starts a signed-in session for `account` (`otp_at`:
    /// when an OTP was passed on the way in).
    pub fn sign_in(&self, old: &str, account: &Account, otp_at: Option<u64>) -> Session {
        self.rotate(
            old,
            Auth::SignedIn {
                address: account.address.clone(),
                otp_at,
                password_hash: account.password_hash.clone(),
                credentials: account.credentials_seq(),
            },
        )
    }

    /// Changes a live session; returns it as changed.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Session)) -> Option<Session> {
        let mut f = Some(f);
        self.backend.update(id, self.clock.unix(), &mut |s| {
            if let Some(f) = f.take() {
                f(s)
            }
        })
    }

    pub fn notice(&self, id: &str, notice: Notice) {
        self.update(id, |s| s.notices.push(notice));
    }

    /// Ends a session (`Err`: it could not be ended).
    pub fn remove(&self, id: &str) -> Result<(), Unavailable> {
        self.backend.remove(id).map(drop)
    }

    /// Changes a live session with `f` and returns what `f` returned, only
    /// once the change is saved: for taking a one-time value, which must
    /// not be shown if it stays behind.
    pub fn take<R>(&self, id: &str, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let mut out = None;
        self.update(id, |s| out = Some(f(s)))?;
        out
    }

    /// Signs out every session of `address` except `keep`.
    pub fn sign_out_others(&self, address: &str, keep: &str) -> usize {
        self.backend.sign_out_others(address, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    fn store() -> (SessionStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        (
            SessionStore::new(Duration::from_secs(60), clock.clone()),
            clock,
        )
    }

    #[test]
    fn ids_are_random_and_sessions_expire_when_idle() {
        let (store, clock) = store();
        let a = store.create(Auth::Anonymous);
        let b = store.create(Auth::Anonymous);
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, a.id);
        assert_eq!(a.id.len(), 43);
        clock.advance(Duration::from_secs(59));
        assert!(store.get(&a.id).unwrap().is_some());
        clock.advance(Duration::from_secs(59));
        // Used 59 s ago: still live. b was last used 118 s ago.
        assert!(store.get(&a.id).unwrap().is_some());
        assert!(store.get(&b.id).unwrap().is_none());
        assert!(store.get("not-an-id").unwrap().is_none());
    }

    #[test]
    fn rotation_ends_the_old_id_and_keeps_notices() {
        let (store, _) = store();
        let a = store.create(Auth::Anonymous);
        store.notice(&a.id, Notice::info("hello"));
        let signed = Auth::SignedIn {
            address: "a@x.example".into(),
            otp_at: None,
            password_hash: "h".into(),
            credentials: 0,
        };
        let b = store.rotate(&a.id, signed.clone());
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert!(store.get(&a.id).unwrap().is_none());
        let b = store.get(&b.id).unwrap().unwrap();
        assert_eq!(b.auth, signed);
        assert_eq!(b.notices, vec![Notice::info("hello")]);
        let c = store.create(signed);
        assert_eq!(store.sign_out_others("a@x.example", &b.id), 1);
        assert!(store.get(&c.id).unwrap().is_none());
        assert!(store.get(&b.id).unwrap().is_some());
    }

    #[test]
    fn csrf_comparison() {
        let (store, _) = store();
        let a = store.create(Auth::Anonymous);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches("x"));
    }
}
