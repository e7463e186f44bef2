//! `serve`: the application assembled by `app::App`, then every listener
//! and worker in one runtime. `start` returns once everything listens, with
//! the bound addresses (tests bind port 0); `Running::shutdown` stops it on
//! purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Authenticator;
use crate::app::{App, Open};
use crate::config::{Config, ConfigSource, DeliveryMode};
use crate::events::Listener;
use crate::locks::RecoverRw;
use crate::policy::Policy;
use crate::policy::scorer::Ledger;
use crate::secrets::ServerKey;
use crate::smtp::{self, PortKind, SmtpShared};
use crate::spool::Spool;
use crate::store::Store;
use crate::{admin, delivery, dovecot, portal, tls};

pub use crate::app::Overrides;
#[cfg(feature = "testing")]
pub use crate::app::SpoolWrapper;

pub struct Running {
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    /// The "My account" web portal.
    pub portal: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// The Dovecot passdb endpoint (`[dovecot] listen`), when on.
    pub dovecot: Option<SocketAddr>,
    pub store: Store,
    pub server_key: Arc<ServerKey>,
    pub accounts: crate::accounts::Accounts,
    pub spool: Arc<dyn Spool>,
    ledger: Arc<Ledger>,
    smtp: Arc<SmtpShared>,
    config: Config,
    /// The config file's text as the server started with it: SIGHUP names
    /// the keys changed since that it cannot apply.
    config_text: Option<String>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

pub async fn start(config: Config, events: Arc<dyn Listener>) -> anyhow::Result<Running> {
    start_with(config, events, Overrides::default()).await
}

/// Assembles the application (`App`), then starts, in this order: the
/// background sweeps, the SMTP listeners, the portal, the admin API and
/// metrics, and the delivery workers.
pub async fn start_with(
    config: Config,
    events: Arc<dyn Listener>,
    overrides: Overrides,
) -> anyhow::Result<Running> {
    // Delivery settings first: a bad relay or DKIM key stops the start
    // before anything is opened.
    let delivery = Delivery::from_config(&config)?;
    let dovecot_token = dovecot_token(&config)?;
    // Before anything is created in it: the data folder and its files are
    // the owner's only (docs/security.md, "Files on disk").
    let data_dir = &config.server.data_dir;
    crate::files::check_data_dir(data_dir)
        .with_context(|| format!("cannot check the data folder {}", data_dir.display()))?;
    let app = App::open(&config, Open::CreateIfMissing, events, overrides)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    spawn_sweeps(&app, &tracker, &shutdown);
    let smtp = smtp_shared(&app, &shutdown)?;
    let listeners = Listeners::bind(&config).await?;
    let mut running = Running {
        submission: Vec::new(),
        submissions: Vec::new(),
        portal: listeners.portal.local_addr()?,
        admin: listeners.admin.local_addr()?,
        metrics: listeners.metrics.local_addr()?,
        dovecot: listeners
            .dovecot
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
        store: app.store.clone(),
        server_key: app.key.clone(),
        accounts: app.accounts.clone(),
        spool: app.spool.clone(),
        ledger: app.ledger.clone(),
        smtp: smtp.clone(),
        config: config.clone(),
        config_text: match &config.source {
            ConfigSource::File(path) => std::fs::read_to_string(path).ok(),
            ConfigSource::EmbeddedDefault => None,
        },
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    // The CLI finds the admin API by this file: it exists before any
    // listener says it is ready.
    let token = publish_admin_address(&app, &listeners.admin)?;
    serve_smtp(
        &mut running,
        listeners.submission,
        listeners.submissions,
        &smtp,
    )?;
    serve_portal(&app, listeners.portal, &running, &tracker, &shutdown)?;
    serve_admin_and_metrics(
        &app,
        token,
        listeners.admin,
        listeners.metrics,
        &tracker,
        &shutdown,
    )?;
    if let (Some(listener), Some(token)) = (listeners.dovecot, dovecot_token) {
        serve_dovecot(&app, listener, token, &tracker, &shutdown)?;
    }
    delivery.spawn(&app, &tracker, &shutdown);
    Ok(running)
}

/// Every listening socket, bound before anything is served.
struct Listeners {
    submission: Vec<TcpListener>,
    submissions: Vec<TcpListener>,
    portal: TcpListener,
    admin: TcpListener,
    metrics: TcpListener,
    dovecot: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Self> {
        let mut submission = Vec::new();
        for addr in &config.listeners.submission {
            submission.push(bind(*addr).await?);
        }
        let mut submissions = Vec::new();
        for addr in &config.listeners.submissions {
            submissions.push(bind(*addr).await?);
        }
        Ok(Self {
            submission,
            submissions,
            portal: bind(config.listeners.portal).await?,
            admin: bind(config.listeners.admin).await?,
            metrics: bind(config.listeners.metrics).await?,
            dovecot: match config.dovecot.listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }
}

/// How often the store file's checksums are verified (longer for a large
/// store: at most a twentieth of the time goes to it).
const VERIFY_EVERY: Duration = Duration::from_secs(2);

/// The queue gauges, the evidence sweep, saving the lockout counters,
/// verifying the store file.
fn spawn_sweeps(app: &App, tracker: &TaskTracker, shutdown: &CancellationToken) {
    if let Some(pg) = &app.postgres {
        tracker.spawn(hear_changes(
            pg.subscribe(),
            app.accounts.clone(),
            app.ledger.clone(),
            shutdown.clone(),
        ));
    }
    tracker.spawn(crate::spool::watch_queue(
        app.metrics.clone(),
        app.spool.clone(),
        Duration::from_secs(15),
        shutdown.clone(),
    ));
    tracker.spawn(crate::accounts::lockout::keep_saved(
        app.lockouts.clone(),
        app.shared.clone(),
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    tracker.spawn(crate::store::verify::keep_verifying(
        app.store.clone(),
        VERIFY_EVERY,
        shutdown.clone(),
    ));
    tracker.spawn(crate::policy::evidence::run(
        app.spool.clone(),
        app.config.policy.evidence_retention,
        Duration::from_secs(600),
        shutdown.clone(),
    ));
}

/// Changes other nodes made to shared data: caches drop them, blocks hold
/// and lifts release this node's queued mail (`accounts::remote`).
async fn hear_changes(
    mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::store::Change>,
    accounts: crate::accounts::Accounts,
    ledger: Arc<Ledger>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changes.recv() => match c {
                Some(c) => c,
                None => return,
            },
        };
        accounts.heard(&change).await;
        if let crate::store::Change::Lifted(address) = &change {
            let (ledger, address) = (ledger.clone(), address.clone());
            let _ = tokio::task::spawn_blocking(move || ledger.refresh(&address)).await;
        }
    }
}

/// What every SMTP session shares.
fn smtp_shared(app: &App, shutdown: &CancellationToken) -> anyhow::Result<Arc<SmtpShared>> {
    let config = &app.config;
    let authenticator: Arc<dyn Authenticator> = Arc::new(app.accounts.clone());
    let policy: Arc<dyn Policy> = app.scorer.clone();
    Ok(Arc::new(SmtpShared {
        hostname: config.server.hostname.clone(),
        support_contact: config.server.support_contact.clone(),
        limits: config.smtp.clone(),
        tls: std::sync::RwLock::new(TlsAcceptor::from(tls::server_config(config)?)),
        proxy_from: config.listeners.proxy_networks(),
        authenticator,
        policy,
        spool: app.spool.clone(),
        events: app.events.clone(),
        clock: app.clock.clone(),
        connections: Default::default(),
        inflight: smtp::limits::InflightBudget::new(config.smtp.max_inflight_bytes),
        shutdown: shutdown.clone(),
    }))
}

fn serve_smtp(
    running: &mut Running,
    submission: Vec<TcpListener>,
    submissions: Vec<TcpListener>,
    shared: &Arc<SmtpShared>,
) -> anyhow::Result<()> {
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
            let tracker = running.tracker.clone();
            running
                .tracker
                .spawn(smtp::serve(listener, kind, shared.clone(), tracker));
        }
    }
    Ok(())
}

/// The portal; mail program set-up names the SMTP listeners `running`
/// has bound.
fn serve_portal(
    app: &App,
    listener: TcpListener,
    running: &Running,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &app.config;
    let addr = listener.local_addr()?;
    let router = portal::Portal::new(portal::PortalParts {
        accounts: app.accounts.clone(),
        passwords: app.portal_passwords.clone(),
        clock: app.clock.clone(),
        events: app.events.clone(),
        settings: portal::Settings::from_config(config)?,
        support_contact: config.server.support_contact.clone(),
        brand: config.accounts.totp_issuer.clone(),
        setup: portal::autoconfig::MailSetup::new(
            config,
            &running.submission,
            &running.submissions,
            addr,
        )
        .with_signing(tls::configured_pair(config)?),
        shared_sessions: app.postgres.clone().map(|pg| {
            (
                Arc::new(pg) as Arc<dyn crate::store::shared::SessionRows>,
                app.key.clone(),
            )
        }),
    })
    .router();
    serve_http("Portal", listener, router, tracker, shutdown)
}

/// Serves `router` on `listener` until shutdown; handlers may ask for the
/// peer's address (`ConnectInfo`).
fn serve_http(
    kind: &'static str,
    listener: TcpListener,
    router: axum::Router,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!(event = "http.error", kind, error = %e);
        }
    });
    tracing::info!(event = "listener.ready", kind, addr = %addr);
    Ok(())
}

