//! The scorer through real SMTP sessions.

use std::time::Duration;

use crate::common::client::Client;
use crate::common::{PASSWORD, TestServer};

const ALICE: &str = "alice@example.com";
const POLICY_554: &str = "554 5.7.1 Account <alice@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked";

/// The thief's address: another /24 than the owner's 127.0.0.1.
const THIEF: &str = "127.0.1.2";

async fn session(server: &TestServer) -> Client {
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    c
}

/// A session from the thief's network with `password`.
async fn thief_session(server: &TestServer, password: &str) -> Client {
    let (mut c, _) = Client::implicit_tls_from(
        server.submissions(),
        Some(THIEF.parse().unwrap()),
        &server.cert_path(),
    )
    .await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, password).await.code, 235);
    c
}

/// The operator marks the owner's network (127.0.0.0/24) as trusted: mail
/// from THIEF then comes from a network the account does not trust. (A
/// network earns trust by sending on several days; the tests without a
/// manual clock cannot wait for that.) Without any trusted network, a
/// burst is a new account's busy day: it meets a budget, never a block.
async fn trust_owner_network(server: &TestServer) {
    server
        .accounts()
        .trust_network(
            ALICE,
            "127.0.0.0/24".parse().unwrap(),
            &mailwarden::accounts::Origin::ADMIN,
        )
        .await
        .unwrap();
}

/// MAIL, RCPTs and DATA as Alice; the first refusal or the final reply.
async fn send(c: &mut Client, rcpts: &[String], body: &str) -> String {
    c.try_send(ALICE, rcpts, "offer", body).await
}

#[tokio::test]
async fn a_burst_to_new_recipients_is_blocked_with_the_exact_text() {
    let server = TestServer::start().await;
    server.add_account(ALICE, PASSWORD).await;
    trust_owner_network(&server).await;
    let mut c = thief_session(&server, PASSWORD).await;
    let mut tipping = None;
    for i in 0..20 {
        let rcpts: Vec<String> = (0..5)
            .map(|k| format!("target{i}-{k}@victims.example"))
            .collect();
        let reply = send(&mut c, &rcpts, "Cheap watches, best prices, click now.").await;
        if reply.starts_with("554") {
            assert_eq!(reply, POLICY_554);
            tipping = Some(i);
            break;
        }
        assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    }
    let tipping = tipping.expect("the burst was never blocked");
    assert!(tipping <= 10, "blocked only at message {}", tipping + 1);
    // The next transaction is refused at MAIL, and a new session too.
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{ALICE}>")).await.line(),
        POLICY_554
    );
    let mut again = session(&server).await;
    assert_eq!(
        again.cmd(&format!("MAIL FROM:<{ALICE}>")).await.line(),
        POLICY_554
    );

    let account = server.accounts().get(ALICE).await.unwrap();
    let block = account.block.expect("a block record");
    assert_eq!(block.reason, "sending to many new recipients");
    assert!(block.detail.unwrap().contains("new_recipients="));
    let blocked = server.wait_event("account.blocked").await;
    assert_eq!(blocked.scope, Some("policy"));
    let decisions: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "policy.decision")
        .collect();
    assert_eq!(decisions.last().unwrap().reason.as_deref(), Some("block"));
    assert!(decisions.last().unwrap().score.unwrap() >= 10.0);
}

