//! Every limit at its edge: just under is served, just over gets the reply
//! of DESIGN.md's table. Small limits come from the test config.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::common::client::Client;
use crate::common::{
    ALICE, PASSWORD, TestServer, assert_outbox_stays, queued_id, sized_message, split_received,
    stored,
};

const LINE_TOO_LONG: &str = "500 5.5.2 Line too long";

/// `prefix` padded with spaces so the line, CRLF included, is `len` octets.
fn line_of(prefix: &str, len: usize) -> String {
    assert!(prefix.len() + 2 <= len);
    format!("{prefix}{}", " ".repeat(len - 2 - prefix.len()))
}

#[tokio::test]
async fn command_lines_are_512_octets() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let noop = format!("NOOP {}", "x".repeat(512 - 2 - 5));
    assert_eq!(noop.len() + 2, 512);
    assert_eq!(c.cmd(&noop).await.line(), "250 2.0.0 Ok");
    let noop = format!("NOOP {}", "x".repeat(513 - 2 - 5));
    assert_eq!(c.cmd(&noop).await.line(), LINE_TOO_LONG);
    // A line far over every limit is read to its end, not parsed in pieces.
    let huge = format!("NOOP {}", "QUIT ".repeat(4000));
    assert_eq!(c.cmd(&huge).await.line(), LINE_TOO_LONG);
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
}

#[tokio::test]
async fn mail_and_rcpt_lines_are_2048_octets() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let mail = line_of("MAIL FROM:<alice@example.com>", 2048);
    assert_eq!(c.cmd(&mail).await.line(), "250 2.1.0 Ok");
    let rcpt = line_of("RCPT TO:<bob@example.org>", 2048);
    assert_eq!(c.cmd(&rcpt).await.line(), "250 2.1.5 Ok");
    let rcpt = line_of("RCPT TO:<carol@example.org>", 2049);
    assert_eq!(c.cmd(&rcpt).await.line(), LINE_TOO_LONG);
    c.cmd("RSET").await;
    let mail = line_of("MAIL FROM:<alice@example.com>", 2049);
    assert_eq!(c.cmd(&mail).await.line(), LINE_TOO_LONG);
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com>").await.line(),
        "250 2.1.0 Ok"
    );
}

#[tokio::test]
async fn auth_lines_are_2048_octets_and_sasl_lines_12288() {
    let server = TestServer::with_alice("").await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    // 1524 octets of credentials are 2032 base64 characters; spaces pad the
    // line to its limit (the decoder trims them).
    let blob = mailwarden::smtp::sasl::encode(&format!("\0{ALICE}\0{}", "p".repeat(1505)));
    assert_eq!(blob.len(), 2032);
    let auth = line_of(&format!("AUTH PLAIN {blob}"), 2048);
    // Read, decoded and checked: the password is simply wrong.
    assert_eq!(
        c.cmd(&auth).await.line(),
        "535 5.7.8 Authentication credentials invalid (with 2FA enabled, use a device password)"
    );
    let auth = line_of(&format!("AUTH PLAIN {blob}"), 2049);
    assert_eq!(c.cmd(&auth).await.line(), LINE_TOO_LONG);

    // A SASL continuation line may be 12288 octets.
    let user = mailwarden::smtp::sasl::encode(&"u".repeat(9213));
    assert_eq!(user.len(), 12284);
    assert_eq!(c.cmd("AUTH LOGIN").await.line(), "334 VXNlcm5hbWU6");
    assert_eq!(
        c.cmd(&line_of(&user, 12288)).await.line(),
        "334 UGFzc3dvcmQ6"
    );
    assert_eq!(
        c.cmd("*").await.line(),
        "501 5.7.0 Authentication cancelled"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await.line(), "334 VXNlcm5hbWU6");
    assert_eq!(
        c.cmd(&line_of(&user, 12289)).await.line(),
        "500 5.5.6 Authentication exchange line is too long"
    );
    // Still in step, and a real login works.
    assert_eq!(
        c.auth_plain(ALICE, PASSWORD).await.line(),
        "235 2.7.0 Authentication successful"
    );
}