/// The admin token (created on the first start) and the file the CLI
/// finds the admin API by; returns the token.
fn publish_admin_address(app: &App, admin_listener: &TcpListener) -> anyhow::Result<String> {
    let data_dir = &app.config.server.data_dir;
    let token = admin::ensure_token(data_dir)?;
    let admin_addr = admin_listener.local_addr()?;
    crate::files::write_private(
        &data_dir.join(admin::ADDR_FILE),
        admin_addr.to_string().as_bytes(),
    )
    .context("cannot write the admin address file")?;
    Ok(token)
}

/// The admin API and the metrics.
fn serve_admin_and_metrics(
    app: &App,
    token: String,
    admin_listener: TcpListener,
    metrics_listener: TcpListener,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let http = [
        ("Admin", admin_listener, admin::router(token, app.ops())),
        (
            "Metrics",
            metrics_listener,
            admin::metrics::router(
                app.metrics.clone(),
                app.store.clone(),
                app.health.clone(),
                admin::metrics::DiskCheck {
                    dir: app.config.server.data_dir.clone(),
                    min_free: app.config.server.min_free_disk,
                },
            ),
        ),
    ];
    for (kind, listener, router) in http {
        serve_http(kind, listener, router, tracker, shutdown)?;
    }
    Ok(())
}

