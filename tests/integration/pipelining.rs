//! PIPELINING, CHUNKING, ESMTP parameters, and what DATA must never do:
//! end early on a smuggled terminator.

use crate::common::client::Client;
use crate::common::{ALICE, TestServer, assert_outbox_stays, queued_id, split_received, stored};

const HEAD: &str = "From: <alice@example.com>\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <p1@client.example>\r\n\r\n";

#[tokio::test]
async fn mail_rcpt_rcpt_data_in_one_packet() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    c.send_raw(
        b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@localhost>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await.line(), "250 2.1.0 Ok");
    assert_eq!(c.reply().await.line(), "250 2.1.5 Ok");
    // One refused recipient does not spoil the group.
    assert_eq!(
        c.reply().await.line(),
        "554 5.1.3 Recipient address <carol@localhost> must be fully qualified"
    );
    assert_eq!(c.reply().await.line(), "250 2.1.5 Ok");
    assert_eq!(c.reply().await.code, 354);
    c.send_raw(format!("{HEAD}pipelined\r\n.\r\nNOOP\r\n").as_bytes())
        .await;
    let id = queued_id(&c.reply().await);
    assert_eq!(c.reply().await.line(), "250 2.0.0 Ok");
    let (received, rest) = split_received(&stored(&server, &id).await);
    // Two recipients: no `for` clause.
    assert!(!received.contains(" for "), "{received}");
    assert_eq!(rest, format!("{HEAD}pipelined\r\n").as_bytes());
}

#[tokio::test]
async fn whole_transactions_pipelined_with_bdat() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let first = format!("{HEAD}chunk one, ");
    let second = "chunk two\r\nbare LF\nend";
    let mut packet = format!(
        "MAIL FROM:<alice@example.com> BODY=8BITMIME\r\nRCPT TO:<bob@example.org>\r\nBDAT {}\r\n{first}BDAT {} LAST\r\n{second}",
        first.len(),
        second.len()
    );
    // A second transaction in the same packet.
    let third = format!("{HEAD}second message\r\n");
    packet.push_str(&format!(
        "MAIL FROM:<>\r\nRCPT TO:<carol@example.org>\r\nBDAT {} LAST\r\n{third}QUIT\r\n",
        third.len()
    ));
    c.send_raw(packet.as_bytes()).await;
    assert_eq!(c.reply().await.line(), "250 2.1.0 Ok");
    assert_eq!(c.reply().await.line(), "250 2.1.5 Ok");
    assert_eq!(
        c.reply().await.line(),
        format!("250 2.0.0 {} octets received", first.len())
    );
    let id1 = queued_id(&c.reply().await);
    assert_eq!(c.reply().await.line(), "250 2.1.0 Ok");
    assert_eq!(c.reply().await.line(), "250 2.1.5 Ok");
    let id2 = queued_id(&c.reply().await);
    assert_eq!(c.reply().await.line(), "221 2.0.0 Bye");

    let (received, rest) = split_received(&stored(&server, &id1).await);
    assert!(received.contains(" for <bob@example.org>; "), "{received}");
    // Chunks joined, bare LF stored as CRLF.
    assert_eq!(
        rest,
        format!("{HEAD}chunk one, chunk two\r\nbare LF\r\nend").as_bytes()
    );
    let (_, rest) = split_received(&stored(&server, &id2).await);
    assert_eq!(rest, third.as_bytes());
}

#[tokio::test]
async fn a_refused_bdat_chunk_is_read_and_dropped() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    // Commands inside a refused chunk are data, never commands.
    let chunk = b"QUIT\r\nMAIL FROM:<alice@example.com>\r\n";
    assert_eq!(
        c.bdat(chunk, false).await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    c.envelope(ALICE, &[]).await;
    assert_eq!(
        c.bdat(chunk, true).await.line(),
        "554 5.5.1 No valid recipients"
    );
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    // Before AUTH too.
    let (mut anon, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    anon.ehlo().await;
    assert_eq!(
        anon.bdat(chunk, true).await.line(),
        "530 5.7.0 Authentication required"
    );
    assert_eq!(anon.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    assert_outbox_stays(&server, 0).await;
}

#[tokio::test]
async fn smuggled_terminators_do_not_end_data() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    // Sent raw: no dot-stuffing may hide the bare CR and LF sequences.
    let smuggled = concat!(
        "one\n.\nMAIL FROM:<alice@example.com>\r\n",
        "two\r.\r\nRCPT TO:<victim@example.net>\r\n",
        "three\n.\r\nDATA\r\n",
        "end\r\n",
    );
    let reply = c
        .data_raw(format!("{HEAD}{smuggled}.\r\n").as_bytes())
        .await;
    let id = queued_id(&reply);
    // Exactly one reply: nothing inside was run as a command.
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
    let (received, rest) = split_received(&stored(&server, &id).await);
    assert!(received.contains(" for <bob@example.org>; "), "{received}");
    let expected = concat!(
        "one\r\n.\r\nMAIL FROM:<alice@example.com>\r\n",
        "two\r\n.\r\nRCPT TO:<victim@example.net>\r\n",
        "three\r\n.\r\nDATA\r\n",
        "end\r\n",
    );
    assert_eq!(
        String::from_utf8(rest).unwrap(),
        format!("{HEAD}{expected}")
    );
    assert_outbox_stays(&server, 1).await;
}

#[tokio::test]
async fn esmtp_parameters_are_understood() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bx AUTH=<>")
            .await
            .line(),
        "250 2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org")
            .await
            .line(),
        "250 2.1.5 Ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<carol@example.org> NOTIFY=NEVER")
            .await
            .line(),
        "250 2.1.5 Ok"
    );
    let id = queued_id(&c.data(format!("{HEAD}params\r\n").as_bytes()).await);
    stored(&server, &id).await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> BODY=7BIT RET=FULL")
            .await
            .line(),
        "250 2.1.0 Ok"
    );
}
