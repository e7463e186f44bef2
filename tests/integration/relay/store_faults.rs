//! The store stops taking writes while the queue is being delivered (the
//! fault switch makes every fsync fail, as a full or dying disk would):
//! what reached the relay is never sent again in this process.

use std::collections::BTreeMap;
use std::time::Duration;

use mailwarden::store::fault::{Fault, FaultSwitch};
use serde_json::json;

use super::wait_queue_empty;
use super::{Received, Sink, SinkOptions, events_named, eventually, relay_server_with, relay_toml};
use crate::common::ALICE;

const MESSAGES: usize = 16;

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
async fn outcomes_the_store_refuses_are_kept_and_nothing_is_sent_twice() {
    // Every message is deferred once, so its retry comes after the disk has
    // started failing.
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^later", "reply": "451 4.3.0 Not now", "times": MESSAGES},
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
            .replace("connections = 1", "connections = 4"),
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

    // The disk fails before any retry is due.
    switch.set(Fault::Io);
    eventually(|| !events_named(&server, "delivery.paused").is_empty()).await;
    // Long enough for the old behaviour (a worker paused 1 s after a failed
    // commit, and the message was handed out again) to resend: it made 48
    // deliveries of these 16 messages in 20 s.
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
    // Bounded by what the workers had in flight when the commits began to
    // fail, not by the queue.
    assert!(sent < MESSAGES, "{sent}: the workers did not stop");
    let paused = &events_named(&server, "delivery.paused")[0];
    assert!(paused.error.is_some(), "{paused:?}");

    // The fault goes away. redb keeps refusing writes after an I/O error
    // until the store is reopened, so nothing more is sent in this process,
    // and what was sent is still not sent again.
    switch.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = per_message(&sink.messages());
    assert!(after.values().all(|n| *n == 1), "{after:?}");
    assert_eq!(after, during);

    // A restart reopens the store: every message is delivered; the only
    // ones sent twice are those whose outcome never reached the disk (kept
    // in memory when the process stopped), each exactly twice.
    server.restart().await;
    wait_queue_empty(&server).await;
    let total = per_message(&sink.messages());
    println!(
        "after the restart: {} deliveries of {} messages",
        total.values().sum::<usize>(),
        total.len()
    );
    assert_eq!(total.len(), MESSAGES, "{total:?}");
    for (to, n) in &total {
        let expected = if during.contains_key(to) { 2 } else { 1 };
        assert_eq!(*n, expected, "{to}: {total:?}");
    }
}