/// The Dovecot endpoint's token, read before anything starts.
fn dovecot_token(config: &Config) -> anyhow::Result<Option<String>> {
    match (config.dovecot.listen, config.dovecot.token_file.as_deref()) {
        (Some(_), Some(file)) => dovecot::read_token(file).map(Some),
        (Some(_), None) => anyhow::bail!("`dovecot.listen` needs `dovecot.token_file`"),
        (None, _) => Ok(None),
    }
}

/// The passdb endpoint Dovecot's Lua script asks (`[dovecot]`).
fn serve_dovecot(
    app: &App,
    listener: TcpListener,
    token: String,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &app.config.dovecot;
    let router = dovecot::router(dovecot::DovecotParts {
        accounts: app.accounts.clone(),
        authenticator: Arc::new(app.accounts.clone()),
        events: app.events.clone(),
        token,
        refuse_during_operator_block: config.refuse_during_operator_block,
    });
    serve_http("Dovecot", listener, router, tracker, shutdown)
}

/// Where accepted mail goes: MX, a relay, or the outbox folder.
enum Delivery {
    Mx(Box<delivery::MxSettings>, Arc<delivery::DkimKeys>),
    Relay(Arc<delivery::RelaySettings>, Arc<delivery::DkimKeys>),
    Outbox,
}

impl Delivery {
    fn from_config(config: &Config) -> anyhow::Result<Self> {
        let dkim = || delivery::DkimKeys::load(&config.delivery.dkim).map(Arc::new);
        Ok(match config.delivery_mode() {
            DeliveryMode::Mx => Self::Mx(
                Box::new(delivery::MxSettings::from_config(config)?),
                dkim()?,
            ),
            DeliveryMode::Relay => Self::Relay(
                Arc::new(delivery::RelaySettings::from_config(config)?),
                dkim()?,
            ),
            _ => {
                dkim()?;
                Self::Outbox
            }
        })
    }

