//! Scorer 2.0 through real SMTP: the owner's own program travelling is
//! not a thief, another program is; the owner's busy hour meets a budget,
//! never a block; complaints count; a server's log replays to the same
//! decisions (`policy replay`).

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::common::client::Client;
use crate::common::serve::ServeProcess;
use crate::common::{PASSWORD, TestServer, run_cli, send_from_home_for_a_week};

const ALICE: &str = "alice@example.com";
const HOME: &str = "127.0.0.2";
const HOTEL: &str = "127.0.9.9";
const THIEF: &str = "127.0.8.8";

/// A session as the test client (the owner's mail program in these tests).
async fn owners_program(addr: std::net::SocketAddr, cert: &std::path::Path, from: &str) -> Client {
    let (mut c, _) = Client::implicit_tls_from(addr, Some(from.parse().unwrap()), cert).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    c
}

/// A bulk-mailing script: another EHLO name, AUTH LOGIN, its own headers.
async fn script(addr: std::net::SocketAddr, cert: &std::path::Path, from: &str) -> Client {
    let source: IpAddr = from.parse().unwrap();
    let (mut c, _) = Client::implicit_tls_from(addr, Some(source), cert).await;
    assert_eq!(c.cmd("EHLO localhost").await.code, 250);
    assert_eq!(c.auth_login(ALICE, PASSWORD).await.code, 235);
    c
}

/// One message as the script writes it; the first refusal or the reply.
async fn script_send(c: &mut Client, rcpts: &[String], message_id: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
    if r.code != 250 {
        return r.line();
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if r.code != 250 {
            c.cmd("RSET").await;
            return r.line();
        }
    }
    let message = format!(
        "Subject: Your invoice\r\nFrom: <{ALICE}>\r\nX-Mailer: PHPMailer 6.9.1\r\nMessage-ID: <{message_id}>\r\n\r\nPlease pay the attached invoice today.\r\n.\r\n"
    );
    c.data_raw(message.as_bytes()).await.line()
}

fn new_people(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| format!("{tag}{k}@prospects.example"))
        .collect()
}

fn decisions(server: &TestServer) -> Vec<mailwarden::events::Event> {
    server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "policy.decision")
        .collect()
}

#[tokio::test]
async fn the_owners_program_from_a_hotel_passes_and_a_script_from_elsewhere_is_blocked() {
    let (server, clock) = crate::common::server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, HOME).await;
    let (addr, cert) = (server.submissions(), server.cert_path());
    // The owner on the road: an untrusted network, the known program, ten
    // template follow-ups to new people.
    let mut c = owners_program(addr, &cert, HOTEL).await;
    for i in 0..10 {
        let reply = c
            .try_send(
                ALICE,
                &new_people(&format!("lead{i}-"), 5),
                "catalogue",
                "Thank you for meeting me today, here is the catalogue we discussed.",
            )
            .await;
        assert!(reply.starts_with("250 "), "follow-up {i}: {reply}");
    }
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());
    // Each follow-up earned a twentieth of what a stranger's would.
    let last = decisions(&server).pop().unwrap();
    assert!(
        last.target
            .as_deref()
            .unwrap()
            .starts_with("new_recipients=0.5"),
        "{last:?}"
    );
    // A script with the password, from another network: blocked at once.
    let mut s = script(addr, &cert, THIEF).await;
    let reply = script_send(&mut s, &new_people("victim-", 5), "1@thief").await;
    assert!(
        reply.starts_with("554 5.7.1 Account <alice@example.com> has been blocked"),
        "{reply}"
    );
    let block = server.accounts().get(ALICE).await.unwrap().block.unwrap();
    assert_eq!(block.kind, mailwarden::accounts::BlockKind::Policy);
    assert!(
        block.detail.as_deref().unwrap().contains("new_recipients="),
        "{block:?}"
    );
    let decision = decisions(&server).pop().unwrap();
    let features: Value = serde_json::from_str(decision.features.as_deref().unwrap()).unwrap();
    assert_ne!(features["user_agent"], 0, "{features}");
    // No address in the logged features: keyed fingerprints only.
    assert!(
        !features.to_string().contains("prospects.example"),
        "{features}"
    );
}

