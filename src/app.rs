//! The one place the application is assembled: store, clock, server key,
//! the scorer's ledger, spool, event subscribers, accounts and scorer.
//! `serve`, every offline CLI command, the policy simulator and the tests
//! all build it here, so no path runs with a piece missing (an offline
//! `account unblock` that leaves the scorer's windows behind, say).
//!
//! Listeners and delivery workers are `server`'s: they only run in `serve`.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::task::TaskTracker;

use crate::accounts::lockout::{self, Lockouts};
use crate::accounts::{Accounts, AccountsParts, Passwords, TrustRule};
use crate::admin::Ops;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::config::StoreBackend;
use crate::events::{Events, Fanout, Listener};
use crate::policy::notice::OperatorNotices;
use crate::policy::scorer::contacts::ContactKey;
use crate::policy::scorer::{Ledger, Preload, Scorer};
use crate::secrets::ServerKey;
use crate::spool::{CommitHook, Spool, StoreSpool};
#[cfg(feature = "testing")]
use crate::store::fault::FaultSwitch;
use crate::store::postgres::PgStore;
use crate::store::{SharedData, Store, identity};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::{Metrics, MetricsEvents};

/// How the store and the server key are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// `serve`: creates the data folder, the store and the key on the
    /// first start.
    CreateIfMissing,
    /// Offline commands: an existing store and key, never a new one.
    Existing,
}

/// Wraps the real spool (tests inject storage failures with it).
#[cfg(feature = "testing")]
pub type SpoolWrapper = Box<dyn FnOnce(Arc<dyn Spool>) -> Arc<dyn Spool> + Send>;

/// Optional replacements for the defaults, for tests and the simulator.
/// The storage knobs exist only with the `testing` feature.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    /// `serve --init`: a new, empty store where an old one is missing,
    /// empty or foreign (`store::identity`).
    pub init: bool,
    /// Open the store on a disk whose fsyncs this switch can make fail.
    #[cfg(feature = "testing")]
    pub store_faults: Option<Arc<FaultSwitch>>,
    /// Wraps the spool (e.g. a failing one).
    #[cfg(feature = "testing")]
    pub spool: Option<SpoolWrapper>,
}

/// The assembled application.
pub struct App {
    pub config: Config,
    /// This node's own store: the spool (and, with the embedded backend,
    /// everything else too).
    pub store: Store,
    /// Accounts, blocks and the scorer's state: `store` itself, or the
    /// PostgreSQL database every node shares (`[store]`).
    pub shared: SharedData,
    /// The shared database, with `store.backend = "postgres"`.
    pub postgres: Option<PgStore>,
    pub clock: Arc<dyn Clock>,
    pub key: Arc<ServerKey>,
    pub metrics: Arc<Metrics>,
    /// Which workers are alive (readiness); panics are reported here.
    pub health: Arc<Health>,
    /// The scorer's per-account windows.
    pub ledger: Arc<Ledger>,
    pub spool: Arc<dyn Spool>,
    /// Every subscriber, in order: ledger, metrics, operator notices, sink.
    pub events: Arc<dyn Events>,
    pub accounts: Accounts,
    pub scorer: Arc<Scorer>,
    /// The portal's own argon2 budget, apart from SMTP AUTH's.
    pub portal_passwords: Arc<Passwords>,
    /// The brute-force counters (also inside `accounts`), saved by `serve`.
    pub lockouts: Arc<Lockouts>,
    /// Background work that must finish before the process ends (notice
    /// mails being queued).
    tasks: TaskTracker,
}

