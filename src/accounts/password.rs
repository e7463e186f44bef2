//! argon2id hashing and verification on blocking threads, behind a bounded
//! queue: at most one verify per core runs at once, and when the queue is full
//! AUTH answers `454 4.7.0 Temporary authentication failure` instead of
//! piling up work an attacker can cause for free.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::locks::Recover;
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use tokio::sync::Semaphore;

/// The verification queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

pub struct Passwords {
    running: Semaphore,
    waiting: Semaphore,
    /// One verify in flight per client network: a single address cannot
    /// take every core.
    per_client: Mutex<HashMap<ipnet::IpNet, Arc<tokio::sync::Mutex<()>>>>,
    /// Verified against when there is no real hash, so every AUTH costs the
    /// same one argon2id verify (no user enumeration by timing).
    dummy_hash: String,
}

impl Passwords {
    /// `queue` is how many verifications may wait or run at once.
    pub fn new(queue: usize) -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(HashError::Random)?;
        let dummy_hash = hash_blocking(&format!("{random:?}"))?;
        Ok(Self {
            running: Semaphore::new(cores),
            waiting: Semaphore::new(queue.max(cores)),
            per_client: Mutex::new(HashMap::new()),
            dummy_hash,
        })
    }

    /// Checks `password` against `phc`, or against the dummy hash when `phc`
    /// is `None` (the result is then always `false`).
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Busy> {
        let _queued = self.waiting.try_acquire().map_err(|_| Busy)?;
        let _running = self.running.acquire().await.map_err(|_| Busy)?;
        let real = phc.is_some();
        let phc = phc.unwrap_or(&self.dummy_hash).to_string();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc))
            .await
            .unwrap_or(false);
        Ok(ok && real)
    }

    /// `verify`, one at a time per client network.
    pub async fn verify_from(
        &self,
        client: IpAddr,
        password: &str,
        phc: Option<&str>,
    ) -> Result<bool, Busy> {
        let network = super::lockout::client_network(client);
        let turn = self
            .per_client
            .lock_or_recover()
            .entry(network)
            .or_default()
            .clone();
        let result = {
            let _mine = turn.lock().await;
            self.verify(password, phc).await
        };
        // Forget the network once nobody else waits on it.
        let mut map = self.per_client.lock_or_recover();
        if Arc::strong_count(&turn) == 2 {
            map.remove(&network);
        }
        result
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let _running = self.running.acquire().await?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot hash the password")]
    Argon2(#[source] argon2::password_hash::Error),
    #[error("no randomness for the password hasher")]
    Random(#[source] getrandom::Error),
    #[error("the password hasher is shut down")]
    Closed(#[from] tokio::sync::AcquireError),
    #[error("the password hasher did not finish")]
    Task(#[from] tokio::task::JoinError),
}

pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(HashError::Argon2)
}

/// Checks a password against a stored hash: mailwarden's argon2id, or an
/// imported Dovecot scheme (`scheme`).
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    super::scheme::verify(password, phc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let phc = hash_blocking("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_blocking("correct horse battery", &phc));
        assert!(!verify_blocking("correct horse batterY", &phc));
        assert!(!verify_blocking("x", "not a hash"));
    }

    #[tokio::test]
    async fn dummy_verification_never_succeeds() {
        let p = Passwords::new(4).unwrap();
        assert_eq!(p.verify("anything", None).await, Ok(false));
    }
}
