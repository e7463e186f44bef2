//! The JSON log of a scripted run: every expected event with its fields,
//! and none of the secrets used.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::client::Client;
use crate::common::{run_cli, test_config_text};

const PASSWORD: &str = "log-test password 1";
const WRONG: &str = "log-test wrong guess";
const BODY_MARKER: &str = "confidential-body-text-42";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_every_event_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args(["--config", &config, "serve", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stderr) = (lines.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    // Wait for the listeners.
    let submissions = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["event"] == "listener.ready" && v["kind"] == "Submissions")
                .then(|| v["addr"].as_str().unwrap().parse().unwrap())
        });
        if let Some(addr) = found {
            break addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cli = |args: &[&str], stdin: &str| {
        let mut full = vec!["--config", config.as_str()];
        full.extend_from_slice(args);
        let (ok, out, err) = run_cli(&full, stdin);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let cert = dir
        .path()
        .join("data")
        .join(mailwarden::tls::SELF_SIGNED_CERT);
    tokio::task::block_in_place(|| {
        cli(
            &["account", "add", "alice@example.com", "--password-stdin"],
            PASSWORD,
        )
    });

    // A failed AUTH, then a message.
    let (mut c, _) = Client::implicit_tls(submissions, &cert).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain("alice@example.com", WRONG).await.code, 535);
    assert_eq!(c.auth_plain("alice@example.com", PASSWORD).await.code, 235);
    let body = format!("From: <alice@example.com>\r\nSubject: hi\r\n\r\n{BODY_MARKER}\r\n");
    assert_eq!(
        c.send_message("alice@example.com", &["bob@example.org"], body.as_bytes())
            .await
            .code,
        250
    );
    c.cmd("QUIT").await;

    // 2FA, a device password, a block and an unblock.
    let enrol = tokio::task::block_in_place(|| {
        cli(
            &["--json", "account", "totp", "enable", "alice@example.com"],
            "",
        )
    });
    let enrol: serde_json::Value = serde_json::from_str(&enrol).unwrap();
    let secret_text = enrol["secret"].as_str().unwrap().to_string();
    let created = tokio::task::block_in_place(|| {
        cli(
            &[
                "account",
                "device-password",
                "add",
                "alice@example.com",
                "phone",
            ],
            "",
        )
    });
    let device = created.lines().next().unwrap().to_string();
    tokio::task::block_in_place(|| {
        cli(
            &[
                "account",
                "block",
                "alice@example.com",
                "--reason",
                "test block",
                "--self-service",
            ],
            "",
        )
    });
    let (mut c, _) = Client::implicit_tls(submissions, &cert).await;
    c.ehlo().await;
    assert_eq!(c.auth_login("alice@example.com", &device).await.code, 235);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").await.code, 554);
    c.cmd("QUIT").await;
    tokio::task::block_in_place(|| cli(&["account", "unblock", "alice@example.com"], ""));

    // Let delivery and the last events happen, then stop.
    tokio::time::sleep(Duration::from_millis(800)).await;
    sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM should exit 0: {status}");
    reader.join().unwrap();

    let lines = lines.lock().unwrap().clone();
    for line in &lines {
        assert_one_key_per_field(line);
    }
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {l:?}: {e}"))
        })
        .collect();
    let named = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    for name in [
        "session.start",
        "session.end",
        "auth.success",
        "auth.failure",
        "message.accepted",
        "policy.decision",
        "delivery.success",
        "account.blocked",
        "account.unblocked",
        "account.device_password_created",
    ] {
        assert!(!named(name).is_empty(), "no {name} event in the log");
    }
    let accepted = &named("message.accepted")[0];
    for field in [
        "session",
        "ip",
        "account",
        "message_id",
        "size",
        "recipients",
    ] {
        assert!(
            !accepted[field].is_null(),
            "message.accepted lacks {field}: {accepted}"
        );
    }
    let failure = &named("auth.failure")[0];
    assert_eq!(failure["reason"], "bad_password");
    assert_eq!(failure["account"], "alice@example.com");
    let blocked = &named("account.blocked")[0];
    assert_eq!(blocked["kind"], "policy");

    let log = lines.join("\n");
    let auth_blob = mailwarden::smtp::sasl::encode(&format!("\0alice@example.com\0{PASSWORD}"));
    for secret in [
        PASSWORD,
        WRONG,
        BODY_MARKER,
        device.as_str(),
        auth_blob.as_str(),
        secret_text.as_str(),
    ] {
        assert!(!log.contains(secret), "the log contains a secret: {secret}");
    }
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    assert!(
        !log.contains(token.trim()),
        "the log contains the admin token"
    );
}