impl App {
    /// Assembles the application on `config`'s data folder. `sink` is where
    /// events end up (the log; a recorder in tests).
    pub fn open(
        config: &Config,
        how: Open,
        sink: Arc<dyn Listener>,
        overrides: Overrides,
    ) -> anyhow::Result<Self> {
        let store = open_store(
            config,
            how,
            overrides.init,
            #[cfg(feature = "testing")]
            overrides.store_faults,
        )?;
        let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let key = Arc::new(load_key(config, how, &store)?);
        let metrics = Metrics::new();
        // `serve` reads every saved state now, so the SMTP path never waits
        // for one; a CLI command reads only the accounts it touches.
        let preload = match how {
            Open::CreateIfMissing => Preload::All,
            Open::Existing => Preload::OnDemand,
        };
        let (shared, postgres) = open_shared(config, &store, &key)?;
        let contact_key = ContactKey::from_bytes(&key.derive_key("policy-contacts"));
        let ledger = Ledger::load(
            config.policy.clone(),
            clock.clone(),
            &shared,
            preload,
            contact_key,
        )
        .context("cannot read the scorer's saved state")?;
        if let Some(pg) = &postgres {
            watch_shared(pg, &metrics);
        }
        let health = Health::new();
        let spool = spool(
            &store,
            &clock,
            &metrics,
            &ledger,
            &health,
            #[cfg(feature = "testing")]
            overrides.spool,
        );
        let tasks = TaskTracker::new();
        let notices = OperatorNotices::new(
            spool.clone(),
            config.server.hostname.clone(),
            &config.policy,
            tasks.clone(),
        )?;
        // The ledger hears logins and delivery outcomes first; the log last.
        let events: Arc<dyn Events> = Arc::new(Fanout::new(vec![
            ledger.clone(),
            Arc::new(MetricsEvents::new(metrics.clone())),
            Arc::new(notices),
            sink,
        ]));
        health.report_to(events.clone());
        let portal_passwords = Arc::new(Passwords::new(config.lockout.auth_queue)?);
        let lockouts = Arc::new(Lockouts::new(
            config.lockout.clone(),
            clock.clone(),
            ledger.clone(),
            key.derive_key("lockout counters"),
        ));
        // `serve` carries on with the counters it had (a restart is no
        // way out of a lockout).
        if how == Open::CreateIfMissing {
            let since = clock
                .unix()
                .saturating_sub(lockouts.longest_window().as_secs());
            for saved in shared
                .lockouts_saved(since)
                .context("cannot read the saved lockout counters")?
            {
                lockouts.restore(&saved);
            }
        }
        // Several nodes count brute force as one (`lockout::peers`).
        if let Some(pg) = &postgres {
            let pg = pg.clone();
            lockouts.publish_to(Arc::new(move |note: lockout::Note| {
                pg.announce_lockout(note.to_text())
            }));
        }
        let accounts = Accounts::new(AccountsParts {
            store: shared.clone(),
            passwords: Arc::new(Passwords::new(config.lockout.auth_queue)?),
            lockouts: lockouts.clone(),
            clock: clock.clone(),
            events: events.clone(),
            key: key.clone(),
            spool: spool.clone(),
            hostname: config.server.hostname.clone(),
            totp_issuer: config.accounts.totp_issuer.clone(),
            on_lift: ledger.clone(),
            networks: ledger.clone(),
            trust: TrustRule {
                days: config.accounts.trusted_network_days,
                span: config.accounts.trusted_network_span.as_secs(),
            },
            portal_url: config.portal.public_url.clone(),
        });
        let scorer = Scorer::new(
            ledger.clone(),
            accounts.clone(),
            events.clone(),
            spool.clone(),
        );
        Ok(Self {
            config: config.clone(),
            store,
            shared,
            postgres,
            clock,
            key,
            metrics,
            health,
            ledger,
            spool,
            events,
            accounts,
            scorer,
            portal_passwords,
            lockouts,
            tasks,
        })
    }

    /// The operations the admin API and the offline CLI run.
    pub fn ops(&self) -> Ops {
        Ops {
            accounts: self.accounts.clone(),
            spool: self.spool.clone(),
            store: self.store.clone(),
            shared_backend: self.shared.backend(),
            ledger: self.ledger.clone(),
        }
    }

