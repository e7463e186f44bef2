//! The scorer through real SMTP sessions.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mailwarden::clock::ManualClock;
use mailwarden::server::Overrides;

use crate::common::client::Client;
use crate::common::{PASSWORD, TestServer};

const ALICE: &str = "alice@example.com";
const POLICY_554: &str = "554 5.7.1 Account <alice@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked";

async fn session(server: &TestServer) -> Client {
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    c
}

/// MAIL, RCPTs and DATA; returns the last reply line (the first refusal).
async fn send(c: &mut Client, rcpts: &[String], body: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
    if r.code != 250 {
        return r.line();
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(format!("From: <{ALICE}>\r\nSubject: offer\r\n\r\n{body}\r\n.\r\n").as_bytes())
        .await;
    c.reply().await.line()
}

#[tokio::test]
async fn a_burst_to_new_recipients_is_blocked_with_the_exact_text() {
    let server = TestServer::start().await;
    server.add_account(ALICE, PASSWORD).await;
    let mut c = session(&server).await;
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
    assert!(block.detail.unwrap().contains("bulk_new_recipients"));
    let blocked = server.wait_event("account.blocked").await;
    assert_eq!(blocked.kind, Some("policy"));
    let decisions: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name == "policy.decision")
        .collect();
    assert_eq!(decisions.last().unwrap().reason.as_deref(), Some("block"));
    assert!(decisions.last().unwrap().score.unwrap() >= 10.0);
}

#[tokio::test]
async fn a_soft_limit_defers_the_whole_message_until_the_window_moves() {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let overrides = Overrides {
        clock: Some(clock.clone()),
        ..Overrides::default()
    };
    let extra = "[policy]\nmax_messages_per_minute = 3\nmax_recipients_per_minute = 6\n";
    let server = TestServer::start_full(extra, overrides).await;
    server.add_account(ALICE, PASSWORD).await;
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
    let mut tasks = Vec::new();
    for s in 0..8 {
        let (addr, cert) = (server.submissions(), server.cert_path());
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = Client::implicit_tls(addr, &cert).await;
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
