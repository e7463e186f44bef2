//! The first whole path: connect, TLS, AUTH, submit, message on disk.

use crate::common::client::Client;
use crate::common::{PASSWORD, TestServer, queued_id, split_received};

/// With Date and Message-ID, so the server adds nothing but Received.
const BODY: &[u8] = b"From: <alice@example.com>\r\nTo: <bob@example.org>\r\nSubject: hello\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <m1@client.test.example>\r\n\r\nFirst line.\r\n.leading dot stays\r\n..two dots\r\nend\r\n";

pub fn assert_received(line: &str, id: &str, rcpt: Option<&str>) {
    let for_clause = rcpt.map(|r| format!(" for <{r}>")).unwrap_or_default();
    let prefix = format!(
        "Received: from client.test.example ([127.0.0.1]) by mail.test.example (mailwarden) with ESMTPSA id {id}{for_clause}; "
    );
    assert!(
        line.starts_with(&prefix),
        "{line:?} should start with {prefix:?}"
    );
    assert!(line.ends_with(" +0000\r\n"), "{line:?}");
}

#[tokio::test]
async fn starttls_and_auth_login_land_the_message_byte_for_byte() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, greeting) = Client::plain(server.submission(), &server.cert_path()).await;
    assert_eq!(greeting.line(), "220 mail.test.example ESMTP");
    let ehlo = c.ehlo().await;
    assert!(ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.text.contains("AUTH"),
        "AUTH must not be offered before TLS: {ehlo:?}"
    );
    c.starttls().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert!(!ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "SIZE 26214400",
    ] {
        assert!(
            ehlo.text.lines().any(|l| l == ext),
            "{ext} missing from {ehlo:?}"
        );
    }
    assert_eq!(
        c.auth_login("alice@example.com", PASSWORD).await.line(),
        "235 2.7.0 Authentication successful"
    );
    let reply = c
        .send_message("alice@example.com", &["bob@example.org"], BODY)
        .await;
    let id = queued_id(&reply);
    assert_eq!(c.cmd("QUIT").await.line(), "221 2.0.0 Bye");

    let outbox = server.wait_outbox(1).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, id);
    let (received, rest) = split_received(&outbox[0].1);
    assert_received(&received, &id, Some("bob@example.org"));
    assert_eq!(rest, BODY, "the message must arrive byte for byte");

    // The outbox file appears just before delivery.success is emitted,
    // and session.end follows the close: wait for them.
    for name in [
        "session.start",
        "auth.success",
        "message.accepted",
        "delivery.success",
        "session.end",
    ] {
        server.wait_event(name).await;
    }
}

#[tokio::test]
async fn implicit_tls_and_auth_plain_land_the_message() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, greeting) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    assert_eq!(greeting.line(), "220 mail.test.example ESMTP");
    let ehlo = c.ehlo().await;
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert!(!ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    assert_eq!(
        c.auth_plain("Alice@Example.COM", PASSWORD).await.line(),
        "235 2.7.0 Authentication successful"
    );
    let reply = c
        .send_message(
            "alice@example.com",
            &["bob@example.org", "carol@example.net"],
            BODY,
        )
        .await;
    let id = queued_id(&reply);
    let outbox = server.wait_outbox(1).await;
    let (received, rest) = split_received(&outbox[0].1);
    // Two recipients: no `for` clause (it would reveal Bcc).
    assert_received(&received, &id, None);
    assert_eq!(rest, BODY);
}

#[tokio::test]
async fn auth_before_tls_is_refused_with_538() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    c.ehlo().await;
    let blob = mailwarden::smtp::sasl::encode(&format!("\0alice@example.com\0{PASSWORD}"));
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {blob}")).await.line(),
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    assert_eq!(
        c.cmd("AUTH LOGIN").await.line(),
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
}

#[tokio::test]
async fn mail_before_auth_is_refused_with_530() {
    let server = TestServer::start().await;
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com>").await.line(),
        "530 5.7.0 Authentication required"
    );
    c.starttls().await;
    c.ehlo().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com>").await.line(),
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.org>").await.line(),
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.cmd("DATA").await.line(),
        "530 5.7.0 Authentication required"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_535() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    let expected =
        "535 5.7.8 Authentication credentials invalid (with 2FA enabled, use a device password)";
    assert_eq!(
        c.auth_plain("alice@example.com", "wrong password!!")
            .await
            .line(),
        expected
    );
    assert_eq!(
        c.auth_login("nobody@example.com", PASSWORD).await.line(),
        expected
    );
    // The third failure in a session closes it.
    assert_eq!(
        c.auth_plain("alice@example.com", "still wrong!!")
            .await
            .line(),
        expected
    );
    assert_eq!(c.reply().await.line(), "421 4.7.0 Too many errors");
    assert!(c.is_closed().await);
    let failures: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "auth.failure")
        .collect();
    assert_eq!(failures.len(), 3);
    assert_eq!(failures[0].reason.as_deref(), Some("bad_password"));
    assert_eq!(failures[1].reason.as_deref(), Some("unknown_account"));
}