    /// Waits for background work an operation started (notice mails being
    /// queued), so an offline command leaves what the server would.
    pub async fn close(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn open_store(
    config: &Config,
    how: Open,
    init: bool,
    #[cfg(feature = "testing")] faults: Option<Arc<FaultSwitch>>,
) -> anyhow::Result<Store> {
    let dir = &config.server.data_dir;
    if how == Open::CreateIfMissing {
        // With a shared database, a node joins with the first node's key
        // already in place: only the marker says this folder was used.
        let key = config.secret_key_file();
        let used_by: &[&std::path::Path] = match config.store.backend {
            StoreBackend::Redb => &[&key],
            StoreBackend::Postgres => &[],
        };
        identity::check_before_create(dir, used_by, init)?;
    }
    let opened = match how {
        #[cfg(feature = "testing")]
        Open::CreateIfMissing if let Some(switch) = faults => {
            Store::open_or_create_faulty(dir, switch)
        }
        Open::CreateIfMissing => Store::open_or_create(dir),
        Open::Existing => Store::open_existing(dir),
    };
    // The cause stays a `StoreError`: the CLI words `Locked` and `Missing`.
    let store = opened.map_err(anyhow::Error::new)?;
    if how == Open::CreateIfMissing {
        store.check_identity(dir, init)?;
    }
    Ok(store)
}

/// The shared data: the embedded store, or the PostgreSQL database (its
/// schema brought up to date, its identity checked against the server key
/// and this node's marker).
fn open_shared(
    config: &Config,
    store: &Store,
    key: &Arc<ServerKey>,
) -> anyhow::Result<(SharedData, Option<PgStore>)> {
    match config.store.backend {
        StoreBackend::Redb => Ok((Arc::new(store.clone()), None)),
        StoreBackend::Postgres => {
            let pg = PgStore::open(&config.store)
                .context("cannot open the shared PostgreSQL store (`store.url`)")?;
            pg.check_identity(
                &config.server.data_dir,
                |id| key.seal(STORE_IDENTITY, id),
                |sealed| key.open(STORE_IDENTITY, sealed),
            )?;
            Ok((Arc::new(pg.clone()), Some(pg)))
        }
    }
}

/// The shared database's reachability as a metric and a log event. The
/// node stays ready (readiness reflects local faults only): it refuses new
/// mail with 451 4.3.0 and AUTH it cannot check with 454 4.7.0 meanwhile.
fn watch_shared(pg: &PgStore, metrics: &Arc<Metrics>) {
    let gauge = metrics.gauge(crate::telemetry::metrics::SHARED_STORE_UP);
    gauge.set(1.0);
    pg.watch(Arc::new(move |up| {
        gauge.set(if up { 1.0 } else { 0.0 });
        if up {
            tracing::warn!(
                event = "store.shared_up",
                "the PostgreSQL store answers again"
            );
        } else {
            tracing::error!(
                event = "store.shared_down",
                "the PostgreSQL store does not answer: new mail gets 451 4.3.0 until it does"
            );
        }
    }));
}

/// What the shared database's test value is sealed for.
pub(crate) const STORE_IDENTITY: &str = "shared store identity";

fn load_key(config: &Config, how: Open, store: &Store) -> anyhow::Result<ServerKey> {
    let path = config.secret_key_file();
    match how {
        Open::CreateIfMissing => ServerKey::load_or_create(&path, store),
        Open::Existing => ServerKey::load_existing(&path, store),
    }
}

fn spool(
    store: &Store,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    ledger: &Arc<Ledger>,
    health: &Arc<Health>,
    #[cfg(feature = "testing")] wrap: Option<SpoolWrapper>,
) -> Arc<dyn Spool> {
    // The ledger's changed rows ride along with the spool's group commits.
    let hook: Arc<dyn CommitHook> = ledger.clone();
    let spool: Arc<dyn Spool> = Arc::new(StoreSpool::with_hook(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        Some(hook),
        health,
    ));
    #[cfg(feature = "testing")]
    if let Some(wrap) = wrap {
        return wrap(spool);
    }
    spool
}
