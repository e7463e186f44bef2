//! `/readyz` on the metrics listener tells the truth: red while the store
//! refuses writes (green again once it is reopened), once a page of its
//! file is found damaged, and once the spool's commit thread or a delivery
//! worker has died, with the reason; a panic there is caught, logged with
//! its message and counted. `/healthz` stays green through all of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mailwarden::server::Overrides;
use mailwarden::spool::{QueueEntry, QueueId, QueueWrite, Spool};
use mailwarden::store::StoreError;
use mailwarden::store::fault::{Fault, FaultSwitch};

use crate::common::{ALICE, PASSWORD, TestServer, http_get};

const BODY: &[u8] = b"From: <alice@example.com>\r\nSubject: ready\r\n\r\nhello\r\n";

async fn faulty_server() -> (TestServer, std::sync::Arc<FaultSwitch>) {
    let switch = FaultSwitch::new();
    let overrides = Overrides {
        store_faults: Some(switch.clone()),
        ..Overrides::default()
    };
    let server = TestServer::start_full("", overrides).await;
    server.add_account(ALICE, PASSWORD).await;
    (server, switch)
}

async fn readyz(server: &TestServer) -> (u16, String) {
    http_get(server.running().metrics, "/readyz").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_red_with_the_reason_while_the_store_refuses_writes() {
    let (server, switch) = faulty_server().await;
    assert_eq!(readyz(&server).await, (200, "ready\n".to_string()));

    switch.set(Fault::NoSpace);
    // The last answer stands for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("store: cannot write: ") && body.contains("no space left"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "only the store fails: {body}");
    // Liveness is not readiness: the process still answers.
    assert_eq!(http_get(server.running().metrics, "/healthz").await.0, 200);
    // Still a full disk to the client, not "Previous I/O error" (451).
    let mut c = server.alice().await;
    let reply = c.send_message(ALICE, &["bob@example.org"], BODY).await;
    assert_eq!(reply.line(), "452 4.3.1 Insufficient system storage");

    // Space is back: the store is reopened in place; readiness turns green
    // and mail is accepted again within 5 s, without a restart.
    switch.set(Fault::None);
    let back = std::time::Instant::now();
    loop {
        let (status, body) = readyz(&server).await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = c.send_message(ALICE, &["bob@example.org"], BODY).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    println!(
        "ready and accepting {:?} after the fault was cleared",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_commit_thread_is_caught_counted_and_turns_readiness_red() {
    let (server, switch) = faulty_server().await;
    assert_eq!(readyz(&server).await.0, 200);
    let mut c = server.alice().await;
    switch.set(Fault::Panic);
    // The commit that panics answers no 250.
    let reply = c.send_message(ALICE, &["bob@example.org"], BODY).await;
    assert_eq!(reply.code, 451, "{reply:?}");
    switch.set(Fault::None);
    let panicked = server.wait_event("task.panicked").await;
    assert_eq!(panicked.target.as_deref(), Some("spool commit thread"));
    assert_eq!(
        panicked.error.as_deref(),
        Some("injected panic in fsync (FaultSwitch)")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.lines().any(|l| l == "spool commit thread: stopped"),
        "{body}"
    );
    let (_, metrics) = http_get(server.running().metrics, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "mailwarden_task_panics_total{task=\"spool commit thread\"} 1"),
        "{metrics}"
    );
    // Nothing is accepted that cannot be committed.
    let reply = c.send_message(ALICE, &["bob@example.org"], BODY).await;
    assert_eq!(reply.code, 451, "{reply:?}");
}

#[tokio::test]
async fn readiness_is_red_while_the_data_disk_has_less_than_min_free_disk() {
    // No disk this small is full; one this large is never free enough.
    let server = TestServer::start_with("[server]\nmin_free_disk = \"1KiB\"\n").await;
    assert_eq!(readyz(&server).await, (200, "ready\n".to_string()));
    let server = TestServer::start_with("[server]\nmin_free_disk = \"1000 PiB\"\n").await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("disk: ")
            && body.contains("below server.min_free_disk (1073741824000 MiB)"),
        "{body}"
    );
}

/// A message whose body is `marker` repeated, in lines of 72.
fn marked(marker: &str) -> Vec<u8> {
    let line = marker.repeat(72 / marker.len());
    format!(
        "From: <alice@example.com>\r\nSubject: {marker}\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\n\
         Message-ID: <{marker}@example.com>\r\n\r\n{}",
        format!("{line}\r\n").repeat(300)
    )
    .into_bytes()
}

/// Overwrites 8 KiB of the store file at the page holding `needle`, as a
/// bad sector or a stray write would, under the running server.
fn damage_page(path: &std::path::Path, needle: &[u8]) -> u64 {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the marker is in the store file") as u64;
    let page = at & !4095;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[0xA5; 8192], page).unwrap();
    file.sync_all().unwrap();
    page
}

/// A page of the store is damaged on disk under the running server. The
/// server has that page cached and would never read it again; the store
/// file's checksums are verified every 2 s, from the file: readiness turns
/// red within 5 s, naming the damage, and from then on no message gets a
/// 250 (451: nothing is committed to a damaged store). Liveness stays
/// green. A restart on the damaged file finds it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_damaged_under_the_running_server_turns_readiness_red_and_no_250_follows() {
    // The relay never answers: the messages stay queued, their bodies
    // are live pages of the store.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let toml = format!(
        "{}\n{}",
        crate::relay::relay_toml(port, "retry_schedule = [\"1h\"]", ""),
        crate::common::BULK_POLICY
    );
    let (mut server, _) = crate::relay::relay_server(&toml).await;
    let mut c = server.alice().await;
    for i in 0..6 {
        let r = c
            .send_message(ALICE, &["bob@example.org"], &marked(&format!("mark{i}-")))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(readyz(&server).await, (200, "ready\n".to_string()));
    let path = server.running().store.path().to_path_buf();
    let page = damage_page(&path, b"mark3-mark3-");
    let damaged = std::time::Instant::now();
    println!(
        "overwrote 8 KiB at {page} of {} bytes",
        std::fs::metadata(&path).unwrap().len()
    );
    let mut accepted_before = 0;
    let body = loop {
        let (status, body) = readyz(&server).await;
        if status == 503 {
            break body;
        }
        assert!(
            damaged.elapsed() < Duration::from_secs(5),
            "readiness still green {:?} after the damage",
            damaged.elapsed()
        );
        // Until the damage is found, mail is still taken (in new pages).
        let r = c.send_message(ALICE, &["bob@example.org"], BODY).await;
        assert_eq!(r.code, 250, "{r:?}");
        accepted_before += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "readiness red {:?} after the damage ({accepted_before} messages accepted meanwhile): {body}",
        damaged.elapsed()
    );
    assert!(
        body.starts_with("store: the file is damaged: ")
            && body.contains("mailwarden.redb")
            && body.contains("mailwarden restore"),
        "{body}"
    );
    for _ in 0..3 {
        let r = c.send_message(ALICE, &["bob@example.org"], BODY).await;
        assert_eq!(
            r.line(),
            "451 4.3.0 Temporary failure, message not queued",
            "a 250 after the damage was found"
        );
    }
    assert_eq!(
        http_get(server.running().metrics, "/healthz").await,
        (200, "ok\n".to_string())
    );

    // Started again on the damaged file: refused at the start if the
    // open reads a damaged page (naming the file and the restore), else
    // found by the first verification; never a 250.
    server.stop().await;
    match mailwarden::server::start(server.config.clone(), server.events.clone()).await {
        Err(e) => {
            let e = format!("{e:#}");
            println!("the restart is refused: {e}");
            assert!(
                e.contains("is damaged") && e.contains("mailwarden restore"),
                "{e}"
            );
        }
        Ok(running) => {
            server.running = Some(running);
            let started = std::time::Instant::now();
            let mut c = server.alice().await;
            loop {
                let r = c.send_message(ALICE, &["bob@example.org"], BODY).await;
                if r.code == 451 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "still {r:?} {:?} after the restart",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!(
                "after the restart: 451 {:?} after the start",
                started.elapsed()
            );
            assert!(
                readyz(&server)
                    .await
                    .1
                    .starts_with("store: the file is damaged: ")
            );
        }
    }
    server.stop().await;
}

/// The real spool, except that the next body read, once armed, panics, as
/// a bug in the store library would: it happens in the delivery worker
/// that is about to send the message.
struct PanickingSpool {
    inner: std::sync::Arc<dyn Spool>,
    armed: std::sync::Arc<AtomicBool>,
}

const WORKER_PANIC: &str = "injected panic reading a body (PanickingSpool)";

#[async_trait]
impl Spool for PanickingSpool {
    fn new_id(&self) -> QueueId {
        self.inner.new_id()
    }
    async fn apply(&self, writes: Vec<QueueWrite>) -> Result<Vec<bool>, StoreError> {
        self.inner.apply(writes).await
    }
    async fn list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.inner.list().await
    }
    async fn get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        self.inner.get(id).await
    }
    async fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("{WORKER_PANIC}");
        }
        self.inner.body(id).await
    }
    async fn due(&self, limit: usize) -> Result<(Vec<QueueId>, Option<u64>), StoreError> {
        self.inner.due(limit).await
    }
    async fn wait_for_work(&self, max: Duration) {
        self.inner.wait_for_work(max).await
    }
    fn now(&self) -> u64 {
        self.inner.now()
    }
    fn accepts_writes(&self) -> bool {
        self.inner.accepts_writes()
    }
    fn pending(&self) -> Option<mailwarden::spool::Pending> {
        self.inner.pending()
    }
}

