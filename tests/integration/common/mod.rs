//! Test harness: the real server on ephemeral loopback ports with its data in
//! a temporary folder, and a small SMTP client that speaks TCP and TLS.

pub mod balancer;
pub mod client;
pub mod dovecot;
pub mod postgres;
pub mod serve;
pub mod tmpfs;
pub mod web;

use client::Client;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailwarden::config::{Config, ConfigSource};
use mailwarden::events::RecordingEvents;
use mailwarden::server::{self, Running};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

/// The server on a test clock (stopped at 1,800,000,000), with alice.
pub async fn server_with_clock(extra: &str) -> (TestServer, Arc<mailwarden::clock::ManualClock>) {
    let clock = Arc::new(mailwarden::clock::ManualClock::new(
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let overrides = server::Overrides {
        clock: Some(clock.clone()),
        ..server::Overrides::default()
    };
    let server = TestServer::start_full(extra, overrides).await;
    server.add_account(ALICE, PASSWORD).await;
    (server, clock)
}

/// Policy caps out of the way, for tests about load and durability.
pub const BULK_POLICY: &str = "[policy]\nmax_messages_per_minute = 1000000\nmax_messages_per_hour = 1000000\nmax_messages_per_day = 1000000\nmax_recipients_per_minute = 1000000\nmax_recipients_per_hour = 1000000\nmax_recipients_per_day = 1000000\nnew_account_max_messages_per_hour = 1000000\nnew_account_max_recipients_per_hour = 1000000\nblock_score = 1000000.0\n";
pub const ALICE: &str = "alice@example.com";

/// A config file for tests: every listener on port 0, data in `dir`.
/// `extra` is appended; a leading `[server]` block is merged into ours.
pub fn test_config_text(extra: &str) -> String {
    test_config_text_mode("outbox", extra)
}

/// `test_config_text` with another `delivery.mode` (`extra` continues the
/// `[delivery]` table).
pub fn test_config_text_mode(mode: &str, extra: &str) -> String {
    let split = |extra: &'static str, header: &str| -> (&'static str, &'static str) {
        match extra.strip_prefix(header) {
            Some(rest) => match rest.find("\n[") {
                Some(end) => (&rest[..end + 1], &rest[end + 1..]),
                None => (rest, ""),
            },
            None => ("", extra),
        }
    };
    let extra: &'static str = Box::leak(extra.to_string().into_boxed_str());
    let (server_extra, extra) = split(extra, "[server]\n");
    let (listeners_extra, extra) = split(extra, "[listeners]\n");
    format!(
        r#"
[server]
hostname = "mail.test.example"
data_dir = "data"
{server_extra}

[listeners]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
portal = "127.0.0.1:0"
admin = "127.0.0.1:0"
metrics = "127.0.0.1:0"
{listeners_extra}

[tls]
self_signed = true

[delivery]
mode = "{mode}"
{extra}
"#
    )
}

pub struct TestServer {
    pub dir: TempDir,
    pub config: Config,
    pub events: Arc<RecordingEvents>,
    pub running: Option<Running>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Self {
        Self::start_full(extra, server::Overrides::default()).await
    }

    /// `start_with`, replacing parts of the server (e.g. a failing spool).
    pub async fn start_with_overrides(extra: &str, overrides: server::Overrides) -> Self {
        Self::start_full(extra, overrides).await
    }

    pub async fn start_full(extra: &str, overrides: server::Overrides) -> Self {
        Self::start_config(&test_config_text(extra), overrides).await
    }

    /// The server on this whole config text (written to its folder).
    pub async fn start_config(text: &str, overrides: server::Overrides) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), text, overrides).await
    }

    /// `start_config` in `dir` (which may hold a mount for the data folder).
    pub async fn start_in(dir: TempDir, text: &str, overrides: server::Overrides) -> Self {
        let path = dir.path().join("mailwarden.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).expect("test config is valid");
        assert_eq!(config.source, ConfigSource::File(path));
        let events = Arc::new(RecordingEvents::default());
        let running = server::start_with(config.clone(), events.clone(), overrides)
            .await
            .expect("server starts");
        Self {
            dir,
            config,
            events,
            running: Some(running),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server is running")
    }

    pub fn submission(&self) -> std::net::SocketAddr {
        self.running().submission[0]
    }

    pub fn submissions(&self) -> std::net::SocketAddr {
        self.running().submissions[0]
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mailwarden.toml")
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.server.data_dir
    }

    pub fn outbox(&self) -> PathBuf {
        self.data_dir().join("outbox")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.data_dir().join(mailwarden::tls::SELF_SIGNED_CERT)
    }

    /// The running server's account operations (what the CLI reaches).
    pub fn accounts(&self) -> &mailwarden::accounts::Accounts {
        &self.running().accounts
    }

    pub async fn add_account(&self, address: &str, password: &str) {
        self.accounts()
            .add(address, password, &mailwarden::accounts::Origin::ADMIN)
            .await
            .expect("account created");
    }

    /// A server with the account `ALICE` (password `PASSWORD`).
    pub async fn with_alice(extra: &str) -> Self {
        let server = Self::start_with(extra).await;
        server.add_account(ALICE, PASSWORD).await;
        server
    }

    /// A session on the implicit-TLS port, after EHLO and AUTH as `ALICE`.
    pub async fn alice(&self) -> Client {
        let (mut c, greeting) = Client::implicit_tls(self.submissions(), &self.cert_path()).await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        c.ehlo().await;
        let r = c.auth_plain(ALICE, PASSWORD).await;
        assert_eq!(r.line(), "235 2.7.0 Authentication successful");
        c
    }

    /// Waits until the outbox holds `n` messages and returns them by name.
    pub async fn wait_outbox(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let files = read_outbox(&self.outbox());
            if files.len() >= n {
                return files;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox has {} messages, expected {n}",
                files.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the outbox holds the message with this queue id.
    pub async fn wait_outbox_id(&self, id: &str) -> Vec<u8> {
        for _ in 0..1000 {
            if let Some((_, m)) = read_outbox(&self.outbox())
                .into_iter()
                .find(|(n, _)| n == id)
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("message {id} never reached the outbox");
    }

    /// Waits until an event with this name was emitted; returns it.
    pub async fn wait_event(&self, name: &str) -> mailwarden::events::Event {
        for _ in 0..1000 {
            if let Some(e) = self
                .events
                .snapshot()
                .into_iter()
                .find(|e| e.name() == name)
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {name} event within 10s");
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

pub fn read_outbox(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|p| {
                    let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&p).unwrap())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether the outbox stays at `n` messages for a moment (nothing else
/// arrives after a refusal).
pub async fn assert_outbox_stays(server: &TestServer, n: usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = read_outbox(&server.outbox());
    assert_eq!(files.len(), n, "outbox: {:?}", names(&files));
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

/// The queue id from `250 2.0.0 Ok: queued as <id>`.
pub fn queued_id(reply: &client::Reply) -> String {
    let line = reply.line();
    line.strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {line}"))
        .to_string()
}

/// The stored message named `id`.
pub async fn stored(server: &TestServer, id: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((_, m)) = read_outbox(&server.outbox())
            .into_iter()
            .find(|(n, _)| n == id)
        {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message {id} never reached the outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message of exactly `size` octets: a From header, then filler lines.
pub fn sized_message(size: usize) -> Vec<u8> {
    let mut m = b"From: <alice@example.com>\r\nSubject: size\r\n\r\n".to_vec();
    assert!(size >= m.len() + 2);
    while m.len() < size {
        let room = size - m.len();
        let line = room.min(78);
        if line <= 2 {
            // Too little room for a line: lengthen the last one.
            m.truncate(m.len() - 2);
            m.extend(std::iter::repeat_n(b'y', room));
            m.extend_from_slice(b"\r\n");
        } else {
            m.extend(std::iter::repeat_n(b'x', line - 2));
            m.extend_from_slice(b"\r\n");
        }
    }
    assert_eq!(m.len(), size);
    m
}

/// Splits a delivered message into its Received line and the rest.
pub fn split_received(message: &[u8]) -> (String, Vec<u8>) {
    let end = message
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a first line")
        + 2;
    (
        String::from_utf8(message[..end].to_vec()).unwrap(),
        message[end..].to_vec(),
    )
}

impl TestServer {
    /// Starts the server again on the same data folder (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = server::start(self.config.clone(), self.events.clone())
            .await
            .expect("server restarts");
        self.running = Some(running);
    }
}

/// Runs the real `mailwarden` binary; returns (exit ok, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden"));
    let out = output_with_stdin(command.args(args), stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `command` with `stdin` as its standard input; its whole output.
pub fn output_with_stdin(command: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the command");
    // The CLI may exit before reading its input (an early error): a broken
    // pipe here is not a test failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// GET a path over plain HTTP/1.0; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled counter in Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().expect("numeric metric") as u64)
        .unwrap_or(0)
}

/// The 2FA key as the portal and CLI show it (base32 in groups of four),
/// decoded to the secret bytes.
pub fn base32_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut n, mut out) = (0u64, 0, Vec::new());
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = alphabet.iter().position(|&a| a == c).expect("base32") as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}

/// Makes `source`'s /24 a trusted network of `account` the only way an
/// owner does: accepted mail from it on three days over eight days
/// (`[accounts]` defaults: 3 days spanning 7). Moves the test clock 9 days.
pub async fn send_from_home_for_a_week(
    server: &TestServer,
    clock: &mailwarden::clock::ManualClock,
    account: &str,
    password: &str,
    source: &str,
) {
    const DAY: u64 = 24 * 3600;
    for day in 0..3 {
        let (mut c, _) = client::Client::implicit_tls_from(
            server.submissions(),
            Some(source.parse().unwrap()),
            &server.cert_path(),
        )
        .await;
        c.ehlo().await;
        assert_eq!(c.auth_plain(account, password).await.code, 235);
        let reply = c
            .try_send(
                account,
                &[format!("friend{day}@example.net")],
                "hello",
                "see you soon",
            )
            .await;
        assert!(reply.starts_with("250"), "day {day}: {reply}");
        clock.advance(Duration::from_secs(if day < 2 { 4 * DAY } else { DAY }));
    }
}

/// A policy block on `account`, as the scorer makes one, with the thief's
/// `abuse_networks`.
pub async fn policy_block_on(server: &TestServer, account: &str, abuse_networks: &[&str]) {
    use mailwarden::accounts::{BlockKind, BlockRequest, Origin};
    server
        .accounts()
        .block(
            account,
            BlockRequest {
                kind: BlockKind::Policy,
                reason: "sending to many new recipients".into(),
                detail: Some("score 14: 60 new recipients in 1h".into()),
                abuse_networks: abuse_networks.iter().map(|n| n.parse().unwrap()).collect(),
            },
            &Origin::ADMIN,
        )
        .await
        .unwrap();
}