    fn spawn(self, app: &App, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let config = &app.config;
        let runner = || {
            Arc::new(delivery::Runner {
                spool: app.spool.clone(),
                clock: app.clock.clone(),
                settings: delivery::QueueSettings {
                    hostname: config.server.hostname.clone(),
                    retry_schedule: config.delivery.retry_schedule.clone(),
                    max_age: config.delivery.max_age,
                    delay_warning: config.delivery.delay_warning,
                },
                events: app.events.clone(),
                health: app.health.clone(),
                shared_blocks: app.postgres.is_some().then(|| app.shared.clone()),
            })
        };
        // The dispatcher (and the outbox writer) is a part readiness waits for.
        let health = &app.health;
        match self {
            Self::Mx(mx, dkim) => {
                tracing::info!(
                    event = "delivery.mx_mode",
                    port = mx.port,
                    workers = mx.workers,
                    connections_per_host = mx.per_host,
                );
                let transports = signed(delivery::MxTransport::pool(*mx), &dkim);
                tracker.spawn(health.register(DISPATCHER).run(delivery::run_queue(
                    runner(),
                    transports,
                    shutdown.clone(),
                )));
            }
            Self::Relay(relay, dkim) => {
                let relay_config = config
                    .delivery
                    .relay
                    .as_ref()
                    .expect("checked by the config");
                tracing::info!(
                    event = "delivery.relay_mode",
                    relay = %format!("{}:{}", relay.host, relay.port),
                    tls = ?relay.tls,
                    connections = relay_config.connections,
                );
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
                let transports = signed(
                    delivery::RelayTransport::pool(relay, relay_config.connections),
                    &dkim,
                );
                tracker.spawn(health.register(DISPATCHER).run(delivery::run_queue(
                    runner(),
                    transports,
                    shutdown.clone(),
                )));
            }
            Self::Outbox => {
                let outbox = config.server.data_dir.join("outbox");
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
                tracker.spawn(
                    health
                        .register(delivery::runner::WORKER)
                        .run(delivery::run_outbox(
                            app.spool.clone(),
                            outbox,
                            app.events.clone(),
                            shutdown.clone(),
                        )),
                );
            }
        }
    }
}

const DISPATCHER: &str = "delivery dispatcher";

/// Wraps the transports in DKIM signing when keys are configured.
fn signed(
    transports: Vec<Box<dyn delivery::Transport>>,
    dkim: &Arc<delivery::DkimKeys>,
) -> Vec<Box<dyn delivery::Transport>> {
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
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| match addr.port() {
            0 => format!("cannot listen on {addr}"),
            _ => format!("cannot listen on {addr} (is another program using the port?)"),
        })
}

/// What SIGHUP applies: the certificate and the outbound policy.
const RELOADABLE: &[&str] = &["policy", "tls.cert", "tls.key"];

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

    /// SIGHUP: reads the config file again and applies its certificate and
    /// `[policy]`. Open connections keep their TLS session; new ones get
    /// the new certificate. Anything wrong keeps the old settings. Returns
    /// the keys changed since the start that only a restart applies.
    pub fn reload(&self) -> anyhow::Result<Vec<String>> {
        let (config, text) = match &self.config.source {
            ConfigSource::File(path) => (Config::load(path)?, std::fs::read_to_string(path).ok()),
            ConfigSource::EmbeddedDefault => (self.config.clone(), None),
        };
        let tls = tls::server_config(&config)?;
        *self.smtp.tls.write_or_recover() = TlsAcceptor::from(tls);
        self.ledger.set_config(config.policy.clone());
        let unapplied = match (&self.config_text, &text) {
            (Some(old), Some(new)) => crate::config::diff::changed_keys(old, new)
                .into_iter()
                .filter(|k| {
                    !RELOADABLE
                        .iter()
                        .any(|r| k == r || k.starts_with(&format!("{r}.")))
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(unapplied)
    }

    /// Runs until SIGINT or SIGTERM, then shuts down; SIGHUP reloads.
    pub async fn until_signal(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        // From here on SIGHUP reloads and SIGTERM stops cleanly (before,
        // their default actions end the process).
        tracing::info!(event = "server.signals_ready");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => match self.reload() {
                    Ok(unapplied) => {
                        if !unapplied.is_empty() {
                            tracing::warn!(
                                event = "server.reload_incomplete",
                                keys = %unapplied.join(","),
                                "these changed keys take effect only after a restart"
                            );
                        }
                        tracing::info!(event = "server.reloaded", "certificate and [policy] reloaded")
                    }
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