#[tokio::test]
async fn a_script_on_the_owners_own_network_mailing_contacts_earns_points() {
    let (server, clock) = crate::common::server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, HOME).await;
    let (addr, cert) = (server.submissions(), server.cert_path());
    // The contacts the owner wrote to during the week.
    let contacts: Vec<String> = (0..3).map(|d| format!("friend{d}@example.net")).collect();
    let mut c = owners_program(addr, &cert, HOME).await;
    assert!(
        c.try_send(
            ALICE,
            &contacts,
            "hi",
            "see you all on friday at the usual place"
        )
        .await
        .starts_with("250")
    );
    assert_eq!(decisions(&server).pop().unwrap().score, Some(0.0));
    let mut s = script(addr, &cert, HOME).await;
    assert!(
        script_send(&mut s, &contacts, "2@worm")
            .await
            .starts_with("250")
    );
    let worm = decisions(&server).pop().unwrap();
    let signals = worm.signals.clone().unwrap();
    assert!(
        signals
            .iter()
            .any(|(n, p)| *n == "contacts_from_another_sender" && *p > 0.0),
        "{signals:?}"
    );
}

#[tokio::test]
async fn the_owners_busy_hour_meets_a_budget_never_a_block() {
    let (server, clock) =
        crate::common::server_with_clock("[policy]\nnew_recipients_budget_floor = 20\n").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, HOME).await;
    let (addr, cert) = (server.submissions(), server.cert_path());
    let mut c = owners_program(addr, &cert, HOME).await;
    let mut replies = Vec::new();
    for i in 0..6 {
        replies.push(
            c.try_send(
                ALICE,
                &new_people(&format!("cand{i}-"), 5),
                "role",
                "I came across your profile and would love to talk about a role.",
            )
            .await,
        );
    }
    assert!(
        replies[..4].iter().all(|r| r.starts_with("250 ")),
        "{replies:?}"
    );
    assert_eq!(
        replies[4],
        "451 4.7.1 Sending rate limit exceeded, try again later"
    );
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());
    // Mail to people the owner knows still goes.
    let reply = c
        .try_send(
            ALICE,
            &["friend0@example.net".into()],
            "hi",
            "lunch tomorrow at noon then",
        )
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    // An hour later the budget is back.
    clock.advance(Duration::from_secs(3601));
    let mut c = owners_program(addr, &cert, HOME).await;
    let reply = c
        .try_send(
            ALICE,
            &new_people("later-", 5),
            "role",
            "I came across your profile and would love to talk about a role.",
        )
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
}

const ARF: &str = "From: <abuse@receiver.example>\r\nTo: <postmaster@example.com>\r\nSubject: FW: offer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report;\r\n    boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n\r\n--b1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\nOriginal-Mail-From: <SENDER>\r\nOriginal-Rcpt-To: <user@receiver.example>\r\n\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: <SENDER>\r\nSubject: offer\r\n\r\n--b1--\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_complaint_counts_against_the_account_that_sent_the_reported_mail() {
    let server = TestServer::start().await;
    server.add_account(ALICE, PASSWORD).await;
    server
        .accounts()
        .alias_add(
            ALICE,
            "sales@example.com",
            &mailwarden::accounts::Origin::ADMIN,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.eml");
    std::fs::write(&report, ARF.replace("SENDER", "Sales@example.com")).unwrap();
    let config = server.config_path();
    let config = config.to_str().unwrap();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run_cli(
            &[
                "--config",
                config,
                "policy",
                "complaint",
                report.to_str().unwrap(),
            ],
            "",
        )
    });
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "complaint (abuse) counted against alice@example.com"
    );
    let (_, shown, _) = tokio::task::block_in_place(|| {
        run_cli(
            &["--config", config, "account", "show", ALICE, "--json"],
            "",
        )
    });
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let score = shown["policy"]["score"].as_f64().unwrap();
    assert!((score - 3.0).abs() < 0.1, "{shown:#}");
    // From standard input; an unknown sender and a non-report are refused.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run_cli(
            &["--config", config, "policy", "complaint", "-"],
            &ARF.replace("SENDER", "nobody@elsewhere.example"),
        )
    });
    assert!(
        !ok && err.contains("nobody@elsewhere.example is no account or alias here"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run_cli(
            &["--config", config, "policy", "complaint", "-"],
            "Subject: hi\r\n\r\nhello\r\n",
        )
    });
    assert!(!ok && err.contains("not an ARF report"), "{err}");
}

