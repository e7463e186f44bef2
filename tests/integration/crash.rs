//! SIGKILL at any moment: every message that got 250 is delivered after a
//! restart (at least once), and none is delivered that was never finished.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

use crate::common::serve::ServeProcess;
use crate::common::{BULK_POLICY, PASSWORD, read_outbox, run_cli, test_config_text};

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text(BULK_POLICY)).unwrap();
    (dir, config)
}

fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    mailwarden::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[derive(Default)]
struct Ledger {
    /// Tokens answered 250.
    acked: HashSet<u64>,
    /// Tokens whose final "." was sent but whose reply never came.
    in_doubt: HashSet<u64>,
}

/// Sends messages with tokens from `next` until the connection dies.
async fn sender(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    next: Arc<Mutex<u64>>,
    limit: u64,
    ledger: Arc<Mutex<Ledger>>,
) {
    let result: std::io::Result<()> = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let mut io = AsyncBufReader::new(stream);
        async fn reply(
            io: &mut AsyncBufReader<tokio_rustls::client::TlsStream<TcpStream>>,
        ) -> std::io::Result<u16> {
            loop {
                let mut line = String::new();
                if io.read_line(&mut line).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(line[..3].parse().unwrap_or(0));
                }
            }
        }
        reply(&mut io).await?;
        let auth = mailwarden::smtp::sasl::encode(&format!("\0alice@example.com\0{PASSWORD}"));
        io.get_mut()
            .write_all(b"EHLO crash.test.example\r\n")
            .await?;
        reply(&mut io).await?;
        io.get_mut()
            .write_all(format!("AUTH PLAIN {auth}\r\n").as_bytes())
            .await?;
        assert_eq!(reply(&mut io).await?, 235);
        loop {
            let token = {
                let mut n = next.lock().unwrap();
                if *n >= limit {
                    return Ok(());
                }
                *n += 1;
                *n
            };
            io.get_mut()
                .write_all(
                    b"MAIL FROM:<alice@example.com>
RCPT TO:<bob@example.org>
DATA
",
                )
                .await?;
            for _ in 0..3 {
                if reply(&mut io).await? >= 400 {
                    return Ok(());
                }
            }
            let body = format!(
                "From: <alice@example.com>\r\nX-Token: {token}\r\n\r\n{}\r\n.\r\n",
                "x".repeat(token as usize % 3000)
            );
            io.get_mut().write_all(body.as_bytes()).await?;
            ledger.lock().unwrap().in_doubt.insert(token);
            if reply(&mut io).await? == 250 {
                let mut l = ledger.lock().unwrap();
                l.in_doubt.remove(&token);
                l.acked.insert(token);
            } else {
                ledger.lock().unwrap().in_doubt.remove(&token);
            }
        }
    }
    .await;
    let _ = result; // the connection is expected to die at the kill
}

/// Every token in the outbox, with how many copies.
fn delivered_tokens(outbox: &Path) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for (_, message) in read_outbox(outbox) {
        let text = String::from_utf8_lossy(&message);
        let token = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Token: "))
            .and_then(|t| t.trim().parse().ok())
            .expect("every delivered message has its token");
        *out.entry(token).or_insert(0) += 1;
    }
    out
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

