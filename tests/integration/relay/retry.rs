//! `queue retry --all` and `--domain`: every deferred message, or those to
//! one domain, is tried again now (the next hop came back).

use std::time::Duration;

use super::{relay_server, relay_toml};
use crate::common::{ALICE, run_cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_retry_all_and_by_domain() {
    // A relay nobody listens on, and retries an hour apart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, _) = relay_server(&relay_toml(port, "retry_schedule = [\"1h\"]", "")).await;
    let mut c = server.alice().await;
    for to in ["a@one.example", "b@two.example", "c@two.example"] {
        let r = c.try_send(ALICE, &[to.to_string()], "hi", "hello").await;
        assert!(r.starts_with("250 "), "{r}");
    }
    // Each tried once, and deferred for an hour.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server
        .running()
        .store
        .queue_list()
        .unwrap()
        .iter()
        .any(|e| e.attempts == 0)
    {
        assert!(tokio::time::Instant::now() < deadline, "not tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = server.config_path();
    let config = config.to_str().unwrap();
    let attempts = |server: &crate::common::TestServer| -> u32 {
        server
            .running()
            .store
            .queue_list()
            .unwrap()
            .iter()
            .map(|e| e.attempts)
            .sum()
    };
    let before = attempts(&server);
    let (ok, out, err) = run_cli(
        &[
            "--config",
            config,
            "queue",
            "retry",
            "--domain",
            "TWO.example",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "2 queued messages to two.example will be retried now"
    );
    // Those two are tried again at once (and deferred again).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while attempts(&server) < before + 2 {
        assert!(tokio::time::Instant::now() < deadline, "not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out, _) = run_cli(&["--config", config, "queue", "retry", "--all"], "");
    assert!(ok);
    assert_eq!(out.trim(), "3 queued messages will be retried now");
    // An id and --all together is a usage error.
    let (ok, _, err) = run_cli(&["--config", config, "queue", "retry", "1", "--all"], "");
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}