#[tokio::test]
async fn message_size_at_its_edge() {
    let server = TestServer::with_alice("[smtp]\nmax_message_size = \"2KiB\"\n").await;
    let mut c = server.alice().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.text.lines().any(|l| l == "SIZE 2048"), "{ehlo:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> SIZE=2049")
            .await
            .line(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> SIZE=2048")
            .await
            .line(),
        "250 2.1.0 Ok"
    );
    c.cmd("RCPT TO:<bob@example.org>").await;
    let id = queued_id(&c.data(&sized_message(2048)).await);
    stored(&server, &id).await;

    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(
        c.data(&sized_message(2049)).await.line(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");

    // BDAT: the chunks together.
    let message = sized_message(2048);
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(
        c.bdat(&message[..1000], false).await.line(),
        "250 2.0.0 1000 octets received"
    );
    let id = queued_id(&c.bdat(&message[1000..], true).await);
    stored(&server, &id).await;

    let message = sized_message(2049);
    c.envelope(ALICE, &["bob@example.org"]).await;
    c.bdat(&message[..1000], false).await;
    assert_eq!(
        c.bdat(&message[1000..2000], false).await.line(),
        "250 2.0.0 1000 octets received"
    );
    assert_eq!(
        c.bdat(&message[2000..], true).await.line(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    assert_outbox_stays(&server, 2).await;
}

#[tokio::test]
async fn message_lines_are_998_octets() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let with_line = |n: usize| {
        let mut m = b"From: <alice@example.com>\r\n\r\n".to_vec();
        m.extend(std::iter::repeat_n(b'x', n));
        m.extend_from_slice(b"\r\nend\r\n");
        m
    };
    c.envelope(ALICE, &["bob@example.org"]).await;
    let id = queued_id(&c.data(&with_line(998)).await);
    stored(&server, &id).await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(
        c.data(&with_line(999)).await.line(),
        "554 5.6.0 Message has a line longer than 998 octets"
    );
    c.envelope(ALICE, &["bob@example.org"]).await;
    let id = queued_id(&c.bdat(&with_line(998), true).await);
    stored(&server, &id).await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(
        c.bdat(&with_line(999), true).await.line(),
        "554 5.6.0 Message has a line longer than 998 octets"
    );
    assert_outbox_stays(&server, 2).await;
}

#[tokio::test]
async fn recipients_at_their_limit() {
    let server = TestServer::with_alice("[smtp]\nmax_recipients = 3\n").await;
    let mut c = server.alice().await;
    c.envelope(ALICE, &["a@example.org", "b@example.org", "c@example.org"])
        .await;
    assert_eq!(
        c.cmd("RCPT TO:<d@example.org>").await.line(),
        "452 4.5.3 Too many recipients"
    );
    let message = b"From: <alice@example.com>\r\n\r\nthree\r\n";
    let id = queued_id(&c.data(message).await);
    let stored = String::from_utf8(stored(&server, &id).await).unwrap();
    // Several recipients: no `for` clause.
    assert!(
        !stored.lines().next().unwrap().contains(" for "),
        "{stored}"
    );
}

#[tokio::test]
async fn idle_sessions_time_out() {
    let server = TestServer::with_alice("[smtp]\ncommand_timeout = \"1s\"\n").await;
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    // Just under the limit, twice: each command restarts the clock.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    }
    let started = Instant::now();
    assert_eq!(c.reply().await.line(), "421 4.4.2 Timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn data_and_bdat_transfers_time_out() {
    let server = TestServer::with_alice("[smtp]\ndata_timeout = \"1s\"\n").await;
    let mut c = server.alice().await;
    // A transfer that finishes in time is queued.
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(b"From: <alice@example.com>\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send_raw(b"in time\r\n.\r\n").await;
    queued_id(&c.reply().await);
    // One that stalls is not.
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(b"From: <alice@example.com>\r\n\r\nstall").await;
    assert_eq!(c.reply().await.line(), "421 4.4.2 Timeout");
    assert!(c.is_closed().await);

    let mut c = server.alice().await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    c.send_raw(b"BDAT 100 LAST\r\nonly part of it").await;
    assert_eq!(c.reply().await.line(), "421 4.4.2 Timeout");
    assert!(c.is_closed().await);
    assert_outbox_stays(&server, 1).await;
}

#[tokio::test]
async fn ten_bad_commands_close_the_session() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    for _ in 0..9 {
        assert_eq!(c.cmd("FROB").await.line(), "500 5.5.1 Command unrecognized");
    }
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("FROB").await.line(), "500 5.5.1 Command unrecognized");
    assert_eq!(c.reply().await.line(), "421 4.7.0 Too many errors");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn refusals_are_not_bad_commands() {
    let server = TestServer::with_alice("[smtp]\nmax_recipients = 1\n").await;
    let mut c = server.alice().await;
    for _ in 0..6 {
        assert_eq!(
            c.cmd("MAIL FROM:<ceo@example.net>").await.code,
            553,
            "not owned"
        );
        assert_eq!(c.cmd("MAIL FROM:<ceo@localhost>").await.code, 554);
    }
    c.envelope(ALICE, &["a@example.org"]).await;
    for _ in 0..6 {
        assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.code, 452);
    }
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
}

#[tokio::test]
async fn two_failed_auths_are_forgiven_the_third_closes() {
    let server = TestServer::with_alice("").await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    for _ in 0..2 {
        assert_eq!(c.auth_plain(ALICE, "not the password").await.code, 535);
    }
    assert_eq!(
        c.auth_plain(ALICE, PASSWORD).await.line(),
        "235 2.7.0 Authentication successful"
    );
    // The third failure in another session closes it (see submission.rs).
}

fn lo(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test]
async fn connections_per_ip_and_in_total() {
    let server =
        TestServer::start_with("[smtp]\nmax_connections_per_ip = 2\nmax_connections = 3\n").await;
    let (addr, cert) = (server.submission(), server.cert_path());
    let (first, g1) = Client::plain_from(lo(1), addr, &cert).await;
    let (_second, g2) = Client::plain_from(lo(1), addr, &cert).await;
    assert_eq!((g1.code, g2.code), (220, 220));
    // A third from the same address is one too many.
    let (mut third, g3) = Client::plain_from(lo(1), addr, &cert).await;
    assert_eq!(g3.line(), "421 4.7.0 Too many connections");
    assert!(third.is_closed().await);
    // Another address still fits under the total...
    let (_other, g4) = Client::plain_from(lo(2), addr, &cert).await;
    assert_eq!(g4.line(), "220 mail.test.example ESMTP");
    // ...until the total is reached, on either port.
    let (mut over, g5) = Client::plain_from(lo(3), addr, &cert).await;
    assert_eq!(g5.line(), "421 4.7.0 Too many connections");
    assert!(over.is_closed().await);
    // On the implicit-TLS port the refusal comes inside TLS.
    let (mut tls, g6) = Client::implicit_tls(server.submissions(), &cert).await;
    assert_eq!(g6.line(), "421 4.7.0 Too many connections");
    assert!(tls.is_closed().await);
    // A closed connection gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, g) = Client::plain_from(lo(1), addr, &cert).await;
        if g.code == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const NO_STORAGE: &str = "452 4.3.1 Insufficient system storage";

/// 100 KB for messages in flight: one 80 KB message fits, two do not.
const SMALL_BUDGET: &str = "[smtp]\nmax_inflight_bytes = \"100KB\"\nmax_message_size = \"90KB\"\n";

#[tokio::test]
async fn messages_in_flight_share_one_memory_budget() {
    let server = TestServer::with_alice(SMALL_BUDGET).await;
    let mut first = server.alice().await;
    let mut second = server.alice().await;
    for c in [&mut first, &mut second] {
        assert_eq!(
            c.cmd("MAIL FROM:<alice@example.com> SIZE=80000")
                .await
                .line(),
            "250 2.1.0 Ok"
        );
        c.cmd("RCPT TO:<bob@example.org>").await;
    }
    assert_eq!(first.cmd("DATA").await.code, 354);
    // The second message does not fit beside the first: refused before 354.
    assert_eq!(second.cmd("DATA").await.line(), NO_STORAGE);
    // Without SIZE a message reserves 256 KiB, or max_message_size when
    // that is less (here 90 KB): a BDAT does not fit either.
    let mut third = server.alice().await;
    third.envelope(ALICE, &["carol@example.org"]).await;
    assert_eq!(third.bdat(b"x", false).await.line(), NO_STORAGE);
    assert_eq!(third.bdat(b"y", true).await.line(), NO_STORAGE);
    assert_eq!(third.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    // A small declared SIZE fits, but a body that outgrows it past what is
    // left is read to its end and refused.
    third.cmd("MAIL FROM:<alice@example.com> SIZE=1000").await;
    third.cmd("RCPT TO:<carol@example.org>").await;
    assert_eq!(third.data(&sized_message(30_000)).await.line(), NO_STORAGE);
    assert_eq!(third.cmd("NOOP").await.line(), "250 2.0.0 Ok");

    // The first finishes; its reservation goes back with the commit.
    first.send_raw(&sized_message(79_000)).await;
    first.send_raw(b".\r\n").await;
    let id = queued_id(&first.reply().await);
    stored(&server, &id).await;
    // The same transaction tries DATA again, and it fits now.
    assert_eq!(second.cmd("DATA").await.code, 354);
    second.send_raw(&sized_message(79_000)).await;
    second.send_raw(b".\r\n").await;
    queued_id(&second.reply().await);

    // BDAT without SIZE, alone: fits, chunk after chunk.
    third.envelope(ALICE, &["carol@example.org"]).await;
    let message = sized_message(60_000);
    assert_eq!(
        third.bdat(&message[..30_000], false).await.line(),
        "250 2.0.0 30000 octets received"
    );
    queued_id(&third.bdat(&message[30_000..], true).await);

    let refused: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "message.rejected")
        .collect();
    assert_eq!(refused.len(), 3, "one per refused message: {refused:?}");
    assert_outbox_stays(&server, 3).await;
}

#[tokio::test]
async fn a_session_that_ends_mid_message_gives_its_reservation_back() {
    let server = TestServer::with_alice(SMALL_BUDGET).await;
    let mut gone = server.alice().await;
    gone.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(gone.cmd("DATA").await.code, 354);
    gone.send_raw(b"From: <alice@example.com>\r\n\r\nhalf a mess")
        .await;
    let mut c = server.alice().await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(c.cmd("DATA").await.line(), NO_STORAGE);
    drop(gone);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.cmd("DATA").await;
        if r.code == 354 {
            break;
        }
        assert_eq!(r.line(), NO_STORAGE);
        assert!(Instant::now() < deadline, "the reservation never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.send_raw(b"From: <alice@example.com>\r\n\r\nwhole\r\n.\r\n")
        .await;
    queued_id(&c.reply().await);
}

#[tokio::test]
async fn an_unauthenticated_session_gets_twenty_commands() {
    let server = TestServer::with_alice("").await;
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    for _ in 0..20 {
        assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    }
    assert_eq!(c.cmd("NOOP").await.line(), "421 4.7.0 Too many errors");
    assert!(c.is_closed().await);

    // STARTTLS does not start the count again; AUTH ends it.
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    for _ in 0..8 {
        c.cmd("NOOP").await;
    }
    c.ehlo().await;
    c.starttls().await;
    for _ in 0..8 {
        c.cmd("NOOP").await;
    }
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    for _ in 0..30 {
        assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    }
}

#[tokio::test]
async fn an_unauthenticated_session_has_a_deadline() {
    let server = TestServer::with_alice("[smtp]\nunauthenticated_timeout = \"3s\"\n").await;
    let started = Instant::now();
    let (mut c, _) = Client::plain(server.submission(), &server.cert_path()).await;
    // Commands do not move the deadline: it counts from the connection.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    }
    assert_eq!(c.reply().await.line(), "421 4.4.2 Timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2900), "{waited:?}");
    assert!(waited < Duration::from_millis(4500), "{waited:?}");
    assert!(c.is_closed().await);

    // After AUTH only command_timeout applies.
    let mut c = server.alice().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
}

#[tokio::test]
async fn ehlo_names_are_taken_as_given() {
    let server = TestServer::with_alice("").await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    // Only control characters and names over 255 octets are refused.
    c.send_raw(b"EHLO JOHN\x01PC\r\n").await;
    assert_eq!(
        c.reply().await.line(),
        "501 5.5.4 Syntax error in parameters"
    );
    assert_eq!(
        c.cmd(&format!("EHLO {}", "a".repeat(256))).await.line(),
        "501 5.5.4 Syntax error in parameters"
    );
    assert_eq!(c.cmd(&format!("EHLO {}", "a".repeat(255))).await.code, 250);
    // Outlook's NetBIOS name.
    let ehlo = c.cmd("EHLO JOHN_PC").await;
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    let body = b"From: <alice@example.com>\r\nSubject: netbios\r\n\r\nhi\r\n";
    let id = queued_id(&c.send_message(ALICE, &["bob@example.org"], body).await);
    let (received, _) = split_received(&stored(&server, &id).await);
    assert!(
        received.starts_with("Received: from JOHN_PC ([127.0.0.1]) by mail.test.example"),
        "{received}"
    );

    // What a Received header cannot hold as it is, it quotes.
    c.cmd("EHLO x;by=evil").await;
    let id = queued_id(&c.send_message(ALICE, &["bob@example.org"], body).await);
    let (received, _) = split_received(&stored(&server, &id).await);
    assert!(
        received.starts_with("Received: from \"x;by=evil\" ([127.0.0.1])"),
        "{received}"
    );
}
