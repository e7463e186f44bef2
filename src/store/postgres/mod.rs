//! Shared data in PostgreSQL, for several nodes behind one load balancer
//! (docs/operator-guide.md, "Running several nodes").
//!
//! The rest of the server calls the store synchronously (on the blocking
//! pool), as it does redb. The database client is async, so this store
//! owns a small runtime of its own: each call runs there and the caller
//! waits for its answer. Calls that run a closure inside a transaction (an
//! account change, the scorer's locked turn) do it in two steps: the row
//! is read and locked there, the closure runs on the caller's thread, and
//! the write and commit follow.
//!
//! Every change to an account sends `pg_notify` in its own transaction, so
//! the other nodes drop their cached copy when (and only when) it commits
//! (`listen`).

mod accounts;
mod copy;
pub use copy::CopySummary;
mod exchange;
pub mod identity;
mod listen;
pub mod migrate;
mod sessions;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;
use super::shared::Change;
use crate::config::StoreConfig;
use crate::locks::Recover;

/// Session advisory lock held while migrating.
pub(crate) const MIGRATION_LOCK: i64 = 0x6d77_0001;
/// First key of the two-key transaction lock that serialises one account's
/// scorer state across nodes (the second is `hashtext(account)`).
pub(crate) const POLICY_LOCK: i32 = 0x6d77_0002;
/// The same, for address ownership (creating an account, adding an alias).
pub(crate) const ADDRESS_LOCK: i32 = 0x6d77_0003;
/// The notification channel.
pub(crate) const CHANNEL: &str = "mailwarden_changes";