/// A JSON object whose keys are all different (a parser that keeps the
/// last of two equal keys would lose the first value).
fn assert_one_key_per_field(line: &str) {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key {key}")));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    serde_json::Deserializer::from_str(line)
        .deserialize_map(Keys)
        .unwrap_or_else(|e| panic!("{e}: {line}"));
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_a_new_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let generate = |out: &std::path::Path| {
        let (ok, _, err) = run_cli(&["cert", "generate", "--out", out.to_str().unwrap()], "");
        assert!(ok, "{err}");
    };
    generate(&certs);
    let first = dir.path().join("first.pem");
    std::fs::copy(certs.join("fullchain.pem"), &first).unwrap();
    let config = dir.path().join("mailwarden.toml");
    let text = test_config_text("").replace(
        "[tls]\nself_signed = true\n",
        "[tls]\ncert = \"certs/fullchain.pem\"\nkey = \"certs/privkey.pem\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (lines, stderr) = (lines.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let wait_for = |event: &'static str| {
        let lines = lines.clone();
        async move {
            for _ in 0..500 {
                let found = lines.lock().unwrap().iter().find_map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).ok()?;
                    (v["event"] == event).then_some(v)
                });
                if let Some(v) = found {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("no {event} in the log");
        }
    };
    let ready = loop {
        let v = wait_for("listener.ready").await;
        let all: Vec<serde_json::Value> = lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(s) = all
            .iter()
            .find(|v| v["event"] == "listener.ready" && v["kind"] == "Submissions")
        {
            break s["addr"]
                .as_str()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .unwrap();
        }
        let _ = v;
    };
    let (mut open, _) = Client::implicit_tls(ready, &first).await;
    open.ehlo().await;

    // A new certificate in place of the old one, then SIGHUP.
    let fresh = dir.path().join("fresh");
    generate(&fresh);
    std::fs::copy(fresh.join("privkey.pem"), certs.join("privkey.pem")).unwrap();
    std::fs::copy(fresh.join("fullchain.pem"), certs.join("fullchain.pem")).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("server.reloaded").await;

    // A new connection trusts only the new certificate...
    let (mut new, _) = Client::implicit_tls(ready, &fresh.join("fullchain.pem")).await;
    new.ehlo().await;
    // ...and the open one keeps working.
    assert_eq!(open.cmd("NOOP").await.code, 250);
    sigterm(child.id());
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_data_finishes_that_message_then_says_421() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    let config = config.to_str().unwrap().to_string();
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .args(["--config", &config, "serve", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr: std::net::SocketAddr = loop {
            let line = lines.next().expect("a log line").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["event"] == "listener.ready" && v["kind"] == "Submissions" {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (child, addr)
    };
    let (mut child, addr) = start();
    tokio::task::block_in_place(|| {
        let (ok, _, err) = run_cli(
            &[
                "--config",
                &config,
                "account",
                "add",
                "alice@example.com",
                "--password-stdin",
            ],
            PASSWORD,
        );
        assert!(ok, "{err}");
    });
    let cert = dir
        .path()
        .join("data")
        .join(mailwarden::tls::SELF_SIGNED_CERT);
    let (mut c, _) = Client::implicit_tls(addr, &cert).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain("alice@example.com", PASSWORD).await.code, 235);
    c.cmd("MAIL FROM:<alice@example.com>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(b"From: <alice@example.com>\r\nSubject: half\r\n\r\nfirst half,\r\n")
        .await;
    sigterm(child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The message in progress completes...
    c.send_raw(b"second half.\r\n.\r\n").await;
    let reply = c.reply().await.line();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let id = reply.rsplit(' ').next().unwrap().to_string();
    // ...then the session is told the server is going away.
    assert_eq!(c.reply().await.line(), "421 4.3.2 Service shutting down");
    let status = tokio::task::block_in_place(|| child.wait().unwrap());
    assert!(status.success(), "{status}");
    // Nothing acknowledged is lost: delivered now or after a restart.
    let outbox = dir.path().join("data/outbox");
    let (mut child, _) = start();
    let mut found = false;
    for _ in 0..250 {
        if crate::common::read_outbox(&outbox)
            .iter()
            .any(|(n, _)| *n == id)
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(child.id());
    let _ = child.wait();
    assert!(found, "message {id} was lost");
}

/// A blocked account's mail program retrying all day: every refusal is
/// counted, the log gets a few lines and a count of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_counted_and_the_log_is_rate_limited() {
    use crate::common::serve::ServeProcess;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    let cfg = config.to_str().unwrap();
    let cli = |args: &[&str], stdin: &str| {
        let mut full = vec!["--config", cfg];
        full.extend_from_slice(args);
        let (ok, _, err) = tokio::task::block_in_place(|| run_cli(&full, stdin));
        assert!(ok, "{args:?}: {err}");
    };
    cli(
        &["account", "add", "alice@example.com", "--password-stdin"],
        PASSWORD,
    );
    cli(
        &[
            "account",
            "block",
            "alice@example.com",
            "--reason",
            "test",
            "--self-service",
        ],
        "",
    );
    let cert = dir
        .path()
        .join("data")
        .join(mailwarden::tls::SELF_SIGNED_CERT);
    let (mut c, _) = Client::implicit_tls(server.submissions(), &cert).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain("alice@example.com", PASSWORD).await.code, 235);
    for _ in 0..50 {
        assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").await.code, 554);
        assert_eq!(c.cmd("RSET").await.code, 250);
    }
    let (_, metrics) = crate::common::http_get(server.addr("Metrics"), "/metrics").await;
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with("mailwarden_smtp_rejects_total{")
                && l.contains("stage=\"mail\"")
                && l.contains("code=\"554\"")
                && l.contains("reason=\"blocked\"")
        })
        .unwrap_or_else(|| panic!("no reject counter in:\n{metrics}"));
    assert!(counted.ends_with(" 50"), "{counted}");
    let lines: Vec<serde_json::Value> = server
        .log()
        .into_iter()
        .filter(|v| v["event"] == "smtp.rejected")
        .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["stage"], "mail");
        assert_eq!(line["code"], 554);
        assert_eq!(line["enhanced"], "5.7.1");
        assert_eq!(line["reason"], "blocked");
        assert_eq!(line["account"], "alice@example.com");
        assert!(line["session"].is_u64() && line["ip"].is_string(), "{line}");
    }
    let status = tokio::task::block_in_place(|| server.stop());
    assert!(status.success());
}

