//! Submission duties on the message (RFC 6409 §8): header From and Sender
//! owned by the account, whatever the disguise; Date and Message-ID added
//! when missing; the Received header of DESIGN.md.

use crate::common::client::Client;
use crate::common::{
    ALICE, BULK_POLICY, TestServer, assert_outbox_stays, queued_id, split_received, stored,
};
use crate::submission::assert_received;
use mailwarden::accounts::Origin;

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
        // A name that is another address, even with the owned mailbox.
        (
            "From: \"ceo@example.net\" <alice@example.com>",
            "ceo@example.net",
        ),
        // A group, even of owned addresses only.
        ("From: Me: alice@example.com;", ""),
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
        "From: \"Alice Example\" <alice@example.com>",
        "From: Alice\r\n <alice@example.com>",
        "From: alice@example.com <alice@example.com>",
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

/// What a header variant should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The exact 550 with this address in it.
    Refused(&'static str),
    Accepted,
}
use Expect::{Accepted, Refused};

/// Issue 19, finding 2: header From (and Sender, and the topmost Resent-*
/// block) whose display name, comments, encoded words, groups or repeated
/// fields make a mail reader show another address than the one owned.
/// Sent by alice (alias sales@example.com) through the implicit-TLS
/// listener; every row is checked, then the totals are compared.
const VARIANTS: &[(&str, Expect)] = &[
    // Display names that are, or hold, another address.
    (
        "From: bob@example.com <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"bob@example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"BOB@Example.COM\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"Bob <bob@example.com>\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"Bob Smith bob@example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"bob@example.com via Alice\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"alice@example.com, bob@example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"bob@example.com\"\r\n <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: Bob <bob@example.com> <alice@example.com>",
        Refused(""),
    ),
    // Another owned address is still another address.
    (
        "From: \"sales@example.com\" <alice@example.com>",
        Refused("sales@example.com"),
    ),
    // Look-alike at-signs: U+FF20 FULLWIDTH and U+FE6B SMALL COMMERCIAL AT.
    (
        "From: \"bob\u{ff20}example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: bob\u{fe6b}example.com <alice@example.com>",
        Refused("bob@example.com"),
    ),
    // Encoded words: Q, B, inside quotes, glued to text, in a comment.
    (
        "From: =?UTF-8?Q?bob=40example.com?= <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: =?UTF-8?B?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"=?UTF-8?Q?bob=40example.com?=\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: Bob=?UTF-8?Q?=40example.com?= <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: =?UTF-8?Q?bob=EF=BC=A0example.com?= <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: Bob (=?UTF-8?Q?bob=40example.com?=) <alice@example.com>",
        Refused("bob@example.com"),
    ),
    // A good encoded word inside a broken one; UTF-7.
    (
        "From: =?UTF-8?B?!!!! =?UTF-8?B?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: =?UTF-7?Q?bob+AEA-example.com?= <alice@example.com>",
        Refused("bob@example.com"),
    ),
    // In single quotes, as some clients write a name.
    (
        "From: 'bob@example.com' <alice@example.com>",
        Refused("bob@example.com"),
    ),
    // Spaces around the at-sign, a quoted at-sign.
    (
        "From: \"bob @ example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: \"bob\\@example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    // Comments.
    (
        "From: (bob@example.com) <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: alice@example.com (bob@example.com)",
        Refused("bob@example.com"),
    ),
    // More than one mailbox, even all owned; groups.
    (
        "From: <alice@example.com>, <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>, <sales@example.com>",
        Refused("sales@example.com"),
    ),
    ("From: Smith, Alice <alice@example.com>", Refused("")),
    ("From: Team: alice@example.com;", Refused("")),
    (
        "From: Team: alice@example.com, bob@example.com;",
        Refused("bob@example.com"),
    ),
    ("From: Undisclosed recipients:;", Refused("")),
    // Two From fields, however spelled; lines readers split differently.
    (
        "From: <alice@example.com>\r\nFrom: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <bob@example.com>\r\nFrom: <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nFROM : <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nFr om: <bob@example.com>",
        Refused(""),
    ),
    (
        "From: <alice@example.com>\r\n \r\nFrom: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\n: From: <bob@example.com>",
        Refused(""),
    ),
    (
        "From: <alice@example.com>\r\nno colon\r\n From: <bob@example.com>",
        Refused(""),
    ),
    // Sender: owned, one field, one mailbox, a clean name.
    (
        "From: <alice@example.com>\r\nSender: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "Sender: <alice@example.com>\r\nFrom: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nSender: \"bob@example.com\" <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nSender: <alice@example.com>\r\nSender: <sales@example.com>",
        Refused("sales@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nSender: <alice@example.com>, <bob@example.com>",
        Refused("bob@example.com"),
    ),
    // The topmost Resent-* block.
    (
        "From: <alice@example.com>\r\nResent-From: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "Resent-From: bob@example.com <alice@example.com>\r\nFrom: <alice@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nResent-From: <alice@example.com>\r\nResent-Sender: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nResent-From: <alice@example.com>\r\nResent-From: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    (
        "From: <alice@example.com>\r\nResent-Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nX-Note: x\r\nResent-From: <bob@example.com>",
        Refused("bob@example.com"),
    ),
    // No usable mailbox at all.
    ("X-Note: no from", Refused("")),
    ("From: =?UTF-8?Q?alice=40example.com?=", Refused("")),
    ("From: Bob <=?UTF-8?Q?bob=40example.com?=>", Refused("")),
    // Legitimate forms stay accepted.
    ("From: <alice@example.com>", Accepted),
    ("From: alice@example.com", Accepted),
    ("From: Alice <Alice@Example.COM>", Accepted),
    ("From: \"Alice Smith\" <alice@example.com>", Accepted),
    ("From: \"Smith, Alice\" <alice@example.com>", Accepted),
    (
        "From: \"O'Brien, Alice (at home)\" <alice@example.com>",
        Accepted,
    ),
    ("From: alice@example.com (Alice Smith)", Accepted),
    (
        "From: =?UTF-8?Q?Alice_Sm=C3=AFth?= <alice@example.com>",
        Accepted,
    ),
    (
        "From: =?UTF-8?B?QWxpY2UgU21pdGg=?= <alice@example.com>",
        Accepted,
    ),
    (
        "From: =?ISO-8859-1?Q?Alice_M=FCller?= <alice@example.com>",
        Accepted,
    ),
    ("From: alice@example.com <alice@example.com>", Accepted),
    ("From: \"Alice@Example.COM\" <alice@example.com>", Accepted),
    ("From: Alice\r\n <alice+news@example.com>", Accepted),
    ("From: Sales <sales@example.com>", Accepted),
    (
        "From: <alice@example.com>\r\nSender: <sales@example.com>",
        Accepted,
    ),
    (
        "From: Sales <sales@example.com>\r\nSender: Alice <alice@example.com>",
        Accepted,
    ),
    (
        "From: <alice@example.com>\r\nResent-From: Sales <sales@example.com>\r\nResent-Date: Sat, 28 Nov 2026 08:00:00 +0000",
        Accepted,
    ),
    ("From: \"Alice (@alice)\" <alice@example.com>", Accepted),
    ("From: 'alice@example.com' <alice@example.com>", Accepted),
    (
        "From: =?UTF-8?Q?Alice_=3D_Smith?= <alice@example.com>",
        Accepted,
    ),
    // Only the topmost block is the account's; an older one is history.
    (
        "From: <alice@example.com>\r\nResent-From: <alice@example.com>\r\nResent-Sender: <sales@example.com>\r\nX-Note: older block below\r\nResent-From: <bob@example.com>\r\nResent-Sender: <bob@example.com>",
        Accepted,
    ),
];

#[tokio::test]
async fn header_from_variants_through_the_listener() {
    let server = TestServer::with_alice(BULK_POLICY).await;
    server
        .accounts()
        .alias_add(ALICE, "sales@example.com", &Origin::ADMIN)
        .await
        .expect("alias added");
    let mut c = server.alice().await;
    let (mut spoofs, mut spoofs_accepted, mut legit, mut legit_refused) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for &(header, expect) in VARIANTS {
        let line = submit(&mut c, header).await;
        let accepted = line.starts_with("250 2.0.0 Ok: queued as ");
        match expect {
            Refused(shown) => {
                spoofs += 1;
                spoofs_accepted += usize::from(accepted);
                if line != not_owned(shown) {
                    wrong.push(format!("{header:?}: {line}"));
                }
            }
            Accepted => {
                legit += 1;
                legit_refused += usize::from(!accepted);
                if !accepted {
                    wrong.push(format!("{header:?}: {line}"));
                }
            }
        }
    }
    println!(
        "spoofs accepted: {spoofs_accepted} of {spoofs}; legitimate refused: {legit_refused} of {legit}"
    );
    assert!(
        wrong.is_empty(),
        "spoofs accepted: {spoofs_accepted} of {spoofs}; legitimate refused: {legit_refused} of {legit}\n{}",
        wrong.join("\n")
    );
    server.wait_outbox(legit).await;
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
