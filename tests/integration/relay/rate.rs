//! Delivery rate to a local relay: the spool is filled while the server is
//! down, then the server starts and drains it. Prints msgs/s per run and the
//! median. Not part of the normal run:
//!
//! ```sh
//! cargo test --release --features testing --test integration relay::rate -- --ignored --nocapture
//! ```
//!
//! `RELAY_RATE_MESSAGES` (2000), `RELAY_RATE_RUNS` (5), `RELAY_RATE_CONNECTIONS` (2),
//! `RELAY_RATE_SIZE` (2048 bytes) and `RELAY_RATE_TLS` (`none` or `starttls`) change it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailwarden::config::Config;
use mailwarden::events::RecordingEvents;
use mailwarden::server;
use mailwarden::spool::{Envelope, QueueEntry, QueueId, QueueWrite, Recipient};
use mailwarden::store::Store;

use super::{Sink, SinkOptions, relay_certificate, relay_toml};
use crate::common::test_config_text_mode;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(store: &Store, n: usize, size: usize) {
    let mut body =
        b"From: <alice@example.com>\r\nTo: <bob@example.org>\r\nSubject: load\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let writes: Vec<QueueWrite> = chunk
            .iter()
            .map(|&i| QueueWrite::Insert {
                entry: QueueEntry::new(
                    QueueId(1 + i as u64),
                    Envelope {
                        from: "alice@example.com".into(),
                        recipients: vec![Recipient {
                            address: format!("rcpt{i}@example.org"),
                            orcpt: None,
                            notify: 0,
                        }],
                        account: "alice@example.com".into(),
                        client_ip: "127.0.0.1".parse().unwrap(),
                        received_at: now,
                        size: body.len() as u64,
                        mail_flags: 0,
                        envid: None,
                    },
                ),
                body: body.clone(),
            })
            .collect();
        store.queue_apply(&writes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn relay_delivery_rate() {
    let messages: usize = env_or("RELAY_RATE_MESSAGES", 2000);
    let runs: usize = env_or("RELAY_RATE_RUNS", 5);
    let connections: usize = env_or("RELAY_RATE_CONNECTIONS", 2);
    let size: usize = env_or("RELAY_RATE_SIZE", 2048);
    let tls: String = env_or("RELAY_RATE_TLS", "none".to_string());
    let mut rates = Vec::new();
    for run in 1..=runs {
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = relay_certificate(certs.path());
        let starttls = tls == "starttls";
        let sink = Sink::start(SinkOptions {
            discard: true,
            tls: if starttls { "starttls" } else { "none" },
            cert: starttls.then(|| (cert.clone(), key)),
            ..Default::default()
        });
        let relay_extra = if starttls {
            format!("tls = \"starttls\"\nca_file = \"{}\"\n", cert.display())
        } else {
            String::new()
        };
        let toml = relay_toml(sink.port, "", &relay_extra)
            .replace("connections = 1", &format!("connections = {connections}"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailwarden.toml");
        std::fs::write(&path, test_config_text_mode("relay", &toml)).unwrap();
        let config = Config::load(&path).unwrap();
        {
            let store = Store::open_or_create(&config.server.data_dir).unwrap();
            fill(&store, messages, size);
        }
        let started = Instant::now();
        let running = server::start(config, Arc::new(RecordingEvents::default()))
            .await
            .unwrap();
        loop {
            let left = running.store.queue_list().unwrap().len();
            if left == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "{left} left");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let elapsed = started.elapsed();
        let rate = messages as f64 / elapsed.as_secs_f64();
        println!(
            "relay rate run {run}: {messages} msgs of {size} bytes over {connections} {tls} connection(s) in {:.2}s = {rate:.0} msgs/s",
            elapsed.as_secs_f64()
        );
        rates.push(rate);
        running.shutdown().await;
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "relay rate: median {:.0} msgs/s over {runs} runs (min {:.0}, max {:.0})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
