//! Relay delivery against a real third-party SMTP server: aiosmtpd, run
//! from `tests/relay/sink.py` on an ephemeral port and scripted per
//! recipient (250, 451, 550, or a SIGKILL of the server).

mod crash;
mod delivery;
mod rate;
mod retry;
mod store_faults;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailwarden::config::Config;
use mailwarden::events::EventKind;
use mailwarden::events::RecordingEvents;
use mailwarden::server;

use crate::common::{ALICE, PASSWORD, TestServer, test_config_text_mode};

/// The scripted relay target, killed when dropped.
pub struct Sink {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct SinkOptions {
    /// `none`, `starttls` or `implicit` (the last two need `cert`).
    pub tls: &'static str,
    /// Certificate and key (PEM).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// `user:password`: AUTH required.
    pub auth: Option<&'static str>,
    pub no_8bitmime: bool,
    pub no_smtputf8: bool,
    /// sink.py's `--rules`.
    pub rules: Option<serde_json::Value>,
    pub kill_pidfile: Option<PathBuf>,
    /// Accept without storing (load tests).
    pub discard: bool,
    /// Listen on this loopback address (127.0.0.1 by default) and port
    /// (ephemeral by default): MX tests spread sinks over 127.0.0.x.
    pub host: Option<&'static str>,
    pub port: Option<u16>,
}

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub meta: serde_json::Value,
    pub bytes: Vec<u8>,
}

impl Received {
    pub fn from(&self) -> &str {
        self.meta["mail_from"].as_str().unwrap_or_default()
    }

    pub fn to(&self) -> Vec<String> {
        self.meta["rcpt_tos"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// A delivery report (null sender).
    pub fn is_dsn(&self) -> bool {
        self.from().is_empty() || self.from() == "<>"
    }
}

pub fn sink_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/relay/sink.py")
}

impl Sink {
    pub fn start(options: SinkOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(sink_script()).arg(dir.path().join("mail"));
        let tls = if options.tls.is_empty() {
            "none"
        } else {
            options.tls
        };
        cmd.args(["--tls", tls]);
        if let Some((cert, key)) = &options.cert {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(auth) = options.auth {
            cmd.args(["--auth", auth]);
        }
        if options.no_8bitmime {
            cmd.arg("--no-8bitmime");
        }
        if options.no_smtputf8 {
            cmd.arg("--no-smtputf8");
        }
        if let Some(rules) = &options.rules {
            cmd.arg("--rules").arg(rules.to_string());
        }
        if options.discard {
            cmd.arg("--discard");
        }
        if let Some(host) = options.host {
            cmd.args(["--host", host]);
        }
        if let Some(port) = options.port {
            cmd.args(["--port", &port.to_string()]);
        }
        if let Some(pidfile) = &options.kill_pidfile {
            cmd.arg("--kill-pidfile").arg(pidfile);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run tests/relay/sink.py (python3 with aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("sink.py printed its port")
            .expect("sink.py output");
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("sink.py said {first:?}"));
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        Self { child, port, dir }
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Every complete message, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.mail_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|json| Received {
                meta: serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap(),
                bytes: std::fs::read(json.with_extension("eml")).unwrap(),
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    pub async fn wait_messages(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay got {} messages, expected {n}: {messages:?}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `<conn> RCPT|DATA <address> <reply>` lines.
    pub fn replies(&self) -> String {
        std::fs::read_to_string(self.mail_dir().join("replies.log")).unwrap_or_default()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `localhost` (the relay's), in `dir`.
pub fn relay_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("relay-cert.pem"), dir.join("relay-key.pem"));
    mailwarden::tls::write_self_signed(&cert, &key, "localhost").unwrap();
    (cert, key)
}

/// Every delivery outcome the scorer heard (a typed `DeliveryOutcome`
/// event): (account, delivered, bounced).
pub struct FeedbackLog(Arc<RecordingEvents>);

impl FeedbackLog {
    pub fn calls(&self) -> Vec<(String, usize, usize)> {
        self.0
            .snapshot()
            .into_iter()
            .filter(|e| e.kind == EventKind::DeliveryOutcome)
            .map(|e| {
                (
                    e.account.unwrap_or_default(),
                    e.delivered.unwrap_or(0),
                    e.bounced.unwrap_or(0),
                )
            })
            .collect()
    }

    /// Sums of (delivered, bounced) for `account`.
    pub fn totals(&self, account: &str) -> (usize, usize) {
        self.calls()
            .iter()
            .filter(|(a, _, _)| a == account)
            .fold((0, 0), |(d, b), (_, d2, b2)| (d + d2, b + b2))
    }
}

/// The `[delivery]` keys (after `mode`) and `[delivery.relay]` for a
/// plaintext relay on `port`, fast retries; `extra` is appended to
/// `[delivery.relay]`, `delivery` to `[delivery]`.
pub fn relay_toml(port: u16, delivery: &str, extra: &str) -> String {
    let delivery = if delivery.contains("retry_schedule") {
        delivery.to_string()
    } else {
        format!("retry_schedule = [\"1s\"]\n{delivery}")
    };
    let extra = if extra.contains("tls =") {
        extra.to_string()
    } else {
        format!("tls = \"none\"\n{extra}")
    };
    format!(
        "{delivery}\n[delivery.relay]\nhost = \"localhost\"\nport = {port}\ntimeout = \"10s\"\nconnections = 1\n{extra}\n"
    )
}

/// The real server in relay mode, with ALICE and a feedback recorder.
pub async fn relay_server(delivery_toml: &str) -> (TestServer, Arc<FeedbackLog>) {
    relay_server_with(delivery_toml, server::Overrides::default()).await
}

/// `relay_server` with more overrides (the feedback recorder is added).
pub async fn relay_server_with(
    delivery_toml: &str,
    overrides: server::Overrides,
) -> (TestServer, Arc<FeedbackLog>) {
    relay_server_in(tempfile::tempdir().unwrap(), delivery_toml, overrides).await
}

/// `relay_server_with` in `dir` (which may hold a mount for the data
/// folder, `data`).
pub async fn relay_server_in(
    dir: tempfile::TempDir,
    delivery_toml: &str,
    overrides: server::Overrides,
) -> (TestServer, Arc<FeedbackLog>) {
    let path = dir.path().join("mailwarden.toml");
    std::fs::write(&path, test_config_text_mode("relay", delivery_toml)).unwrap();
    let config = Config::load(&path).expect("relay test config is valid");
    let events = Arc::new(RecordingEvents::default());
    let feedback = Arc::new(FeedbackLog(events.clone()));
    let running = server::start_with(config.clone(), events.clone(), overrides)
        .await
        .expect("server starts in relay mode");
    let server = TestServer {
        dir,
        config,
        events,
        running: Some(running),
    };
    server.add_account(ALICE, PASSWORD).await;
    (server, feedback)
}

/// Waits until the spool holds nothing.
pub async fn wait_queue_empty(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = server.running().store.queue_list().unwrap();
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue still holds {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `done` holds: events and feedback follow the spool commit,
/// so they can trail an empty queue by a moment.
pub async fn eventually(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 20s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event named `name` so far.
pub fn events_named(server: &TestServer, name: &str) -> Vec<mailwarden::events::Event> {
    server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == name)
        .collect()
}