/// A delivery worker panics: the panic is caught, logged as
/// `task.panicked` with its message, counted, and readiness is red naming
/// the stopped worker. By design mail is still accepted (it is durable)
/// and the other worker goes on delivering; the message whose attempt
/// panicked is not handed out again in this process (the panic may have
/// come after it was sent) and is delivered once after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_delivery_worker_is_caught_counted_and_turns_readiness_red() {
    use crate::relay::{Sink, SinkOptions, relay_server_with, relay_toml, wait_queue_empty};
    let sink = Sink::start(SinkOptions::default());
    let armed = std::sync::Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    let overrides = Overrides {
        spool: Some(Box::new(move |inner| {
            std::sync::Arc::new(PanickingSpool { inner, armed: arm })
        })),
        ..Overrides::default()
    };
    let toml = relay_toml(sink.port, "", "").replace("connections = 1", "connections = 2");
    let (mut server, _) = relay_server_with(&toml, overrides).await;
    let metrics = server.running().metrics;
    assert_eq!(readyz(&server).await, (200, "ready\n".to_string()));
    let mut c = server.alice().await;

    armed.store(true, Ordering::SeqCst);
    let r = c.send_message(ALICE, &["first@example.org"], BODY).await;
    assert_eq!(r.code, 250, "{r:?}");
    let panicked = server.wait_event("task.panicked").await;
    assert_eq!(panicked.target.as_deref(), Some("delivery worker"));
    assert_eq!(panicked.error.as_deref(), Some(WORKER_PANIC));
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "delivery worker: 1 of 2 stopped\n");
    let (_, text) = http_get(metrics, "/metrics").await;
    assert!(
        text.lines()
            .any(|l| l == "mailwarden_task_panics_total{task=\"delivery worker\"} 1"),
        "{text}"
    );
    assert_eq!(
        http_get(metrics, "/healthz").await,
        (200, "ok\n".to_string())
    );

    // Still accepted, and delivered by the worker that is left.
    let r = c.send_message(ALICE, &["second@example.org"], BODY).await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = sink.wait_messages(1).await;
    assert_eq!(got[0].to(), ["second@example.org"]);
    // The first stays queued, not handed out again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(server.running().store.queue_list().unwrap().len(), 1);

    // After a restart: readiness green, the first delivered, once.
    server.restart().await;
    wait_queue_empty(&server).await;
    let got = sink.wait_messages(2).await;
    let mut to: Vec<_> = got.iter().flat_map(|m| m.to()).collect();
    to.sort();
    assert_eq!(to, ["first@example.org", "second@example.org"]);
    assert_eq!(readyz(&server).await, (200, "ready\n".to_string()));
    server.stop().await;
}