/// A tokio-postgres error, in the store's terms. The database being out of
/// reach is `Unavailable` (SMTP answers 451 4.3.0, AUTH 454 4.7.0).
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        // The message and its SQLSTATE only: PostgreSQL's DETAIL may quote
        // the row (a record with its password hash) and this goes to the
        // log.
        Some(db) => StoreError::Failed(format!(
            "PostgreSQL: {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        )),
        // No answer from the server: closed, refused, timed out.
        None => StoreError::Failed(format!("PostgreSQL unavailable: {}", with_causes(&e))),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Failed(format!("PostgreSQL unavailable: {}", with_causes(&e)))
}

/// `e` and what caused it, as far down as it goes ("error performing TLS
/// handshake: invalid peer certificate: UnknownIssuer").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Hears the database go away (`false`) and come back (`true`).
pub type Watcher = Arc<dyn Fn(bool) + Send + Sync>;

#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

/// Connections of the portal's own pool (`portal_pool`).
const PORTAL_POOL_SIZE: usize = 2;

struct Inner {
    /// Kept only to be shut down with the store (`Drop`).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// The portal's sessions have a pool of their own: anyone may load the
    /// sign-in page, and a flood of it must not take the connections SMTP
    /// AUTH and the scorer need (nor make the node refuse mail: the
    /// portal's calls do not `note` the database as away).
    portal_pool: Pool,
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// The longest one call may take, pool wait and transaction included.
    op_timeout: Duration,
    /// Whether the last call reached the database.
    up: AtomicBool,
    /// Told when the database goes away and comes back.
    watcher: Mutex<Option<Watcher>>,
    /// This node, in the notes it sends (it ignores its own).
    node: String,
    /// Who hears about changes (`subscribe`); the listener starts with the
    /// first.
    subscribers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Change>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.lock_or_recover().take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects (the pool opens connections as needed), then brings the
    /// schema up to date.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let store = Self::connect(config)?;
        store.migrate()?;
        Ok(store)
    }

    /// A pool on the database, without touching the schema.
    pub fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| StoreError::Failed("`store.url` is not set".into()))?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Failed(format!(
                "`store.url` is not a PostgreSQL URL: {}",
                with_causes(&e)
            ))
        })?;
        if pg.get_ssl_mode() == SslMode::Prefer {
            tracing::warn!(
                event = "store.postgres_tls",
                "store.url has no sslmode (or sslmode=prefer): TLS is used if the server offers \
                 it, plaintext otherwise; set sslmode=require on an untrusted network"
            );
        }
        let timeout_ms = config.statement_timeout.as_millis();
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("mailwarden")
            .options(format!(
                "-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms} \
                 -c idle_in_transaction_session_timeout={}",
                timeout_ms * 3
            ));
        let tls = MakeRustlsConnect::new(tls_config(config.ca_file.as_deref())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mw-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Failed(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let pool_of = |size: usize| {
            let manager = Manager::from_config(
                pg.clone(),
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .timeouts(Timeouts {
                    wait: Some(config.connect_timeout),
                    create: Some(config.connect_timeout),
                    recycle: Some(Duration::from_secs(1)),
                })
                .build()
                .map_err(|e| StoreError::Failed(format!("PostgreSQL pool: {e}")))
        };
        let pool = pool_of(config.pool_size)?;
        let portal_pool = pool_of(PORTAL_POOL_SIZE)?;
        Ok(Self {
            inner: Arc::new(Inner {
                handle: runtime.handle().clone(),
                runtime: Mutex::new(Some(runtime)),
                pool,
                portal_pool,
                pg,
                tls,
                op_timeout: config.connect_timeout * 2 + config.statement_timeout * 2,
                up: AtomicBool::new(true),
                watcher: Mutex::new(None),
                node: crate::store::identity::new_id(),
                subscribers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Applies the migrations this binary has and the database lacks.
    pub fn migrate(&self) -> Result<migrate::Migrated, StoreError> {
        let pool = self.inner.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            migrate::run(&mut client).await
        })
    }

    /// Whether the last call reached the database.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Runs `fut` on the store's runtime and waits for it, from any thread
    /// (a tokio worker gives its other tasks away while it waits).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let out = self.run_quietly(fut);
        self.note(&out);
        out
    }

    /// Runs `f` with a pooled connection, on the store's runtime.
    pub(crate) fn with_client<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run(on(self.pool(), f))
    }

    /// `run`, without telling whether the database answered (the portal's
    /// calls: a flood of them must not mark the database as away).
    pub(crate) fn run_quietly<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let limit = self.inner.op_timeout;
        self.inner.handle.spawn(async move {
            let out = tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(StoreError::Failed(
                    "PostgreSQL unavailable: the call timed out".into(),
                ))
            });
            let _ = tx.send(out);
        });
        wait(|| rx.recv()).unwrap_or_else(|_| {
            Err(StoreError::Failed(
                "PostgreSQL unavailable: the call did not finish".into(),
            ))
        })
    }

    /// Records whether a call reached the database. When it stops
    /// answering, a probe runs until it answers again (nothing else may
    /// call it meanwhile: new mail is refused while it is away).
    pub(crate) fn note<T>(&self, out: &Result<T, StoreError>) {
        let up =
            !matches!(out, Err(StoreError::Failed(m)) if m.starts_with("PostgreSQL unavailable"));
        if self.inner.up.swap(up, Ordering::SeqCst) == up {
            return;
        }
        self.tell(up);
        if !up {
            let store = self.clone();
            self.inner.handle.spawn(async move { store.probe().await });
        }
    }

    fn tell(&self, up: bool) {
        let watcher = self.inner.watcher.lock_or_recover().clone();
        if let Some(w) = watcher {
            w(up);
        }
    }

    /// Asks the database every 250 ms until it answers.
    async fn probe(self) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if self.inner.up.load(Ordering::SeqCst) {
                return;
            }
            let answered = match self.inner.pool.get().await {
                Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
                Err(_) => false,
            };
            if answered {
                if !self.inner.up.swap(true, Ordering::SeqCst) {
                    self.tell(true);
                }
                return;
            }
        }
    }

    /// `f(false)` when the database stops answering, `f(true)` when it
    /// answers again.
    pub fn watch(&self, f: Watcher) {
        *self.inner.watcher.lock_or_recover() = Some(f);
    }

    /// This node's random name in the notes it sends.
    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    pub(crate) fn pool(&self) -> Pool {
        self.inner.pool.clone()
    }

    pub(crate) fn portal_pool(&self) -> Pool {
        self.inner.portal_pool.clone()
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.inner.handle
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// Changes to shared data as they commit, on any node. The first call
    /// starts the listener.
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut subs = self.inner.subscribers.lock_or_recover();
        let first = subs.is_empty();
        subs.push(tx);
        drop(subs);
        if first {
            let weak = Arc::downgrade(&self.inner);
            self.inner.handle.spawn(listen::run(weak));
        }
        rx
    }

    /// Tells every other node `note` (the lockout counters), at once and
    /// without waiting; lost if the database is away.
    pub fn announce_lockout(&self, note: String) {
        let change = Change::Lockout {
            origin: self.inner.node.clone(),
            note,
        };
        let pool = self.inner.pool.clone();
        self.inner.handle.spawn(async move {
            if let Ok(client) = pool.get().await {
                let _ = accounts::notify(&client, &change).await;
            }
        });
    }

    /// Hands a change to the subscribers (`listen`); this node's own
    /// lockout notes are not handed back.
    fn publish(inner: &Inner, change: Change) {
        if matches!(&change, Change::Lockout { origin, .. } if *origin == inner.node) {
            return;
        }
        inner
            .subscribers
            .lock_or_recover()
            .retain(|s| s.send(change.clone()).is_ok());
    }
}

/// `f` with a connection from `pool`.
pub(crate) async fn on<T, F, Fut>(pool: Pool, f: F) -> Result<T, StoreError>
where
    F: FnOnce(Object) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let client = pool.get().await.map_err(pool_error)?;
    f(client).await
}

/// Waits for a blocking receive; on a multi-threaded tokio worker the
/// worker's other tasks move elsewhere meanwhile.
fn wait<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// TLS to the database (with `sslmode=require`): the certificate must
/// chain to `ca_file`'s certificates if set, else to the system's roots
/// (as for the relay), and name the host in `store.url`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match ca_file {
        Some(path) => {
            let failed = |e: &dyn std::fmt::Display| {
                StoreError::Failed(format!(
                    "`store.ca_file` {}: cannot read CA certificates: {e}",
                    path.display()
                ))
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(&e))? {
                roots
                    .add(cert.map_err(|e| failed(&e))?)
                    .map_err(|e| failed(&e))?;
            }
            if roots.is_empty() {
                return Err(failed(&"no certificate in it"));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| failed(&e))?
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| StoreError::Failed(format!("cannot load CA certificates: {e}")))?,
        ),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Failed(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}