#[tokio::test]
async fn a_soft_limit_defers_the_whole_message_until_the_window_moves() {
    let extra = "[policy]\nmax_messages_per_minute = 3\nmax_recipients_per_minute = 6\n";
    let (server, clock) = crate::common::server_with_clock(extra).await;
    let mut c = session(&server).await;
    let friends: Vec<String> = vec!["friend@example.org".into()];
    for _ in 0..3 {
        assert!(
            send(&mut c, &friends, "hello there")
                .await
                .starts_with("250")
        );
    }
    assert_eq!(
        send(&mut c, &friends, "hello there").await,
        "451 4.7.1 Sending rate limit exceeded, try again later"
    );
    clock.advance(Duration::from_secs(61));
    assert!(
        send(&mut c, &friends, "hello there")
            .await
            .starts_with("250")
    );
    // Recipients count too, decided at the end of DATA for the whole message.
    let many: Vec<String> = (0..6).map(|i| format!("f{i}@example.org")).collect();
    assert_eq!(
        send(&mut c, &many, "hello all").await,
        "451 4.7.1 Sending rate limit exceeded, try again later"
    );
    clock.advance(Duration::from_secs(61));
    assert!(send(&mut c, &many, "hello all").await.starts_with("250"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sessions_cannot_all_slip_under_the_threshold() {
    let server = TestServer::start().await;
    server.add_account(ALICE, PASSWORD).await;
    trust_owner_network(&server).await;
    let mut tasks = Vec::new();
    for s in 0..8 {
        let (addr, cert) = (server.submissions(), server.cert_path());
        tasks.push(tokio::spawn(async move {
            let (mut c, _) =
                Client::implicit_tls_from(addr, Some(THIEF.parse().unwrap()), &cert).await;
            c.ehlo().await;
            c.auth_plain(ALICE, PASSWORD).await;
            let mut accepted = 0;
            for i in 0..6 {
                let rcpts: Vec<String> = (0..5)
                    .map(|k| format!("p{s}-{i}-{k}@victims.example"))
                    .collect();
                if send(&mut c, &rcpts, "Cheap watches, best prices, click now.")
                    .await
                    .starts_with("250")
                {
                    accepted += 1;
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    // 48 attempts in parallel: the block comes after a handful, for all.
    assert!(accepted <= 10, "{accepted} messages got out");
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_some());
}

fn burst_rcpts(i: usize) -> Vec<String> {
    (0..5)
        .map(|k| format!("victim{i}-{k}@victims.example"))
        .collect()
}

/// Sends bulk messages until one is refused; returns that reply.
async fn burst_until_refused(c: &mut Client, tag: usize) -> String {
    for i in 0..30 {
        let reply = send(
            c,
            &burst_rcpts(tag * 100 + i),
            "Cheap watches, best prices, click now.",
        )
        .await;
        if !reply.starts_with("250") {
            return reply;
        }
    }
    panic!("never refused");
}

#[tokio::test]
async fn observe_mode_logs_the_block_and_delivers() {
    let server = TestServer::start_with("[policy]\nmode = \"observe\"\n").await;
    server.add_account(ALICE, PASSWORD).await;
    trust_owner_network(&server).await;
    let mut c = thief_session(&server, PASSWORD).await;
    for i in 0..15 {
        let reply = send(
            &mut c,
            &burst_rcpts(i),
            "Cheap watches, best prices, click now.",
        )
        .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());
    let would_block = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "policy.decision" && e.reason.as_deref() == Some("block"))
        .count();
    assert!(would_block > 0, "no decision logged as a block");
    assert!(
        server
            .events
            .snapshot()
            .iter()
            .filter(|e| e.name() == "policy.decision")
            .all(|e| e.observed == Some(true))
    );
    server.wait_outbox(15).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tipping_message_is_kept_as_evidence_that_cannot_be_released_and_expires() {
    let server = TestServer::start().await;
    server.add_account(ALICE, PASSWORD).await;
    trust_owner_network(&server).await;
    let mut c = thief_session(&server, PASSWORD).await;
    assert_eq!(burst_until_refused(&mut c, 1).await, POLICY_554);
    let spool = server.running().spool.clone();
    let evidence: Vec<_> = spool
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.state == mailwarden::spool::QueueState::Evidence)
        .collect();
    assert_eq!(evidence.len(), 1);
    let id = evidence[0].id.to_string();
    let body = spool.body(evidence[0].id).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&body).contains("Cheap watches"));
    let config = server.config_path();
    let config = config.to_str().unwrap().to_string();
    let (listed, stdout, _) = tokio::task::block_in_place(|| {
        crate::common::run_cli(&["--config", &config, "queue", "list", "--held"], "")
    });
    assert!(
        listed && stdout.contains(&id) && stdout.contains("evidence"),
        "{stdout}"
    );
    let (released, _, err) = tokio::task::block_in_place(|| {
        crate::common::run_cli(&["--config", &config, "queue", "release", &id], "")
    });
    assert!(!released && err.contains("policy evidence"), "{err}");
    // Never delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spool.get(evidence[0].id).await.unwrap().is_some());
    // Kept for evidence_retention (14 days), then gone.
    assert_eq!(
        mailwarden::policy::evidence::sweep(&*spool, Duration::from_secs(14 * 86400)).await,
        0
    );
    assert_eq!(
        mailwarden::policy::evidence::sweep(&*spool, Duration::ZERO).await,
        1
    );
    assert!(spool.get(evidence[0].id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_lets_a_trusted_account_send_what_would_defer_another() {
    let server = TestServer::start_with("[policy]\nmax_messages_per_minute = 3\n").await;
    server.add_account(ALICE, PASSWORD).await;
    server.add_account("bob@example.com", PASSWORD).await;
    let config = server.config_path();
    let config = config.to_str().unwrap().to_string();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        crate::common::run_cli(
            &[
                "--config",
                &config,
                "account",
                "policy",
                "set",
                ALICE,
                "max_messages_per_minute=100",
            ],
            "",
        )
    });
    assert!(ok, "{err}");
    assert!(out.contains("max_messages_per_minute"), "{out}");
    let (shown_ok, shown, _) = tokio::task::block_in_place(|| {
        crate::common::run_cli(
            &["--config", &config, "--json", "account", "show", ALICE],
            "",
        )
    });
    assert!(shown_ok);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["policy_overrides"]["max_messages_per_minute"], 100.0);

    let friends = vec!["friend@example.org".to_string()];
    let mut alice = session(&server).await;
    for _ in 0..6 {
        assert!(send(&mut alice, &friends, "hello").await.starts_with("250"));
    }
    let (mut bob, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    bob.ehlo().await;
    bob.auth_plain("bob@example.com", PASSWORD).await;
    let mut replies = Vec::new();
    for _ in 0..4 {
        let r = bob.cmd("MAIL FROM:<bob@example.com>").await;
        replies.push(r.code);
        if r.code == 250 {
            bob.cmd("RSET").await;
            // Count it as sent: a real message.
            bob.cmd("MAIL FROM:<bob@example.com>").await;
            bob.cmd("RCPT TO:<friend@example.org>").await;
            bob.cmd("DATA").await;
            bob.send_raw(b"From: <bob@example.com>\r\n\r\nhi\r\n.\r\n")
                .await;
            bob.reply().await;
        }
    }
    assert_eq!(replies, [250, 250, 250, 451]);
}

#[tokio::test]
async fn a_block_during_probation_is_an_operator_block() {
    use mailwarden::accounts::{Origin, totp};
    let (server, clock) = crate::common::server_with_clock("").await;
    trust_owner_network(&server).await;
    let mut c = thief_session(&server, PASSWORD).await;
    assert_eq!(burst_until_refused(&mut c, 1).await, POLICY_554);
    // Self-service unblock: new password, new 2FA.
    server
        .accounts()
        .set_password(ALICE, "a brand new passphrase", &Origin::ADMIN)
        .await
        .unwrap();
    let enrolment = server
        .accounts()
        .totp_enable(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    let secret = crate::security::secret_of(&enrolment.key);
    clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, mailwarden::clock::Clock::unix(&*clock));
    server
        .accounts()
        .totp_verify(ALICE, &code, &Origin::ADMIN)
        .await
        .unwrap();
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());
    let device = server
        .accounts()
        .device_password_add(ALICE, "mail", &Origin::ADMIN)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    // Again, within the 7-day probation, from another network.
    let mut c = thief_session(&server, &device).await;
    let refused = burst_until_refused(&mut c, 2).await;
    assert_eq!(
        refused,
        "554 5.7.1 Account <alice@example.com> has been blocked from sending by the administrator. Please contact support"
    );
    let block = server.accounts().get(ALICE).await.unwrap().block.unwrap();
    assert_eq!(block.kind, mailwarden::accounts::BlockKind::Operator);
}

#[tokio::test]
async fn the_webhook_gets_a_signed_json_body_and_the_abuse_contact_a_mail() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("webhook.secret");
    std::fs::write(&secret_file, "shared webhook secret\n").unwrap();
    let extra = format!(
        "[policy]\nabuse_contact = \"abuse@example.net\"\nwebhook_url = \"http://{hook}/mailwarden\"\nwebhook_secret_file = \"{}\"\n",
        secret_file.display()
    );
    let receiver = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    tcp.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return (head.to_string(), body.to_string());
                }
            }
            assert!(n > 0, "connection closed early");
        }
    });
    let server = TestServer::start_with(&extra).await;
    server.add_account(ALICE, PASSWORD).await;
    trust_owner_network(&server).await;
    let mut c = thief_session(&server, PASSWORD).await;
    assert_eq!(burst_until_refused(&mut c, 1).await, POLICY_554);
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), receiver)
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("POST /mailwarden HTTP/1.1"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["event"], "account.blocked");
    assert_eq!(json["account"], ALICE);
    assert_eq!(json["kind"], "policy");
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("x-mailwarden-signature: "))
        .expect("a signature header");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"shared webhook secret");
    let expected: String = aws_lc_rs::hmac::sign(&key, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(signature, format!("sha256={expected}"));
    // And a mail to the abuse contact.
    let mut found = false;
    for _ in 0..500 {
        found = crate::common::read_outbox(&server.outbox())
            .iter()
            .any(|(_, m)| String::from_utf8_lossy(m).contains("To: <abuse@example.net>"));
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "no mail to the abuse contact");
}
