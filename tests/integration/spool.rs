//! Durability: group commit, and store failures that must never become 250.

use std::sync::Arc;
use std::time::Duration;

use mailwarden::server::Overrides;
use mailwarden::store::fault::{Fault, FaultSwitch};

use crate::common::client::Client;
use crate::common::{BULK_POLICY, PASSWORD, TestServer, http_get, metric};

const BODY: &[u8] = b"From: <alice@example.com>\r\nSubject: load\r\n\r\nhello\r\n";

/// `sessions` clients at once, each sending `per_session` messages over one
/// authenticated connection. Returns (spool fsyncs, messages accepted).
async fn load(server: &TestServer, sessions: usize, per_session: usize) -> (u64, u64) {
    let metrics_addr = server.running().metrics;
    let (_, before) = http_get(metrics_addr, "/metrics").await;
    // Everyone authenticates first (argon2 is slow on purpose), then all
    // write at once: that is "concurrent writers".
    let start = Arc::new(tokio::sync::Barrier::new(sessions));
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (addr, cert, start) = (server.submissions(), server.cert_path(), start.clone());
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = Client::implicit_tls(addr, &cert).await;
            c.ehlo().await;
            assert_eq!(c.auth_plain("alice@example.com", PASSWORD).await.code, 235);
            start.wait().await;
            for _ in 0..per_session {
                let r = c
                    .send_message("alice@example.com", &["bob@example.org"], BODY)
                    .await;
                assert_eq!(r.code, 250, "{r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (sessions * per_session) as u64;
    // Delivery's own commits count too: wait until the spool is drained.
    server.wait_outbox(total as usize).await;
    let mut after = String::new();
    for _ in 0..200 {
        after = http_get(metrics_addr, "/metrics").await.1;
        if metric(&after, "mailwarden_spool_committed_writes_total")
            >= metric(&before, "mailwarden_spool_committed_writes_total") + 2 * total
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let fsyncs = metric(&after, "mailwarden_spool_fsyncs_total")
        - metric(&before, "mailwarden_spool_fsyncs_total");
    let accepted = metric(&after, "mailwarden_messages_accepted_total")
        - metric(&before, "mailwarden_messages_accepted_total");
    (fsyncs, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writers_share_fsyncs() {
    // 50 sessions from one address: above the default per-IP limit of 20.
    let server = TestServer::start_with(&format!(
        "{BULK_POLICY}[smtp]\nmax_connections_per_ip = 60\n"
    ))
    .await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (fsyncs, accepted) = load(&server, 50, 10).await;
    assert_eq!(accepted, 500);
    let ratio = fsyncs as f64 / accepted as f64;
    println!(
        "concurrency 50: {fsyncs} spool fsyncs for {accepted} messages = {ratio:.3} per message"
    );
    assert!(ratio <= 0.2, "{fsyncs} fsyncs for {accepted} messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsyncs_per_message_at_1_and_10_writers() {
    let server = TestServer::start_with(BULK_POLICY).await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (f1, a1) = load(&server, 1, 50).await;
    let (f10, a10) = load(&server, 10, 20).await;
    println!(
        "concurrency 1: {f1} fsyncs / {a1} messages = {:.3}",
        f1 as f64 / a1 as f64
    );
    println!(
        "concurrency 10: {f10} fsyncs / {a10} messages = {:.3}",
        f10 as f64 / a10 as f64
    );
    // A lone writer pays about one insert commit per message (plus delivery's).
    assert_eq!(a1, 50);
    assert!((50..=100).contains(&f1), "{f1}");
    assert_eq!(a10, 200);
    assert!(f10 < f1 * 4, "{f10} fsyncs at concurrency 10");
}

async fn submit_on_failing_disk(fault: Fault, expected: &str) {
    let switch = FaultSwitch::new();
    let overrides = Overrides {
        store_faults: Some(switch.clone()),
        ..Overrides::default()
    };
    let server = TestServer::start_full("", overrides).await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    c.auth_plain("alice@example.com", PASSWORD).await;
    switch.set(fault);
    let reply = c
        .send_message("alice@example.com", &["bob@example.org"], BODY)
        .await;
    assert_eq!(reply.line(), expected);
    // The session goes on; nothing was accepted or delivered.
    assert_eq!(c.cmd("NOOP").await.code, 250);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(crate::common::read_outbox(&server.outbox()).is_empty());
    let events = server.events.snapshot();
    assert!(!events.iter().any(|e| e.name() == "message.accepted"));
    let rejected = events
        .iter()
        .find(|e| e.name() == "message.rejected")
        .expect("rejected event");
    assert_eq!(rejected.code, Some(expected[..3].parse().unwrap()));

    // The disk works again: the store is reopened in place, and new mail is
    // accepted within 5 s, without a restart.
    switch.set(Fault::None);
    let back = std::time::Instant::now();
    let id = loop {
        let reply = c
            .send_message("alice@example.com", &["bob@example.org"], AFTER)
            .await;
        if reply.code == 250 {
            break crate::common::queued_id(&reply);
        }
        assert_eq!(reply.code / 100, 4, "{reply:?}");
        assert!(back.elapsed() < Duration::from_secs(5), "still {reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(server.wait_outbox_id(&id).await.ends_with(AFTER));
    // The refused message stays refused: its commit's data may have
    // reached the disk although the fsync failed, but it is not delivered
    // (the client was told to send it again).
    crate::common::assert_outbox_stays(&server, 1).await;
}

const AFTER: &[u8] = b"From: <alice@example.com>\r\nSubject: after\r\n\r\nhello again\r\n";

#[tokio::test]
async fn a_failed_fsync_answers_451_never_250() {
    submit_on_failing_disk(Fault::Io, "451 4.3.0 Temporary failure, message not queued").await;
}

#[tokio::test]
async fn a_full_disk_answers_452() {
    submit_on_failing_disk(Fault::NoSpace, "452 4.3.1 Insufficient system storage").await;
}

/// The same on a real full disk: the data folder is a small tmpfs, filled
/// to the last byte. The store answers 452 4.3.1 (never 250) and, once the
/// filler is deleted, takes mail again within 5 s, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_answers_452_and_takes_mail_again_within_5s_of_space_freed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = crate::common::tmpfs::Tmpfs::mount(&dir.path().join("data"), 24 << 20) else {
        return;
    };
    let text = crate::common::test_config_text("[server]\nmin_free_disk = \"1MiB\"\n");
    let mut server = TestServer::start_in(dir, &text, Overrides::default()).await;
    server.add_account("alice@example.com", PASSWORD).await;
    let metrics = server.running().metrics;
    let mut c = server.alice().await;
    let first = c
        .send_message("alice@example.com", &["bob@example.org"], BODY)
        .await;
    let first = crate::common::queued_id(&first);
    server.wait_outbox_id(&first).await;
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);

    let filled = disk.fill();
    // Bigger than everything the store file has ever written: it cannot
    // fit in the space the file already holds.
    let store = std::fs::metadata(server.running().store.path()).unwrap();
    let big = crate::common::sized_message(store.blocks() as usize * 512 + (512 << 10));
    println!(
        "filler {} KiB; store file {} KiB ({} KiB allocated); message {} KiB",
        filled >> 10,
        store.len() >> 10,
        store.blocks() / 2,
        big.len() >> 10
    );
    let reply = c
        .send_message("alice@example.com", &["bob@example.org"], &big)
        .await;
    assert_eq!(reply.line(), "452 4.3.1 Insufficient system storage");
    // The store refuses every write now, however small, as a full disk.
    let reply = c
        .send_message("alice@example.com", &["bob@example.org"], BODY)
        .await;
    assert_eq!(reply.line(), "452 4.3.1 Insufficient system storage");
    let (status, body) = http_get(metrics, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("below server.min_free_disk"), "{body}");
    assert_eq!(http_get(metrics, "/healthz").await, (200, "ok\n".into()));

    disk.free();
    let freed = std::time::Instant::now();
    let id = loop {
        let reply = c
            .send_message("alice@example.com", &["bob@example.org"], AFTER)
            .await;
        if reply.code == 250 {
            break crate::common::queued_id(&reply);
        }
        assert_eq!(reply.line(), "452 4.3.1 Insufficient system storage");
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "still {reply:?} {:?} after the space was freed",
            freed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("250 {:?} after the filler was deleted", freed.elapsed());
    assert!(server.wait_outbox_id(&id).await.ends_with(AFTER));
    // Only the two accepted messages were ever delivered.
    crate::common::assert_outbox_stays(&server, 2).await;
    server.stop().await;
}
