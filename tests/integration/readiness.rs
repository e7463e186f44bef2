//! `/readyz` on the metrics listener tells the truth: red while the store
//! refuses writes (green again once it is reopened) and once the spool's
//! commit thread has died, with the reason; a panic there is caught,
//! logged with its message and counted.

use std::time::Duration;

use mailwarden::server::Overrides;
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
