//! `store migrate` and `store copy`: the shared PostgreSQL store
//! (docs/operator-guide.md, "Running several nodes").

use anyhow::{Context, bail};

use crate::admin::client::{AdminClient, Reach};
use crate::config::{Config, StoreBackend};
use crate::secrets::ServerKey;
use crate::store::Store;
use crate::store::postgres::PgStore;

/// Applies the migrations the database lacks.
pub fn migrate(config: &Config, json: bool) -> anyhow::Result<()> {
    if config.store.backend != StoreBackend::Postgres {
        bail!("`store migrate` needs `store.backend = \"postgres\"` and `store.url`");
    }
    let pg = PgStore::connect(&config.store).context("cannot reach the PostgreSQL store")?;
    let done = pg.migrate()?;
    if json {
        println!("{}", serde_json::json!({"from": done.from, "to": done.to}));
    } else if done.from == done.to {
        println!("the schema is up to date (version {})", done.to);
    } else {
        println!(
            "migrated the schema from version {} to {}",
            done.from, done.to
        );
    }
    Ok(())
}

/// Copies this install's shared data into the database at `url`.
pub async fn copy(config: &Config, url: &str, json: bool) -> anyhow::Result<()> {
    if let Reach::Server(client) = AdminClient::discover(config).await? {
        bail!(
            "a server is running (admin API at {}): stop it before copying its store",
            client.addr()
        );
    }
    let (config, url) = (config.clone(), url.to_string());
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let store = Store::open_existing(&config.server.data_dir)?;
        let key = ServerKey::load_existing(&config.secret_key_file(), &store)?;
        let mut settings = config.store.clone();
        settings.url = Some(url);
        let pg = PgStore::open(&settings).context("cannot open the PostgreSQL store")?;
        // The database takes this install's key (or must have it already).
        pg.check_identity(
            &config.server.data_dir,
            |id| key.seal(crate::app::STORE_IDENTITY, id),
            |sealed| key.open(crate::app::STORE_IDENTITY, sealed),
        )?;
        Ok(pg.copy_from(&store)?)
    })
    .await??;
    if json {
        println!("{}", serde_json::to_value(&summary)?);
    } else {
        println!(
            "copied {} accounts, {} aliases and {} scorer states; the counts in PostgreSQL match",
            summary.accounts, summary.aliases, summary.scorer_states
        );
    }
    Ok(())
}
