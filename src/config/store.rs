//! `[store]`: where shared data (accounts, blocks, the scorer's state) lives.
//! `redb` (the default) keeps it in the data folder's store file; `postgres`
//! keeps it in one PostgreSQL database that several nodes share, while each
//! node's spool stays in its own store file (docs/operator-guide.md,
//! "Running several nodes").

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::de_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Redb,
    Postgres,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `postgres://user:password@host:port/db` (with `backend = "postgres"`).
    pub url: Option<String>,
    /// Connections each node keeps open at most.
    pub pool_size: usize,
    /// Longest any one statement may run (server side `statement_timeout`).
    #[serde(deserialize_with = "de_duration")]
    pub statement_timeout: Duration,
    /// Longest a connection attempt may take.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// PEM file of the CA certificates the database's certificate must
    /// chain to (`sslmode=require`); unset: the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Redb,
            url: None,
            pool_size: 8,
            statement_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ca_file: None,
        }
    }
}

/// The URL may hold a password: it is never printed.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}
