//! Wires the pieces together and runs every listener and worker in one
//! runtime. `start` returns once everything listens, with the bound
//! addresses (tests bind port 0); `Running::shutdown` stops it on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::lockout::Lockouts;
use crate::accounts::{Accounts, AccountsParts, Authenticator, Passwords};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigSource, DeliveryMode};
use crate::events::Events;
use crate::policy::Policy;
use crate::policy::feedback::{DeliveryFeedback, Tee};
use crate::policy::notice::OperatorNotices;
use crate::policy::scorer::{Scorer, ScorerEvents};
use crate::secrets::ServerKey;
use crate::smtp::{self, PortKind, SmtpShared};
use crate::spool::{CommitHook, Spool, StoreSpool};
use crate::store::Store;
use crate::store::fault::FaultSwitch;
use crate::telemetry::metrics::{Metrics, MetricsEvents};
use crate::{admin, delivery, portal, tls};

pub struct Running {
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    /// The "My account" web portal.
    pub portal: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub store: Store,
    pub server_key: Arc<ServerKey>,
    pub accounts: Accounts,
    pub spool: Arc<dyn Spool>,
    scorer: Arc<Scorer>,
    smtp: Arc<SmtpShared>,
    config: Config,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Wraps the real spool (tests inject storage failures with it).
pub type SpoolWrapper = Box<dyn FnOnce(Arc<dyn Spool>) -> Arc<dyn Spool> + Send>;

/// Optional replacements for the defaults, for tests.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    /// Open the store on a disk whose fsyncs this switch can make fail.
    pub store_faults: Option<Arc<FaultSwitch>>,
    /// Wraps the spool (e.g. a failing one).
    pub spool: Option<SpoolWrapper>,
    /// Hears every delivery outcome (the scorer's bounce signal).
    pub feedback: Option<Arc<dyn DeliveryFeedback>>,
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
    let relay = match mode {
        DeliveryMode::Relay => Some(Arc::new(delivery::RelaySettings::from_config(&config)?)),
        _ => None,
    };
    let mx = match mode {
        DeliveryMode::Mx => Some(delivery::MxSettings::from_config(&config)?),
        _ => None,
    };
    let dkim = Arc::new(delivery::DkimKeys::load(&config.delivery.dkim)?);
    let data_dir = config.server.data_dir.clone();
    let store = match &overrides.store_faults {
        Some(switch) => Store::open_or_create_faulty(&data_dir, switch.clone()),
        None => Store::open_or_create(&data_dir),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Metrics::new();
    let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let scorer = Scorer::new(
        config.policy.clone(),
        clock.clone(),
        store.clone(),
        config.server.support_contact.clone(),
    )?;
    // Every event is counted in the metrics and seen by the scorer (logins,
    // failures, unblocks) before it reaches the log.
    let events: Arc<dyn Events> = Arc::new(ScorerEvents::new(scorer.clone(), events));
    let events: Arc<dyn Events> = Arc::new(MetricsEvents::new(metrics.clone(), events));
    let server_key = Arc::new(ServerKey::load_or_create(
        &config.secret_key_file(),
        &store,
    )?);
    let tls_config = tls::server_config(&config)?;
    let portal_settings = portal::Settings::from_config(&config)?;
    // Delivery results feed the scorer's bounce signal (and a test's sink).
    let feedback: Arc<dyn DeliveryFeedback> = match overrides.feedback {
        Some(extra) => Arc::new(Tee(vec![scorer.clone(), extra])),
        None => scorer.clone(),
    };
    let passwords = Arc::new(Passwords::new(config.lockout.auth_queue)?);
    // Portal sign-ins have their own argon2 budget, apart from SMTP AUTH.
    let portal_passwords = Arc::new(Passwords::new(config.lockout.auth_queue)?);
    let hook: Arc<dyn CommitHook> = scorer.clone();
    let mut spool: Arc<dyn Spool> = Arc::new(StoreSpool::with_hook(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        Some(hook),
    ));
    if let Some(wrap) = overrides.spool {
        spool = wrap(spool);
    }
    // Blocks and unblocks reach the operator (mail, webhook).
    let events: Arc<dyn Events> = Arc::new(OperatorNotices::new(
        spool.clone(),
        config.server.hostname.clone(),
        &config.policy,
        events,
    )?);
    let accounts = Accounts::new(AccountsParts {
        store: store.clone(),
        passwords,
        portal_passwords: portal_passwords.clone(),
        lockouts: Arc::new(Lockouts::new(config.lockout.clone(), clock.clone())),
        clock: clock.clone(),
        events: events.clone(),
        key: server_key.clone(),
        spool: spool.clone(),
        hostname: config.server.hostname.clone(),
        totp_issuer: config.accounts.totp_issuer.clone(),
    });
    let authenticator: Arc<dyn Authenticator> = Arc::new(accounts.clone());
    scorer.connect(accounts.clone(), events.clone(), spool.clone());
    let evidence_sweeper = (spool.clone(), config.policy.evidence_retention);
    let policy: Arc<dyn Policy> = scorer.clone();

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(crate::telemetry::metrics::watch_queue(
        metrics.clone(),
        spool.clone(),
        Duration::from_secs(15),
        shutdown.clone(),
    ));
    let (evidence_spool, retention) = evidence_sweeper;
    tracker.spawn(crate::policy::evidence::run(
        evidence_spool,
        retention,
        Duration::from_secs(600),
        shutdown.clone(),
    ));
    let shared = Arc::new(SmtpShared {
        hostname: config.server.hostname.clone(),
        limits: config.smtp.clone(),
        tls: std::sync::RwLock::new(TlsAcceptor::from(tls_config)),
        proxy_from: config.listeners.proxy_networks(),
        authenticator,
        policy,
        spool: spool.clone(),
        events: events.clone(),
        clock: clock.clone(),
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
    let portal_listener = bind(config.listeners.portal).await?;
    let portal_addr = portal_listener.local_addr()?;
    let admin_listener = bind(config.listeners.admin).await?;
    let metrics_listener = bind(config.listeners.metrics).await?;
    let metrics_addr = metrics_listener.local_addr()?;

    let token = admin::ensure_token(&data_dir)?;
    let admin_addr = admin_listener.local_addr()?;
    std::fs::write(data_dir.join(admin::ADDR_FILE), admin_addr.to_string())
        .context("cannot write the admin address file")?;

    let mut running = Running {
        submission: Vec::new(),
        submissions: Vec::new(),
        portal: portal_addr,
        admin: admin_addr,
        metrics: metrics_addr,
        store: store.clone(),
        server_key,
        accounts: accounts.clone(),
        spool: spool.clone(),
        scorer: scorer.clone(),
        smtp: shared.clone(),
        config: config.clone(),
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

    let portal_app = portal::Portal::new(portal::PortalParts {
        accounts: accounts.clone(),
        passwords: portal_passwords,
        clock: clock.clone(),
        events: events.clone(),
        settings: portal_settings,
        support_contact: config.server.support_contact.clone(),
        brand: config.accounts.totp_issuer.clone(),
    })
    .router();
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(
            portal_listener,
            portal_app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!(event = "http.error", kind = "Portal", error = %e);
        }
    });
    tracing::info!(event = "listener.ready", kind = "Portal", addr = %portal_addr);

    let ops = admin::Ops {
        accounts,
        spool: spool.clone(),
        store: store.clone(),
        scorer: Some(scorer.clone()),
        policy: config.policy.clone(),
    };
    let http = [
        ("Admin", admin_listener, admin::router(token, ops)),
        (
            "Metrics",
            metrics_listener,
            admin::metrics::router(metrics, store),
        ),
    ];
    for (kind, listener, app) in http {
        let addr = listener.local_addr()?;
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(event = "http.error", kind, error = %e);
            }
        });
        tracing::info!(event = "listener.ready", kind, addr = %addr);
    }

    let queue_runner = |spool, clock, events, feedback| {
        Arc::new(delivery::Runner {
            spool,
            clock,
            settings: delivery::QueueSettings {
                hostname: config.server.hostname.clone(),
                retry_schedule: config.delivery.retry_schedule.clone(),
                max_age: config.delivery.max_age,
                delay_warning: config.delivery.delay_warning,
            },
            events,
            feedback,
        })
    };
    let signed = |transports: Vec<Box<dyn delivery::Transport>>| {
        for key in dkim.keys() {
            tracing::info!(
                event = "delivery.dkim_key",
                domain = %key.domain,
                selector = %key.selector,
                "DKIM signing on"
            );
        }
        if dkim.is_empty() {
            tracing::warn!(
                event = "delivery.dkim_missing",
                "no [[delivery.dkim]] keys: mail leaves unsigned"
            );
            transports
        } else {
            delivery::SigningTransport::wrap(transports, dkim.clone())
        }
    };
    if let Some(mx) = mx {
        tracing::info!(
            event = "delivery.mx_mode",
            port = mx.port,
            workers = mx.workers,
            connections_per_host = mx.per_host,
        );
        let runner = queue_runner(spool, clock, events, feedback);
        let transports = signed(delivery::MxTransport::pool(mx));
        tracker.spawn(delivery::run_queue(runner, transports, shutdown.clone()));
        return Ok(running);
    }
    if let Some(relay) = relay {
        tracing::info!(
            event = "delivery.relay_mode",
            relay = %format!("{}:{}", relay.host, relay.port),
            tls = ?relay.tls,
            connections = config.delivery.relay.as_ref().map_or(1, |r| r.connections),
        );
        let relay_config = config
            .delivery
            .relay
            .as_ref()
            .expect("checked by the config");
        if !relay_config.verify_certificate {
            tracing::warn!(
                event = "delivery.relay_insecure",
                "delivery.relay.verify_certificate = false: the relay's certificate is not checked"
            );
        }
        if relay.tls == crate::config::RelayTls::None && relay_config.username.is_some() {
            tracing::warn!(
                event = "delivery.relay_insecure",
                "delivery.relay.tls = \"none\" with AUTH: the relay password crosses the network in clear"
            );
        }
        let runner = queue_runner(spool, clock, events, feedback);
        let transports = signed(delivery::RelayTransport::pool(
            relay,
            relay_config.connections,
        ));
        tracker.spawn(delivery::run_queue(runner, transports, shutdown.clone()));
        return Ok(running);
    }

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
        feedback,
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
        self.scorer.disconnect();
    }

    /// SIGHUP: reads the config file again and applies its certificate and
    /// `[policy]`. Open connections keep their TLS session; new ones get
    /// the new certificate. Anything wrong keeps the old settings.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = match &self.config.source {
            ConfigSource::File(path) => Config::load(path)?,
            ConfigSource::EmbeddedDefault => self.config.clone(),
        };
        let tls = tls::server_config(&config)?;
        *self.smtp.tls.write().expect("tls acceptor") = TlsAcceptor::from(tls);
        self.scorer.set_config(config.policy.clone());
        Ok(())
    }

    /// Runs until SIGINT or SIGTERM, then shuts down; SIGHUP reloads.
    pub async fn until_signal(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => match self.reload() {
                    Ok(()) => tracing::info!(event = "server.reloaded", "certificate and [policy] reloaded"),
                    Err(e) => tracing::error!(event = "server.reload_failed", error = %format!("{e:#}"), "kept the previous settings"),
                },
            }
        }
        tracing::info!(event = "server.stopping");
        self.shutdown().await;
        tracing::info!(event = "server.stopped");
        Ok(())
    }
}
