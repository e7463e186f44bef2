//! Real third-party clients, as users connect. `scripts/test` installs them;
//! a missing client fails the test rather than skipping it.

use std::process::Command;

use crate::common::{PASSWORD, TestServer};

fn swaks(
    server: &TestServer,
    port: u16,
    tls_flag: &str,
    auth: &str,
    password: &str,
) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            tls_flag,
            "--ehlo",
            "client.test.example",
            "--pipeline",
            "--auth",
            auth,
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            password,
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.org,carol@example.net",
            "--header",
            "Subject: swaks test",
            "--timeout",
            "20",
        ])
        .output()
        .expect("swaks is installed (scripts/test installs it)");
    let _ = server;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_sends_through_both_ports() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let starttls = server.submission().port();
    let implicit = server.submissions().port();
    let runs = [
        (starttls, "--tls", "LOGIN"),
        (starttls, "--tls", "PLAIN"),
        (implicit, "--tlsc", "PLAIN"),
        (implicit, "--tlsc", "LOGIN"),
    ];
    for (i, (port, flag, auth)) in runs.into_iter().enumerate() {
        let (ok, transcript) =
            tokio::task::block_in_place(|| swaks(&server, port, flag, auth, PASSWORD));
        assert!(ok, "swaks {flag} {auth} failed:\n{transcript}");
        assert!(
            transcript.contains("250 2.0.0 Ok: queued as"),
            "{transcript}"
        );
        let outbox = server.wait_outbox(i + 1).await;
        assert_eq!(outbox.len(), i + 1);
    }
    for (_, message) in server.wait_outbox(4).await {
        let text = String::from_utf8(message).unwrap();
        assert!(text.contains("Subject: swaks test\r\n"), "{text}");
    }
    let (ok, transcript) = tokio::task::block_in_place(|| {
        swaks(&server, starttls, "--tls", "PLAIN", "wrong password")
    });
    assert!(!ok);
    assert!(
        transcript.contains("535 5.7.8 Authentication credentials invalid"),
        "{transcript}"
    );
}