/// The server's JSON log of one session, as `policy replay` input.
fn replay_input(log: &[Value]) -> String {
    let mut lines = Vec::new();
    let mut declared = false;
    for e in log {
        let (Some(event), Some(at)) = (e["event"].as_str(), e["timestamp"].as_str()) else {
            continue;
        };
        match event {
            "auth.success" if e["account"] == ALICE => {
                if !declared {
                    lines.push(serde_json::json!({"at": at, "type": "account", "account": ALICE}));
                    declared = true;
                }
                lines.push(serde_json::json!({
                    "at": at, "type": "auth", "account": ALICE, "ip": e["ip"], "ok": true,
                    "session": e["session"], "mech": e["mechanism"],
                }));
            }
            "policy.decision" => {
                let features: Value =
                    serde_json::from_str(e["features"].as_str().unwrap()).unwrap();
                lines.push(serde_json::json!({
                    "at": at, "type": "message", "account": e["account"], "ip": e["ip"],
                    "rcpts": features["rcpts"], "features": features,
                }));
            }
            _ => {}
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_log_replays_to_the_same_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    let text =
        crate::common::test_config_text("") + "\n[policy]\nnew_recipients_budget_floor = 8\n";
    std::fs::write(&config, &text).unwrap();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run_cli(
            &[
                "--config",
                config.to_str().unwrap(),
                "account",
                "add",
                ALICE,
                "--password-stdin",
            ],
            PASSWORD,
        )
    });
    assert!(ok, "{err}");
    let cert = dir
        .path()
        .join("data")
        .join(mailwarden::tls::SELF_SIGNED_CERT);
    // Two messages, then a script hammering one deferred message.
    let mut s = script(server.submissions(), &cert, "127.0.0.1").await;
    let mut replies = Vec::new();
    replies.push(script_send(&mut s, &new_people("a-", 4), "m1@x").await);
    replies.push(script_send(&mut s, &new_people("b-", 4), "m2@x").await);
    for _ in 0..8 {
        let r = script_send(&mut s, &new_people("c-", 4), "m3@x").await;
        let blocked = r.starts_with("554");
        replies.push(r);
        if blocked {
            break;
        }
    }
    let kinds: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(kinds[..2], ["250", "250"], "{replies:?}");
    assert_eq!(*kinds.last().unwrap(), "554", "{replies:?}");
    assert!(
        kinds[2..kinds.len() - 1].iter().all(|k| *k == "451"),
        "{replies:?}"
    );
    server
        .wait_log("every decision", |log| {
            log.iter()
                .filter(|e| e["event"] == "policy.decision")
                .count()
                == replies.len()
        })
        .await;
    let log = server.log();
    let served: Vec<String> = log
        .iter()
        .filter(|e| e["event"] == "policy.decision")
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    let input = replay_input(&log);
    let out = tokio::task::block_in_place(|| {
        crate::common::output_with_stdin(
            std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden")).args([
                "--config",
                config.to_str().unwrap(),
                "--json",
                "policy",
                "replay",
                "-",
            ]),
            &input,
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replayed: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "decision")
        .map(|l| {
            match l["decision"].as_str().unwrap() {
                "accepted" => "accept",
                "deferred" => "defer",
                _ => "block",
            }
            .to_string()
        })
        .collect();
    assert_eq!(replayed, served, "{stdout}");
    let blocked = lines.iter().find(|l| l["decision"] == "blocked").unwrap();
    assert!(
        blocked["signals"]["retry_hammering"].as_f64().unwrap() > 0.0,
        "{blocked}"
    );
    assert!(
        blocked["reply"]
            .as_str()
            .unwrap()
            .starts_with("554 5.7.1 Account <alice@example.com>")
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["messages"], served.len());
    assert_eq!(summary["blocked"], 1);
    tokio::task::block_in_place(|| server.stop());
}

#[test]
fn replay_names_bad_lines_and_exits_2() {
    let input = concat!(
        "{\"at\":\"2026-12-07T10:00:00Z\",\"type\":\"message\",\"account\":\"a@x.example\",\"ip\":\"192.0.2.1\",\"rcpts\":[\"b@y.example\"]}\n",
        "not json\n",
        "{\"at\":\"2026-12-07T09:00:00Z\",\"type\":\"complaint\",\"account\":\"a@x.example\"}\n",
        "{\"at\":\"2026-12-07T10:05:00Z\",\"type\":\"message\",\"account\":\"a@x.example\",\"ip\":\"192.0.2.1\",\"rcpts\":[\"c@y.example\"],\"headers\":\"From: <a@x.example>\\r\\nSubject: hi\",\"body\":\"hello there\"}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, crate::common::test_config_text("")).unwrap();
    let out = crate::common::output_with_stdin(
        std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden")).args([
            "--config",
            config.to_str().unwrap(),
            "--json",
            "policy",
            "replay",
            "-",
        ]),
        input,
    );
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["decision", "error", "error", "decision", "summary"],
        "{lines:?}"
    );
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[2]["line"], 3);
    assert!(
        lines[2]["message"].as_str().unwrap().contains("earlier"),
        "{lines:?}"
    );
    assert_eq!(lines[0]["decision"], "accepted");
    assert_eq!(lines[4]["messages"], 2);
    assert_eq!(lines[4]["accounts"], 1);
}
