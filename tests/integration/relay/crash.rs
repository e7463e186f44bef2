//! SIGKILL of the real binary during a retry backoff, right after the
//! relay's 250, and between the relay storing a message and its 250 reaching
//! us: nothing is lost, a recipient recorded as delivered is never sent
//! again, and the only duplicate is the documented window.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Sink, SinkOptions, relay_toml};
use crate::common::client::Client;
use crate::common::serve::ServeProcess;
use crate::common::{ALICE, PASSWORD, queued_id, run_cli, test_config_text_mode};

/// The real binary, its pid written where the sink (which kills it) reads it.
fn start(config: &Path, pidfile: &Path) -> ServeProcess {
    let server = ServeProcess::start(config);
    std::fs::write(pidfile, server.pid().to_string()).unwrap();
    server
}

/// Waits for a log event about message `id`.
async fn wait_event(server: &ServeProcess, event: &str, id: &str) {
    server
        .wait_log(&format!("{event} for {id}"), |log| {
            log.iter()
                .any(|v| v["event"] == event && v["message_id"] == id)
        })
        .await;
}

async fn submit(server: &ServeProcess, cert: &Path, to: &[&str], subject: &str) -> String {
    let (mut c, greeting) = Client::implicit_tls(server.submissions(), cert).await;
    assert_eq!(greeting.code, 220);
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    let body = format!(
        "From: <alice@example.com>\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\n\
         Message-ID: <{subject}@example.com>\r\n\r\nbody of {subject}\r\n"
    );
    queued_id(&c.send_message(ALICE, to, body.as_bytes()).await)
}

/// Waits until `queue list` is empty.
async fn wait_queue_empty(config: &str) {
    let mut listed = String::new();
    for _ in 0..300 {
        let (ok, out, err) = tokio::task::block_in_place(|| {
            run_cli(&["--config", config, "--json", "queue", "list"], "")
        });
        assert!(ok, "{err}");
        if serde_json::from_str::<Value>(&out).unwrap() == json!([]) {
            return;
        }
        listed = out;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the queue never emptied: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_backoff_and_around_the_relays_250_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile: PathBuf = dir.path().join("server.pid");
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^b@", "reply": "451 4.3.0 Try again later", "times": 1},
            {"when": "data", "match": "^b@", "kill": "after_reply", "times": 1},
            {"when": "data", "match": "^c@", "kill": "before_reply", "times": 1},
        ])),
        kill_pidfile: Some(pidfile.clone()),
        ..Default::default()
    });
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(
        &config,
        test_config_text_mode(
            "relay",
            &relay_toml(sink.port, "retry_schedule = [\"2s\"]\n", ""),
        ),
    )
    .unwrap();
    let config_str = config.to_str().unwrap().to_string();
    let cert = dir
        .path()
        .join("data")
        .join(mailwarden::tls::SELF_SIGNED_CERT);

    // 1. a@ is delivered, b@ deferred; SIGKILL during b@'s backoff.
    let server = start(&config, &pidfile);
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run_cli(
            &[
                "--config",
                &config_str,
                "account",
                "add",
                ALICE,
                "--password-stdin",
            ],
            PASSWORD,
        )
    });
    assert!(ok, "{err}");
    let first = submit(&server, &cert, &["a@example.org", "b@example.org"], "one").await;
    wait_event(&server, "delivery.deferred", &first).await;
    tokio::task::block_in_place(|| server.kill());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to(), ["a@example.org"]);

    // 2. After the restart b@ is retried; the relay stores it, answers 250
    //    and kills the server at once.
    let server = start(&config, &pidfile);
    server.wait_exit().await;
    assert_eq!(sink.messages().len(), 2);

    // 3. c@: the relay stores it and kills the server before its 250 is
    //    sent (the duplicate window: from the relay's 250 to our commit).
    let server = start(&config, &pidfile);
    let second = submit(&server, &cert, &["c@example.org"], "two").await;
    server.wait_exit().await;

    // 4. Everything left is delivered.
    let server = start(&config, &pidfile);
    wait_event(&server, "delivery.success", &second).await;
    wait_queue_empty(&config_str).await;
    tokio::task::block_in_place(|| server.kill());

    let got = sink.messages();
    let copies = |rcpt: &str| got.iter().filter(|m| m.to() == [rcpt]).count();
    assert!(got.iter().all(|m| !m.is_dsn()), "no bounce: {got:?}");
    assert_eq!(copies("a@example.org"), 1, "a@ succeeded before the kills");
    let b = copies("b@example.org");
    assert!(
        (1..=2).contains(&b),
        "b@ at least once, at most the window's copy: {b}"
    );
    assert_eq!(copies("c@example.org"), 2, "c@: the documented duplicate");
    assert_eq!(got.len(), 1 + b + 2, "{got:?}");
    println!(
        "relay crash test: b@ arrived {b} time(s) (2 = the kill beat our commit), c@ twice (kill before the 250)"
    );
}