/// Adds alice through the running server and sends `count` messages as
/// her on one connection.
async fn send_as_alice(
    dir: &tempfile::TempDir,
    config: &Path,
    server: &ServeProcess,
    count: u64,
) -> Arc<Mutex<Ledger>> {
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run_cli(
            &[
                "--config",
                config.to_str().unwrap(),
                "account",
                "add",
                "alice@example.com",
                "--password-stdin",
            ],
            PASSWORD,
        )
    });
    assert!(ok, "{err}");
    let tls = tls_config(
        &dir.path()
            .join("data")
            .join(mailwarden::tls::SELF_SIGNED_CERT),
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    sender(
        server.submissions(),
        tls,
        Arc::new(Mutex::new(0)),
        count,
        ledger.clone(),
    )
    .await;
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_250_loses_nothing() {
    let (dir, config) = setup();
    let server = ServeProcess::start(&config);
    let ledger = send_as_alice(&dir, &config, &server, 1).await;
    server.kill();
    assert!(ledger.lock().unwrap().acked.contains(&1));
    let server = ServeProcess::start(&config);
    let outbox = dir.path().join("data/outbox");
    for _ in 0..500 {
        if delivered_tokens(&outbox).contains_key(&1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delivered_tokens(&outbox).contains_key(&1),
        "the acknowledged message was lost"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_during_a_thousand_messages() {
    const TOTAL: u64 = 1000;
    const KILLS: usize = 4;
    let (dir, config) = setup();
    let tls = tls_config_after_start(&config, &dir).await;
    let next = Arc::new(Mutex::new(0u64));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let outbox = dir.path().join("data/outbox");
    for round in 0..=KILLS {
        let server = ServeProcess::start(&config);
        let senders: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(sender(
                    server.submissions(),
                    tls.clone(),
                    next.clone(),
                    TOTAL,
                    ledger.clone(),
                ))
            })
            .collect();
        if round < KILLS {
            // Kill somewhere in the next stretch of the load.
            let target =
                ledger.lock().unwrap().acked.len() as u64 + 20 + random_below(TOTAL / KILLS as u64);
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            // All senders done: nothing more will be acknowledged (messages
            // in doubt from earlier rounds never are), so kill now.
            while (ledger.lock().unwrap().acked.len() as u64) < target.min(TOTAL - 1)
                && !senders.iter().all(|s| s.is_finished())
            {
                if std::time::Instant::now() >= deadline {
                    let l = ledger.lock().unwrap();
                    let finished = senders.iter().filter(|s| s.is_finished()).count();
                    panic!(
                        "the load stalled before the kill (round {round}): {} acknowledged, {} in doubt, next token {}, {finished} of 8 senders finished",
                        l.acked.len(),
                        l.in_doubt.len(),
                        next.lock().unwrap()
                    );
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_micros(random_below(3000))).await;
            tokio::task::block_in_place(|| server.kill());
            for s in senders {
                let _ = s.await;
            }
        } else {
            for s in senders {
                let _ = s.await;
            }
            // Let delivery drain everything acknowledged.
            let acked = ledger.lock().unwrap().acked.clone();
            for _ in 0..1500 {
                let delivered = delivered_tokens(&outbox);
                if acked.iter().all(|t| delivered.contains_key(t)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.kill();
        }
    }
    let ledger = ledger.lock().unwrap();
    let delivered = delivered_tokens(&outbox);
    let lost: Vec<_> = ledger
        .acked
        .iter()
        .filter(|t| !delivered.contains_key(t))
        .collect();
    let unexplained: Vec<_> = delivered
        .keys()
        .filter(|t| !ledger.acked.contains(t) && !ledger.in_doubt.contains(t))
        .collect();
    let duplicates = delivered.values().filter(|&&n| n > 1).count();
    println!(
        "crash test: {KILLS} SIGKILLs, {} acknowledged, {} in doubt at a kill, {} delivered, {} lost, {} delivered without 250 and not in doubt, {duplicates} duplicates",
        ledger.acked.len(),
        ledger.in_doubt.len(),
        delivered.len(),
        lost.len(),
        unexplained.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(
        unexplained.is_empty(),
        "delivered but never finished: {unexplained:?}"
    );
    assert!(
        ledger.acked.len() as u64 >= TOTAL - 40,
        "too few messages got through: {}",
        ledger.acked.len()
    );
}

/// Starts the server once to create the store, account and certificate.
async fn tls_config_after_start(
    config: &Path,
    dir: &tempfile::TempDir,
) -> Arc<rustls::ClientConfig> {
    let server = ServeProcess::start(config);
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run_cli(
            &[
                "--config",
                config.to_str().unwrap(),
                "account",
                "add",
                "alice@example.com",
                "--password-stdin",
            ],
            PASSWORD,
        )
    });
    assert!(ok, "{err}");
    server.kill();
    tls_config(
        &dir.path()
            .join("data")
            .join(mailwarden::tls::SELF_SIGNED_CERT),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scorers_counts_survive_a_sigkill_a_second_after_sending() {
    let (dir, config) = setup();
    let server = ServeProcess::start(&config);
    let ledger = send_as_alice(&dir, &config, &server, 5).await;
    assert_eq!(ledger.lock().unwrap().acked.len(), 5);
    // The scorer's state is written with the spool at most once a second,
    // and on its own a second after the last change.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.kill();
    assert_eq!(messages_last_hour_after_restart(&config), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_right_after_sending_keeps_the_scorers_counts() {
    let (dir, config) = setup();
    let server = ServeProcess::start(&config);
    let ledger = send_as_alice(&dir, &config, &server, 5).await;
    assert_eq!(ledger.lock().unwrap().acked.len(), 5);
    // Within the second in which the state is not yet written.
    let status = tokio::task::block_in_place(|| server.stop());
    assert!(status.success(), "{status}");
    assert_eq!(messages_last_hour_after_restart(&config), 5);
}

/// Starts the server again and reads alice's last-hour message count as
/// `account show` reports it.
fn messages_last_hour_after_restart(config: &Path) -> serde_json::Value {
    let server = ServeProcess::start(config);
    let cfg = config.to_str().unwrap();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run_cli(
            &[
                "--config",
                cfg,
                "account",
                "show",
                "alice@example.com",
                "--json",
            ],
            "",
        )
    });
    assert!(ok, "{err}");
    server.kill();
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    shown["policy"]["messages_last_hour"].clone()
}
