//! Where account and queue commands run: the running server's admin API,
//! or with no server the application on the existing store.

use std::sync::Arc;

use anyhow::bail;

use super::output::describe;
use crate::admin::client::{AdminClient, Reach};
use crate::admin::ops::Request;
use crate::app::{App, Open, Overrides};
use crate::config::Config;
use crate::events::TracingEvents;
use crate::store::StoreError;

/// Runs a command on the running server, or on the store when none runs.
pub(super) async fn run_op(config: &Config, request: Request, json: bool) -> anyhow::Result<()> {
    let human = describe(&request);
    let result = match Target::reach(config).await? {
        Target::Server(client) => client.run(&request).await?,
        Target::Local(app) => {
            let result = app.ops().run(request).await;
            app.close().await;
            result?
        }
    };
    if json {
        println!("{result}");
    } else {
        let text = human(&result);
        if !text.is_empty() {
            println!("{text}");
        }
    }
    Ok(())
}

/// Where account and queue commands go: the running server's admin API,
/// or, with no server, the application assembled on the store the way
/// `serve` assembles it.
enum Target {
    Server(AdminClient),
    Local(Box<App>),
}

impl Target {
    async fn reach(config: &Config) -> anyhow::Result<Self> {
        match AdminClient::discover(config).await? {
            Reach::Server(client) => Ok(Self::Server(client)),
            Reach::NoServer { addr } => {
                let opened = App::open(
                    config,
                    Open::Existing,
                    Arc::new(TracingEvents::default()),
                    Overrides::default(),
                );
                match opened {
                    Ok(app) => Ok(Self::Local(Box::new(app))),
                    Err(e) => match e.downcast_ref::<StoreError>() {
                        Some(StoreError::Locked(path)) => bail!(
                            "the store {} is in use by a running server, but its admin API at {addr} does not answer",
                            path.display()
                        ),
                        Some(StoreError::Missing(path)) => bail!(
                            "no server answers at {addr} and there is no store at {} (start `mailwarden serve` once, or pass --config)",
                            path.display()
                        ),
                        _ => Err(e),
                    },
                }
            }
        }
    }
}