/// Every event kind, with every field set, as the JSON log writes it: one
/// object per line, one key per field, the kind's stable name.
#[test]
fn every_event_kind_is_one_json_object_with_one_key_per_field() {
    use mailwarden::events::{Event, EventKind, Events, TracingEvents};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber =
        mailwarden::telemetry::json(tracing_subscriber::EnvFilter::new("debug"), move || {
            writer.clone()
        });
    let log = TracingEvents::default();
    tracing::subscriber::with_default(subscriber, || {
        for kind in EventKind::ALL {
            let mut e = Event::new(*kind)
                .session(7, "198.51.100.4".parse().unwrap())
                .account("alice@example.com")
                .message_id("01A2217B72400000")
                .mechanism("PLAIN")
                .reason("blocked")
                .code(554)
                .size(2048)
                .recipients(2)
                .tls(true)
                .target("relay:smtp.example.net")
                .took(Duration::from_micros(1500))
                .messages(1)
                .scope("policy")
                .network("198.51.100.0/24")
                .score(3.5)
                .observed(true)
                .outcome(1, 1);
            e.stage = Some("mail");
            e.enhanced = Some("5.7.1".into());
            log.emit(e);
        }
    });
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), EventKind::ALL.len(), "{text}");
    for (line, kind) in lines.iter().zip(EventKind::ALL) {
        assert_one_key_per_field(line);
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], kind.name(), "{line}");
        assert_eq!(v["target"], "relay:smtp.example.net", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_names_the_changed_keys_it_cannot_apply() {
    use crate::common::serve::ServeProcess;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    server
        .wait_log("server.signals_ready", |log| {
            log.iter().any(|v| v["event"] == "server.signals_ready")
        })
        .await;
    // A key only a restart applies, and a [policy] key SIGHUP applies.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[smtp]\nmax_message_size = 12345\n\n[policy]\nblock_score = 20.0\n"),
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server
        .wait_log("server.reloaded", |log| {
            log.iter().any(|v| v["event"] == "server.reloaded")
        })
        .await;
    let log = server.log();
    let incomplete: Vec<_> = log
        .iter()
        .filter(|v| v["event"] == "server.reload_incomplete")
        .collect();
    assert_eq!(incomplete.len(), 1, "{log:#?}");
    assert_eq!(incomplete[0]["keys"], "smtp.max_message_size");
    assert_eq!(incomplete[0]["level"], "WARN");
    server.stop();
}
