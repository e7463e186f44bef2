//! The store stops taking writes while the queue is being delivered (the
//! fault switch makes every fsync fail, as a full or dying disk would):
//! what reached the relay is never sent again, and once the disk works
//! again the store is reopened in place and the queue drains.

use std::collections::BTreeMap;
use std::time::Duration;

use mailwarden::store::fault::{Fault, FaultSwitch};
use serde_json::json;

use super::wait_queue_empty;
use super::{
    Received, Sink, SinkOptions, events_named, eventually, relay_server_in, relay_server_with,
    relay_toml,
};
use crate::common::ALICE;

const MESSAGES: usize = 8;
const WORKERS: usize = 2;

/// Deliveries per recipient (one recipient per message).
fn per_message(messages: &[Received]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for m in messages.iter().filter(|m| !m.is_dsn()) {
        for to in m.to() {
            *count.entry(to).or_insert(0) += 1;
        }
    }
    count
}

fn body(i: usize) -> Vec<u8> {
    format!(
        "From: <alice@example.com>\r\nSubject: m{i}\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\n\
         Message-ID: <m{i}@example.com>\r\n\r\nmessage {i}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_the_store_refuses_are_kept_and_each_message_is_delivered_once() {
    // Every message is deferred once; its retry is stored by the relay,
    // whose 250 comes 2 s later: the disk fails meanwhile, so the outcome
    // of what the relay has cannot be recorded.
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^later", "reply": "451 4.3.0 Not now", "times": MESSAGES},
            {"when": "data", "match": "^later", "delay": 2.0},
        ])),
        ..Default::default()
    });
    let switch = FaultSwitch::new();
    let overrides = mailwarden::server::Overrides {
        store_faults: Some(switch.clone()),
        ..Default::default()
    };
    let toml = format!(
        "{}\n{}",
        relay_toml(sink.port, "retry_schedule = [\"2s\"]", "")
            .replace("connections = 1", &format!("connections = {WORKERS}")),
        crate::common::BULK_POLICY
    );
    let (mut server, _) = relay_server_with(&toml, overrides).await;
    let mut c = server.alice().await;
    for i in 0..MESSAGES {
        let to = format!("later{i}@example.org");
        let r = c.send_message(ALICE, &[to.as_str()], &body(i)).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    eventually(|| events_named(&server, "delivery.deferred").len() == MESSAGES).await;
    assert!(per_message(&sink.messages()).is_empty());

    // The retries are at the relay, waiting for its 250: the disk fails.
    let _ = sink.wait_messages(1).await;
    switch.set(Fault::Io);
    eventually(|| !events_named(&server, "delivery.paused").is_empty()).await;
    // Long enough for the old behaviour (a worker paused 1 s after a failed
    // commit, and the message was handed out again) to send them again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = per_message(&sink.messages());
    let sent: usize = during.values().sum();
    println!(
        "{sent} deliveries of {} messages reached the relay while the store refused writes",
        during.len()
    );
    assert!(sent > 0, "the retries never ran");
    let twice: Vec<_> = during.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent again while failing: {twice:?}");
    // Bounded by what the workers had under way when the commits began to
    // fail (the one at the relay, and at most the next one each, started
    // before the failure was known), not by the queue.
    assert!(sent <= 2 * WORKERS, "{sent}: the workers did not stop");
    let paused = &events_named(&server, "delivery.paused")[0];
    assert!(paused.error.is_some(), "{paused:?}");

    // The fault goes away: the store is reopened in place, the kept
    // outcomes are recorded, delivery resumes, and every message is
    // delivered exactly once in total, without a restart.
    switch.set(Fault::None);
    eventually(|| !events_named(&server, "delivery.resumed").is_empty()).await;
    wait_queue_empty(&server).await;
    let total = per_message(&sink.messages());
    println!(
        "after the fault: {} deliveries of {} messages",
        total.values().sum::<usize>(),
        total.len()
    );
    assert_eq!(total.len(), MESSAGES, "{total:?}");
    assert!(total.values().all(|n| *n == 1), "{total:?}");

    // A restart reads the outcomes that reached the disk: nothing again.
    server.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(per_message(&sink.messages()), total);
}

/// The same on a real full disk: the data folder is a small tmpfs. The
/// disk fills while retries are at the relay; the first commit that needs
/// new space (a large message, answered 452) stops the store, so the
/// outcomes of what the relay has cannot be recorded: not one message
/// reaches the relay twice, and once the filler is deleted every message
/// is delivered exactly once, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_during_delivery_sends_nothing_twice() {
    use std::os::unix::fs::MetadataExt;
    const SHORT: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = crate::common::tmpfs::Tmpfs::mount(&dir.path().join("data"), 24 << 20) else {
        return;
    };
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^later", "reply": "451 4.3.0 Not now", "times": SHORT},
            {"when": "data", "match": "^later", "delay": 1.5},
        ])),
        ..Default::default()
    });
    let toml = format!(
        "{}\n{}",
        relay_toml(sink.port, "retry_schedule = [\"1s\"]", "")
            .replace("connections = 1", &format!("connections = {WORKERS}")),
        crate::common::BULK_POLICY
    );
    let (mut server, _) = relay_server_in(dir, &toml, Default::default()).await;
    let mut c = server.alice().await;
    for i in 0..SHORT {
        let to = format!("later{i}@example.org");
        let r = c.send_message(ALICE, &[to.as_str()], &body(i)).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    eventually(|| events_named(&server, "delivery.deferred").len() == SHORT).await;

    // A retry is at the relay, waiting for its 250: the disk fills up.
    let _ = sink.wait_messages(1).await;
    disk.fill();
    let store = std::fs::metadata(server.running().store.path()).unwrap();
    let big = crate::common::sized_message(store.blocks() as usize * 512 + (512 << 10));
    let r = c.send_message(ALICE, &["bob@example.org"], &big).await;
    assert_eq!(r.line(), "452 4.3.1 Insufficient system storage");
    eventually(|| !events_named(&server, "delivery.paused").is_empty()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = per_message(&sink.messages());
    let sent: usize = during.values().sum();
    println!(
        "{sent} deliveries of {} messages reached the relay while the disk was full",
        during.len()
    );
    let twice: Vec<_> = during.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent again while full: {twice:?}");
    assert!(sent <= 2 * WORKERS, "{sent}: the workers did not stop");
    let paused = &events_named(&server, "delivery.paused")[0];
    assert!(
        paused
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no space left"),
        "{paused:?}"
    );

    disk.free();
    eventually(|| !events_named(&server, "delivery.resumed").is_empty()).await;
    wait_queue_empty(&server).await;
    let total = per_message(&sink.messages());
    println!(
        "after the space was freed: {} deliveries of {} messages",
        total.values().sum::<usize>(),
        total.len()
    );
    assert_eq!(total.len(), SHORT, "{total:?}");
    assert!(total.values().all(|n| *n == 1), "{total:?}");
    server.stop().await;
}
