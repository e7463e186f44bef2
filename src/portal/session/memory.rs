//! Sessions in this process's memory (one node).
//!
//! Anyone can open the sign-in page, so anonymous sessions are cheap and
//! capped: past `MAX_SESSIONS`, expired ones go, then the least recently
//! used anonymous ones.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Auth, Backend, Limits, MAX_SESSIONS, Session, Unavailable};
use crate::locks::Recover;

pub(super) struct Memory {
    sessions: Mutex<HashMap<String, Session>>,
    limits: Limits,
}

impl Memory {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            limits,
        }
    }
}

impl Backend for Memory {
    fn get(&self, id: &str, now: u64) -> Result<Option<Session>, Unavailable> {
        let mut map = self.sessions.lock_or_recover();
        let live = map.get(id).is_some_and(|s| !self.limits.expired(s, now));
        if !live {
            map.remove(id);
            return Ok(None);
        }
        Ok(map.get_mut(id).map(|s| {
            s.last_seen = now;
            s.clone()
        }))
    }

    fn insert(&self, session: &Session, now: u64) {
        let mut map = self.sessions.lock_or_recover();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !self.limits.expired(s, now));
        }
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .values()
                .filter(|s| s.auth == Auth::Anonymous)
                .min_by_key(|s| s.last_seen)
                .map(|s| s.id.clone());
            if let Some(id) = oldest {
                map.remove(&id);
            }
        }
        map.insert(session.id.clone(), session.clone());
    }

    fn update(&self, id: &str, _now: u64, f: &mut dyn FnMut(&mut Session)) -> Option<Session> {
        let mut map = self.sessions.lock_or_recover();
        let s = map.get_mut(id)?;
        f(s);
        Some(s.clone())
    }

    fn remove(&self, id: &str) -> Result<Option<Session>, Unavailable> {
        Ok(self.sessions.lock_or_recover().remove(id))
    }

    fn sign_out_others(&self, address: &str, keep: &str) -> usize {
        let mut map = self.sessions.lock_or_recover();
        let before = map.len();
        map.retain(|id, s| id == keep || s.owner() != Some(address));
        before - map.len()
    }
}