#[tokio::test]
async fn bare_auth_plain_gets_an_empty_challenge() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    let challenge = c.cmd("AUTH PLAIN").await;
    assert_eq!((challenge.code, challenge.text.as_str()), (334, ""));
    let blob = mailwarden::smtp::sasl::encode(&format!("\0alice@example.com\0{PASSWORD}"));
    assert_eq!(
        c.cmd(&blob).await.line(),
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        c.auth_plain("alice@example.com", PASSWORD).await.line(),
        "503 5.5.1 Already authenticated"
    );
}

#[tokio::test]
async fn auth_exchange_errors_have_their_own_replies() {
    let server = TestServer::start().await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(
        c.cmd("AUTH CRAM-MD5").await.line(),
        "504 5.5.4 Unrecognized authentication type"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await.code, 334);
    assert_eq!(
        c.cmd("*").await.line(),
        "501 5.7.0 Authentication cancelled"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN !!!notbase64").await.line(),
        "501 5.5.2 Cannot decode authentication response"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await.code, 334);
    let long = "A".repeat(13_000);
    assert_eq!(
        c.cmd(&long).await.line(),
        "500 5.5.6 Authentication exchange line is too long"
    );
    // The session is still usable.
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let server = TestServer::start().await;
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    c.ehlo().await;
    // An attacker in the middle appends a command to the plaintext STARTTLS.
    c.send_raw(b"STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.line(), "220 2.0.0 Ready to start TLS");
    c.upgrade().await;
    // The first reply inside TLS answers our EHLO, not the injected NOOP.
    let ehlo = c.cmd("EHLO client.test.example").await;
    assert_eq!(ehlo.code, 250);
    assert!(ehlo.text.starts_with("mail.test.example"), "{ehlo:?}");
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"));
}

#[tokio::test]
async fn state_is_reset_after_starttls() {
    let server = TestServer::start().await;
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    c.ehlo().await;
    c.starttls().await;
    // No EHLO after TLS yet: the earlier one was forgotten.
    assert_eq!(
        c.cmd("AUTH PLAIN").await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
    assert_eq!(
        c.cmd("STARTTLS").await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
}

#[tokio::test]
async fn sender_must_be_owned_and_rset_noop_quit_work() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    c.auth_plain("alice@example.com", PASSWORD).await;
    assert_eq!(
        c.cmd("MAIL FROM:<ceo@example.com>").await.line(),
        "553 5.7.1 Sender address <ceo@example.com> not owned by authenticated user"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice+news@example.com>").await.line(),
        "250 2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com>").await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
    assert_eq!(c.cmd("RSET").await.line(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("MAIL FROM:<>").await.line(), "250 2.1.0 Ok");
    assert_eq!(c.cmd("DATA").await.line(), "554 5.5.1 No valid recipients");
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("QUIT").await.line(), "221 2.0.0 Bye");
    assert!(c.is_closed().await);
}

/// `[smtp] legacy_auth_line`: after TLS (STARTTLS or implicit), EHLO has
/// exactly one more line, `AUTH=PLAIN LOGIN`, after the standard one; before
/// TLS there is no AUTH line of either form. Off by default.
#[tokio::test]
async fn the_legacy_auth_line_follows_tls_only_when_enabled() {
    let mut after_tls = Vec::new();
    for extra in ["", "[smtp]\nlegacy_auth_line = true\n"] {
        let server = TestServer::start_with(extra).await;
        server.add_account("alice@example.com", PASSWORD).await;
        let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
        let before = c.ehlo().await;
        assert!(!before.text.contains("AUTH"), "{before:?}");
        c.starttls().await;
        let ehlo = c.ehlo().await;
        let (mut implicit, _) =
            Client::implicit_tls(server.submissions(), &server.cert_path()).await;
        assert_eq!(implicit.ehlo().await, ehlo);
        assert_eq!(
            c.auth_plain("alice@example.com", PASSWORD).await.line(),
            "235 2.7.0 Authentication successful"
        );
        assert_eq!(
            implicit
                .auth_login("alice@example.com", PASSWORD)
                .await
                .line(),
            "235 2.7.0 Authentication successful"
        );
        after_tls.push(ehlo.text);
    }
    let [standard, legacy] = &after_tls[..] else {
        unreachable!()
    };
    let auth = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("AUTH"))
            .map(String::from)
            .collect()
    };
    assert_eq!(auth(standard), ["AUTH PLAIN LOGIN"]);
    assert_eq!(auth(legacy), ["AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN"]);
    assert_eq!(*legacy, format!("{standard}\nAUTH=PLAIN LOGIN"));
}
