//! Wires the pieces together and runs every listener and worker in one
//! runtime. `start` returns once everything listens, with the bound
//! addresses (tests bind port 0); `Running::shutdown` stops it on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{Accounts, Authenticator, Passwords, StoreAuthenticator};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigSource, DeliveryMode};
use crate::events::Events;
use crate::policy::{AcceptAll, Policy};
use crate::smtp::{self, PortKind, SmtpShared};
use crate::spool::{Spool, StoreSpool};
use crate::store::Store;
use crate::{admin, delivery, tls};

/// How many argon2 verifications may wait or run at once before AUTH
/// answers 454.
const AUTH_QUEUE: usize = 64;

pub struct Running {
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub store: Store,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Wraps the real spool (tests inject storage failures with it).
pub type SpoolWrapper = Box<dyn FnOnce(Arc<dyn Spool>) -> Arc<dyn Spool> + Send>;

/// Optional replacements for the defaults, for tests.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    pub spool: Option<SpoolWrapper>,
}

pub async fn start(config: Config, events: Arc<dyn Events>) -> anyhow::Result<Running> {
    start_with(config, events, Overrides::default()).await
}

pub async fn start_with(
    config: Config,
    events: Arc<dyn Events>,
    overrides: Overrides,
) -> anyhow::Result<Running> {
    let mode = config.delivery_mode();
    if mode != DeliveryMode::Outbox {
        bail!("delivery.mode = {mode:?} is not available in this version yet; use \"outbox\"");
    }
    let data_dir = config.server.data_dir.clone();
    let store = Store::open_or_create(&data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tls_config = tls::server_config(&config)?;
    let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let passwords = Arc::new(Passwords::new(AUTH_QUEUE)?);
    let mut spool: Arc<dyn Spool> = Arc::new(StoreSpool::new(store.clone(), clock.clone()));
    if let Some(wrap) = overrides.spool {
        spool = wrap(spool);
    }
    let authenticator: Arc<dyn Authenticator> =
        Arc::new(StoreAuthenticator::new(store.clone(), passwords.clone()));
    let policy: Arc<dyn Policy> = Arc::new(AcceptAll);
    let accounts = Accounts::new(store.clone(), passwords, clock.clone(), events.clone());

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let shared = Arc::new(SmtpShared {
        hostname: config.server.hostname.clone(),
        limits: config.smtp.clone(),
        tls: TlsAcceptor::from(tls_config),
        authenticator,
        policy,
        spool: spool.clone(),
        events: events.clone(),
        clock,
        connections: Default::default(),
        shutdown: shutdown.clone(),
    });

    let mut submission = Vec::new();
    for addr in &config.listeners.submission {
        submission.push(bind(*addr).await?);
    }
    let mut submissions = Vec::new();
    for addr in &config.listeners.submissions {
        submissions.push(bind(*addr).await?);
    }
    let admin_listener = bind(config.listeners.admin).await?;

    let token = admin::ensure_token(&data_dir)?;
    let admin_addr = admin_listener.local_addr()?;
    std::fs::write(data_dir.join(admin::ADDR_FILE), admin_addr.to_string())
        .context("cannot write the admin address file")?;

    let mut running = Running {
        submission: Vec::new(),
        submissions: Vec::new(),
        admin: admin_addr,
        store,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    for (listeners, kind) in [
        (submission, PortKind::Submission),
        (submissions, PortKind::Submissions),
    ] {
        for listener in listeners {
            let addr = listener.local_addr()?;
            tracing::info!(event = "listener.ready", kind = ?kind, addr = %addr);
            match kind {
                PortKind::Submission => running.submission.push(addr),
                PortKind::Submissions => running.submissions.push(addr),
            }
            tracker.spawn(smtp::serve(listener, kind, shared.clone(), tracker.clone()));
        }
    }

    let app = admin::router(token, accounts);
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(admin_listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(event = "admin.error", error = %e);
        }
    });
    tracing::info!(event = "listener.ready", kind = "Admin", addr = %admin_addr);

    let outbox = data_dir.join("outbox");
    if config.source == ConfigSource::EmbeddedDefault {
        tracing::warn!(
            event = "delivery.outbox_mode",
            outbox = %outbox.display(),
            "delivery goes to the local outbox folder, not the internet: \
             configure [delivery] for relay or MX delivery"
        );
    } else {
        tracing::warn!(event = "delivery.outbox_mode", outbox = %outbox.display(), "delivery.mode = \"outbox\": messages stay in the local outbox folder");
    }
    tracker.spawn(delivery::run_outbox(
        spool,
        outbox,
        events,
        shutdown.clone(),
    ));
    Ok(running)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| match addr.port() {
            0 => format!("cannot listen on {addr}"),
            _ => format!("cannot listen on {addr} (is another program using the port?)"),
        })
}

impl Running {
    /// Stops accepting, answers 421 to idle sessions, waits for the rest.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(30), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                event = "server.shutdown_timeout",
                "some sessions did not finish in 30s"
            );
        }
    }

    /// Runs until SIGINT or SIGTERM, then shuts down.
    pub async fn until_signal(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!(event = "server.stopping");
        self.shutdown().await;
        tracing::info!(event = "server.stopped");
        Ok(())
    }
}
