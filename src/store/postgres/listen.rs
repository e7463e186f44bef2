//! One connection per node, outside the pool, that LISTENs for changes
//! (`pg_notify` at each commit) and hands them to the subscribers.
//! Notifications sent while it was disconnected are lost, so after every
//! reconnect the subscribers hear `Change::All` (drop every cache, look
//! again). It retries every second while the database is away.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::{CHANNEL, Inner, PgStore};
use crate::store::shared::Change;

const RETRY: Duration = Duration::from_secs(1);

pub(super) async fn run(inner: Weak<Inner>) {
    let mut first = true;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let connected = strong.pg.connect(strong.tls.clone()).await;
        let (client, mut connection) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(event = "store.listen_failed", error = %e);
                drop(strong);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        drop(strong);
        let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = stream.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        if client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .is_err()
        {
            driver.abort();
            tokio::time::sleep(RETRY).await;
            continue;
        }
        // Anything may have changed while nobody listened.
        if !first && let Some(strong) = inner.upgrade() {
            tracing::info!(event = "store.listen_resumed");
            PgStore::publish(&strong, Change::All);
        }
        first = false;
        while let Some(payload) = messages.recv().await {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            if let Some(change) = Change::from_payload(&payload) {
                PgStore::publish(&strong, change);
            }
        }
        // The connection ended: the database went away.
        tracing::warn!(
            event = "store.listen_lost",
            "lost the PostgreSQL change listener; retrying"
        );
        drop(client);
        tokio::time::sleep(RETRY).await;
    }
}
