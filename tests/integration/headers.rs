//! Submission duties on the message (RFC 6409 §8): header From and Sender
//! owned by the account, whatever the disguise; Date and Message-ID added
//! when missing; the Received header of DESIGN.md.

use crate::common::client::Client;
use crate::common::{ALICE, TestServer, assert_outbox_stays, queued_id, split_received, stored};
use crate::submission::assert_received;

fn not_owned(address: &str) -> String {
    format!("550 5.7.1 Header From address <{address}> not owned by authenticated user")
}

/// A message with `header` first and a short body.
fn message(header: &str) -> Vec<u8> {
    format!("{header}\r\nTo: <bob@example.org>\r\nSubject: header test\r\n\r\nbody\r\n")
        .into_bytes()
}

async fn submit(c: &mut Client, header: &str) -> String {
    c.envelope(ALICE, &["bob@example.org"]).await;
    c.data(&message(header)).await.line()
}

#[tokio::test]
async fn disguised_header_from_is_refused() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let cases = [
        // Two From fields: the second one is what some programs show.
        (
            "From: <alice@example.com>\r\nFrom: <ceo@example.net>",
            "ceo@example.net",
        ),
        // Two From fields even when both are owned: a message has one.
        (
            "From: <alice@example.com>\r\nFrom: <alice+x@example.com>",
            "alice+x@example.com",
        ),
        // The owned address only as a display name...
        (
            "From: \"alice@example.com\" <ceo@example.net>",
            "ceo@example.net",
        ),
        // ...or a comment...
        (
            "From: ceo@example.net (alice@example.com)",
            "ceo@example.net",
        ),
        // ...or an encoded word (base64 of "alice@example.com").
        (
            "From: =?UTF-8?B?YWxpY2VAZXhhbXBsZS5jb20=?= <ceo@example.net>",
            "ceo@example.net",
        ),
        // A group hiding a second mailbox.
        (
            "From: Staff: alice@example.com, ceo@example.net;",
            "ceo@example.net",
        ),
        // A folded field.
        (
            "From: Alice Example\r\n  <ceo@example.net>",
            "ceo@example.net",
        ),
        // A mailbox list.
        (
            "From: <alice@example.com>, <ceo@example.net>",
            "ceo@example.net",
        ),
        // Sender is checked as well.
        (
            "From: <alice@example.com>\r\nSender: <ceo@example.net>",
            "ceo@example.net",
        ),
        // No From at all, an empty group, an encoded word with no address.
        ("X-Note: no from", ""),
        ("From: Undisclosed recipients:;", ""),
        ("From: =?UTF-8?Q?alice=40example.com?=", ""),
    ];
    for (header, shown) in cases {
        assert_eq!(submit(&mut c, header).await, not_owned(shown), "{header:?}");
    }
    // The last chunk of BDAT is checked the same way.
    c.envelope(ALICE, &["bob@example.org"]).await;
    let m = message("From: \"alice@example.com\" <ceo@example.net>");
    assert_eq!(
        c.bdat(&m[..10], false).await.line(),
        "250 2.0.0 10 octets received"
    );
    assert_eq!(
        c.bdat(&m[10..], true).await.line(),
        not_owned("ceo@example.net")
    );
    // 550s are refusals, not bad commands: the session is fine.
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    assert_outbox_stays(&server, 0).await;
    let rejected = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "message.rejected" && e.reason.as_deref() == Some("header_from"))
        .count();
    assert_eq!(rejected, cases.len() + 1);
}

#[tokio::test]
async fn owned_header_from_in_any_form_is_accepted() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let cases = [
        "From: Alice <Alice@Example.COM>",
        "From: =?UTF-8?Q?Alice_=C3=A9?= <alice+news@example.com>",
        "From: \"ceo@example.net\" <alice@example.com>",
        "From: Alice\r\n <alice@example.com>",
        "From: Me: alice@example.com;",
        "From: <alice@example.com>\r\nSender: <alice+bot@example.com>",
    ];
    for header in cases {
        let line = submit(&mut c, header).await;
        assert!(
            line.starts_with("250 2.0.0 Ok: queued as "),
            "{header:?}: {line}"
        );
    }
    server.wait_outbox(cases.len()).await;
}

#[tokio::test]
async fn date_and_message_id_are_added_only_when_missing() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    let bare = b"From: <alice@example.com>\r\nSubject: bare\r\n\r\nbody\r\n";
    let id = queued_id(&c.data(bare).await);
    let (received, rest) = split_received(&stored(&server, &id).await);
    assert_received(&received, &id, Some("bob@example.org"));
    let rest = String::from_utf8(rest).unwrap();
    let (added, original) = rest.split_at(rest.find("From:").unwrap());
    assert_eq!(original.as_bytes(), bare, "the message itself is untouched");
    let mut added = added.lines();
    let date = added.next().unwrap();
    assert!(
        date.starts_with("Date: ") && date.ends_with(" +0000"),
        "{date}"
    );
    assert_eq!(
        added.next(),
        Some(format!("Message-ID: <{id}@mail.test.example>").as_str())
    );
    assert_eq!(added.next(), None);

    // Both present: nothing but Received is added.
    let full = b"Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <x1@client.example>\r\nFrom: <alice@example.com>\r\n\r\nbody\r\n";
    c.envelope(ALICE, &["bob@example.org"]).await;
    let id = queued_id(&c.data(full).await);
    let (_, rest) = split_received(&stored(&server, &id).await);
    assert_eq!(rest, full);
}
