//! The dev outbox: each queued message becomes `<outbox>/<id>.eml` (file and
//! folder fsync'd) and only then leaves the spool. A crash in between
//! rewrites the same file on restart: delivery is at least once. Files are
//! 0600 in a 0700 folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::{Event, EventKind, Events};
use crate::spool::{QueueEntry, QueueWrite, Spool};

pub async fn run_outbox(
    spool: Arc<dyn Spool>,
    dir: PathBuf,
    events: Arc<dyn Events>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match deliver_ready(&*spool, &dir, &*events).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::error!(event = "delivery.error", target = "outbox", error = %e);
                backoff = (backoff * 2).min(Duration::from_secs(60));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        tokio::select! {
            _ = spool.wait_for_work(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
        // Let a burst gather, so one spool commit forgets many messages.
        tokio::time::sleep(GATHER).await;
    }
}

const GATHER: Duration = Duration::from_millis(20);

/// Writes every ready message, then forgets them all in one spool commit.
async fn deliver_ready(spool: &dyn Spool, dir: &Path, events: &dyn Events) -> anyhow::Result<()> {
    let mut delivered = Vec::new();
    let mut failure = None;
    for entry in spool.ready().await? {
        let Some(body) = spool.body(entry.id).await? else {
            continue;
        };
        let path = dir.join(format!("{}.eml", entry.id));
        let write_path = path.clone();
        let written =
            tokio::task::spawn_blocking(move || write_durably(&write_path, &body)).await?;
        if let Err(e) = written {
            failure = Some(anyhow::anyhow!("cannot write {}: {e}", path.display()));
            break;
        }
        delivered.push((entry, path));
    }
    if !delivered.is_empty() {
        let removals = delivered
            .iter()
            .map(|(e, _)| QueueWrite::Remove(e.id))
            .collect();
        spool.apply(removals).await?;
        for (entry, path) in &delivered {
            emit_success(events, entry, path);
        }
    }
    failure.map_or(Ok(()), Err)
}

fn emit_success(events: &dyn Events, entry: &QueueEntry, path: &Path) {
    events.emit(
        Event::new(EventKind::DeliverySuccess)
            .account(&entry.envelope.account)
            .message_id(entry.id.to_string())
            .recipients(entry.envelope.recipients.len())
            .size(entry.envelope.size)
            .target(format!("outbox:{}", path.display())),
    );
    events.emit(
        Event::new(EventKind::DeliveryOutcome)
            .account(&entry.envelope.account)
            .message_id(entry.id.to_string())
            .outcome(entry.envelope.recipients.len(), 0),
    );
}

/// Write to a temporary name, fsync, rename, fsync the folder. The folder
/// is 0700 and each message 0600: they are mail (`files`).
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("outbox files live in a folder");
    crate::files::create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("message")
    ));
    let mut file = crate::files::create_private(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
