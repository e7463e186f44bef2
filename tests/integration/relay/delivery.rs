//! The real server (in-process, ephemeral ports) delivering to the scripted
//! aiosmtpd relay.

use std::time::Duration;

use serde_json::json;

use super::{
    Received, Sink, SinkOptions, events_named, eventually, relay_certificate, relay_server,
    relay_toml, wait_queue_empty,
};
use crate::common::client::Client;
use crate::common::{ALICE, queued_id, split_received};

/// A message whose header the server leaves alone (Date and Message-ID are
/// there), with lines that need dot-stuffing.
fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: <bob@example.org>\r\nSubject: {subject}\r\n\
         Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\r\n\
         Hello.\r\n.\r\n..two dots\r\n.leading dot\r\n\r\n\ttab line   \r\nlast line\r\n"
    )
    .into_bytes()
}

async fn send(c: &mut Client, to: &[&str], subject: &str) -> String {
    let r = c.send_message(ALICE, to, &message(subject)).await;
    queued_id(&r)
}

/// MAIL/RCPT lines with parameters, then the message.
async fn send_with(c: &mut Client, mail: &str, rcpts: &[&str], body: &[u8]) -> String {
    let r = c.cmd(mail).await;
    assert_eq!(r.code, 250, "{mail}: {r:?}");
    for rcpt in rcpts {
        let r = c.cmd(rcpt).await;
        assert_eq!(r.code, 250, "{rcpt}: {r:?}");
    }
    queued_id(&c.data(body).await)
}

/// Every part's decoded text (base64 parts included).
fn decoded(m: &Received) -> String {
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.bytes)
        .expect("a parsable message");
    parsed
        .parts
        .iter()
        .map(|p| String::from_utf8_lossy(p.contents()).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn dsns(messages: &[Received]) -> Vec<&Received> {
    messages.iter().filter(|m| m.is_dsn()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_message_arrives_byte_for_byte_over_starttls_with_auth() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = relay_certificate(certs.path());
    let sink = Sink::start(SinkOptions {
        tls: "starttls",
        cert: Some((cert.clone(), key)),
        auth: Some("relayuser:relay secret"),
        ..Default::default()
    });
    let password_file = certs.path().join("relay.pass");
    std::fs::write(&password_file, "relay secret\n").unwrap();
    let (server, feedback) = relay_server(&relay_toml(
        sink.port,
        "",
        &format!(
            "tls = \"starttls\"\nusername = \"relayuser\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            password_file.display(),
            cert.display()
        ),
    ))
    .await;

    let mut c = server.alice().await;
    let id = send(&mut c, &["bob@example.org", "carol@example.net"], "first").await;
    let got = sink.wait_messages(1).await;
    let (received, rest) = split_received(&got[0].bytes);
    assert!(
        received.starts_with("Received: from client.test.example ("),
        "{received}"
    );
    assert_eq!(rest, message("first"), "relayed bytes differ");
    assert_eq!(got[0].from(), ALICE);
    assert_eq!(got[0].to(), ["bob@example.org", "carol@example.net"]);
    wait_queue_empty(&server).await;

    let success = server.wait_event("delivery.success").await;
    assert_eq!(success.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(success.account.as_deref(), Some(ALICE));
    assert_eq!(success.recipients, Some(2));
    assert_eq!(success.code, Some(250));
    eventually(|| feedback.calls() == [(ALICE.to_string(), 2, 0)]).await;
    assert_eq!(feedback.calls(), [(ALICE.to_string(), 2, 0)]);

    // Two more: the worker's connection is reused.
    send(&mut c, &["dave@example.org"], "second").await;
    send(&mut c, &["erin@example.org"], "third").await;
    let got = sink.wait_messages(3).await;
    let conns: Vec<&serde_json::Value> = got.iter().map(|m| &m.meta["conn"]).collect();
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "connections: {conns:?}"
    );
    assert_eq!(split_received(&got[2].bytes).1, message("third"));
    assert!(dsns(&got).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_relay() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = relay_certificate(certs.path());
    let sink = Sink::start(SinkOptions {
        tls: "implicit",
        cert: Some((cert.clone(), key)),
        ..Default::default()
    });
    let (server, _) = relay_server(&relay_toml(
        sink.port,
        "",
        &format!("tls = \"implicit\"\nca_file = \"{}\"\n", cert.display()),
    ))
    .await;
    let mut c = server.alice().await;
    send(&mut c, &["bob@example.org"], "implicit").await;
    let got = sink.wait_messages(1).await;
    assert_eq!(split_received(&got[0].bytes).1, message("implicit"));
    wait_queue_empty(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_certificate_is_verified_by_default() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = relay_certificate(certs.path());
    let sink = Sink::start(SinkOptions {
        tls: "starttls",
        cert: Some((cert, key)),
        ..Default::default()
    });
    // No ca_file: the self-signed certificate is not trusted.
    let (server, feedback) = relay_server(&relay_toml(sink.port, "", "tls = \"starttls\"\n")).await;
    let mut c = server.alice().await;
    let id = send(&mut c, &["bob@example.org"], "untrusted").await;
    let deferred = server.wait_event("delivery.deferred").await;
    assert_eq!(deferred.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(deferred.reason.as_deref(), Some("tls"));
    let entry = server
        .running()
        .store
        .queue_get(id.parse().unwrap())
        .unwrap();
    let entry = entry.expect("still queued");
    let reply = entry.rcpts[0].last_reply.clone().unwrap();
    assert!(reply.contains("certificate"), "{reply}");
    assert!(sink.messages().is_empty());
    assert!(feedback.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_451_is_retried_and_delivered() {
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^later@", "reply": "451 4.3.0 Try again later", "times": 1},
            {"when": "data", "match": "^slow@", "reply": "451 4.3.0 Not now", "times": 1},
        ])),
        ..Default::default()
    });
    let (server, feedback) = relay_server(&relay_toml(sink.port, "", "")).await;
    let mut c = server.alice().await;
    let first = send(&mut c, &["later@example.org"], "rcpt451").await;

    // The deferral is recorded per recipient, with the relay's reply.
    let deferred = server.wait_event("delivery.deferred").await;
    assert_eq!(deferred.message_id.as_deref(), Some(first.as_str()));
    assert_eq!(deferred.code, Some(451));
    assert_eq!(deferred.recipients, Some(1));
    let got = sink.wait_messages(1).await;
    assert_eq!(got[0].to(), ["later@example.org"]);

    let second = send(&mut c, &["slow@example.org"], "data451").await;
    let got = sink.wait_messages(2).await;
    assert_eq!(got[1].to(), ["slow@example.org"]);
    wait_queue_empty(&server).await;
    eventually(|| events_named(&server, "delivery.success").len() >= 2).await;

    let replies = sink.replies();
    assert!(
        replies.contains("RCPT later@example.org 451 4.3.0 Try again later"),
        "{replies}"
    );
    assert!(
        replies.contains("DATA slow@example.org 451 4.3.0 Not now"),
        "{replies}"
    );
    let deferred: Vec<_> = events_named(&server, "delivery.deferred")
        .into_iter()
        .filter_map(|e| e.message_id)
        .collect();
    assert_eq!(deferred, [first.clone(), second.clone()]);
    let succeeded: Vec<_> = events_named(&server, "delivery.success")
        .into_iter()
        .filter_map(|e| e.message_id)
        .collect();
    assert_eq!(succeeded, [first, second]);
    eventually(|| feedback.totals(ALICE) == (2, 0)).await;
    assert_eq!(feedback.totals(ALICE), (2, 0));
    assert_eq!(sink.messages().len(), 2, "delivered once each, no DSN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_gives_a_dsn_to_the_sender_and_a_bounce_signal() {
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^nobody@", "reply": "550 5.1.1 No such user here"},
        ])),
        ..Default::default()
    });
    let (server, feedback) = relay_server(&relay_toml(sink.port, "", "")).await;
    let mut c = server.alice().await;
    let id = send(&mut c, &["nobody@example.org"], "bounce").await;

    let got = sink.wait_messages(1).await;
    wait_queue_empty(&server).await;
    assert_eq!(got.len(), 1, "only the DSN arrives");
    let dsn = &got[0];
    assert!(dsn.is_dsn(), "null envelope sender: {:?}", dsn.meta);
    assert_eq!(dsn.to(), [ALICE]);
    let text = dsn.text();
    for needle in [
        "From: Mail Delivery System <postmaster@mail.test.example>\r\n",
        "To: <alice@example.com>\r\n",
        "Subject: Undelivered Mail Returned to Sender\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Content-Type: message/delivery-status\r\n",
        "Reporting-MTA: dns; mail.test.example\r\n",
        "Final-Recipient: rfc822; nobody@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n",
        "Remote-MTA: dns; localhost\r\n",
        "Diagnostic-Code: smtp; 550 5.1.1 No such user here\r\n",
        "Content-Type: text/rfc822-headers\r\n",
        "Subject: bounce\r\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    assert!(!text.contains("Hello."), "no RET: the header only");
    let parsed = mail_parser::MessageParser::default()
        .parse(&dsn.bytes)
        .unwrap();
    assert_eq!(parsed.parts.len(), 4, "multipart/report with three parts");

    let failed = server.wait_event("delivery.failed").await;
    assert_eq!(failed.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(failed.code, Some(550));
    assert_eq!(failed.recipients, Some(1));
    assert_eq!(failed.account.as_deref(), Some(ALICE));
    // The bounce reaches the scorer; the DSN's own delivery does not.
    eventually(|| feedback.calls() == [(ALICE.to_string(), 0, 1)]).await;
    assert_eq!(feedback.calls(), [(ALICE.to_string(), 0, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_result_delivers_some_and_bounces_others() {
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^nobody@", "reply": "550 5.1.1 No such user"},
            {"when": "rcpt", "match": "^later@", "reply": "451 4.2.1 Busy", "times": 1},
        ])),
        ..Default::default()
    });
    let (server, feedback) = relay_server(&relay_toml(sink.port, "", "")).await;
    let mut c = server.alice().await;
    send(
        &mut c,
        &["ok@example.org", "later@example.org", "nobody@example.org"],
        "mixed",
    )
    .await;
    sink.wait_messages(3).await;
    wait_queue_empty(&server).await;
    eventually(|| feedback.calls().len() >= 2).await;
    let got: Vec<Received> = sink.messages();
    assert_eq!(got.len(), 3, "{got:?}");
    let to_ok: Vec<_> = got
        .iter()
        .filter(|m| !m.is_dsn() && m.to().contains(&"ok@example.org".to_string()))
        .collect();
    assert_eq!(to_ok.len(), 1, "ok@ is never sent again");
    assert_eq!(to_ok[0].to(), ["ok@example.org"]);
    let later: Vec<_> = got
        .iter()
        .filter(|m| m.to() == ["later@example.org"])
        .collect();
    assert_eq!(later.len(), 1);
    assert_eq!(split_received(&later[0].bytes).1, message("mixed"));
    let dsn = dsns(&got);
    assert_eq!(dsn.len(), 1);
    let text = dsn[0].text();
    assert!(text.contains("Final-Recipient: rfc822; nobody@example.org"));
    assert!(!text.contains("Final-Recipient: rfc822; ok@"));
    assert!(!text.contains("Final-Recipient: rfc822; later@"));
    assert_eq!(
        feedback.calls(),
        [(ALICE.to_string(), 1, 1), (ALICE.to_string(), 1, 0)]
    );
    let replies = sink.replies();
    assert_eq!(
        replies.matches("RCPT ok@example.org").count(),
        1,
        "{replies}"
    );
    assert_eq!(replies.matches("RCPT nobody@example.org").count(), 1);
    assert_eq!(replies.matches("RCPT later@example.org").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsns_follow_notify_and_ret_and_never_go_to_the_null_sender() {
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^nobody", "reply": "550 5.1.1 No such user"},
        ])),
        ..Default::default()
    });
    let (server, feedback) = relay_server(&relay_toml(sink.port, "", "")).await;
    let mut c = server.alice().await;
    // RET=FULL, ENVID, NOTIFY=FAILURE, ORCPT: a full report.
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com> RET=FULL ENVID=env+3Done",
        &["RCPT TO:<nobody1@example.org> NOTIFY=FAILURE ORCPT=rfc822;Nobody1@Example.org"],
        &message("full"),
    )
    .await;
    // NOTIFY=NEVER: no report.
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com>",
        &["RCPT TO:<nobody2@example.org> NOTIFY=NEVER"],
        &message("never"),
    )
    .await;
    // The null sender: never a report.
    send_with(
        &mut c,
        "MAIL FROM:<>",
        &["RCPT TO:<nobody3@example.org>"],
        &message("null"),
    )
    .await;
    // NOTIFY=SUCCESS to a relay without DSN: "relayed".
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com>",
        &["RCPT TO:<ok@example.org> NOTIFY=SUCCESS,FAILURE"],
        &message("success"),
    )
    .await;
    sink.wait_messages(3).await;
    wait_queue_empty(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = sink.messages();
    assert_eq!(got_now.len(), 3, "ok@ and two reports: {got_now:?}");
    let reports = dsns(&got_now);
    assert_eq!(reports.len(), 2, "{reports:?}");
    let full = reports
        .iter()
        .find(|m| m.text().contains("nobody1"))
        .unwrap()
        .text();
    for needle in [
        "Original-Envelope-Id: env=one\r\n",
        "Original-Recipient: rfc822; Nobody1@Example.org\r\n",
        "Final-Recipient: rfc822; nobody1@example.org\r\n",
        "Content-Type: message/rfc822\r\n",
        "Subject: full\r\n",
        "..two dots\r\n",
    ] {
        assert!(full.contains(needle), "{needle:?} missing in\n{full}");
    }
    let relayed = reports
        .iter()
        .find(|m| m.text().contains("ok@example.org"))
        .unwrap()
        .text();
    assert!(relayed.contains("Subject: Successful Mail Delivery Report\r\n"));
    assert!(
        relayed.contains("Action: relayed\r\nStatus: 2.0.0\r\n"),
        "{relayed}"
    );
    assert!(!got_now.iter().any(|m| m.text().contains("nobody2")));
    assert!(!got_now.iter().any(|m| m.text().contains("nobody3")));
    eventually(|| feedback.totals(ALICE) == (1, 3)).await;
    assert_eq!(feedback.totals(ALICE), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_report_then_expiry_after_max_age() {
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^stuck@", "reply": "451 4.4.1 Mailbox busy"},
        ])),
        ..Default::default()
    });
    let (server, feedback) = relay_server(&relay_toml(
        sink.port,
        "max_age = \"3s\"\ndelay_warning = \"1s\"\n",
        "",
    ))
    .await;
    let mut c = server.alice().await;
    let id = send_with(
        &mut c,
        "MAIL FROM:<alice@example.com>",
        &["RCPT TO:<stuck@example.org> NOTIFY=DELAY,FAILURE"],
        &message("stuck"),
    )
    .await;
    sink.wait_messages(2).await;
    wait_queue_empty(&server).await;
    let got = sink.messages();
    assert_eq!(got.len(), 2, "one delayed report, one failure: {got:?}");
    let delayed = got[0].text();
    assert!(delayed.contains("Subject: Delayed Mail (still being retried)\r\n"));
    assert!(
        delayed.contains("Action: delayed\r\nStatus: 4.4.1\r\n"),
        "{delayed}"
    );
    assert!(delayed.contains("Will-Retry-Until: "));
    let failed = got[1].text();
    assert!(
        failed.contains("Action: failed\r\nStatus: 5.4.7\r\n"),
        "{failed}"
    );
    assert!(failed.contains("Diagnostic-Code: smtp; 451 4.4.1 Mailbox busy\r\n"));
    let event = server.wait_event("delivery.failed").await;
    assert_eq!(event.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(event.reason.as_deref(), Some("expired"));
    // Expiry is no bounce signal: the relay never refused the address.
    assert!(feedback.calls().is_empty(), "{:?}", feedback.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_smtputf8_or_8bitmime() {
    let sink = Sink::start(SinkOptions {
        no_smtputf8: true,
        no_8bitmime: true,
        ..Default::default()
    });
    let (server, feedback) = relay_server(&relay_toml(sink.port, "", "")).await;
    let mut c = server.alice().await;
    let plain = message("utf8-flag-only");
    let utf8_header = "From: <alice@example.com>\r\nSubject: Gr\u{fc}\u{df}e\r\n\
                       Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <u@example.com>\r\n\r\nhi\r\n";
    let eight_bit_body = "From: <alice@example.com>\r\nSubject: 8bit\r\n\
                          Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <e@example.com>\r\n\r\ncaf\u{e9}\r\n";
    // A non-ASCII recipient: 5.6.7.
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com> SMTPUTF8",
        &["RCPT TO:<j\u{f6}s\u{e9}@example.org>"],
        &plain,
    )
    .await;
    // UTF-8 in the header: 5.6.9.
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com> SMTPUTF8 BODY=8BITMIME",
        &["RCPT TO:<ok1@example.org>"],
        utf8_header.as_bytes(),
    )
    .await;
    // 8-bit body, no 8BITMIME at the relay: 5.6.3.
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com> BODY=8BITMIME",
        &["RCPT TO:<ok2@example.org>"],
        eight_bit_body.as_bytes(),
    )
    .await;
    // SMTPUTF8 asked for but not needed: delivered without it.
    send_with(
        &mut c,
        "MAIL FROM:<alice@example.com> SMTPUTF8",
        &["RCPT TO:<ok3@example.org>"],
        &plain,
    )
    .await;
    let got = sink.wait_messages(4).await;
    wait_queue_empty(&server).await;
    let delivered: Vec<_> = got.iter().filter(|m| !m.is_dsn()).collect();
    assert_eq!(delivered.len(), 1, "{got:?}");
    assert_eq!(delivered[0].to(), ["ok3@example.org"]);
    assert!(
        !delivered[0].meta["mail_options"]
            .to_string()
            .contains("SMTPUTF8")
    );
    for r in dsns(&got) {
        assert!(r.text().is_ascii(), "reports stay 7-bit: {}", r.text());
    }
    let reports: Vec<String> = dsns(&got).iter().map(|m| decoded(m)).collect();
    assert_eq!(reports.len(), 3);
    for (status, needle) in [
        ("5.6.7", "SMTPUTF8"),
        ("5.6.9", "UTF-8 header"),
        ("5.6.3", "8BITMIME"),
    ] {
        assert!(
            reports
                .iter()
                .any(|r| r.contains(&format!("Status: {status}\r\n")) && r.contains(needle)),
            "no {status} report in {reports:#?}"
        );
    }
    // Our own refusals are no bounce signal.
    eventually(|| feedback.totals(ALICE) == (1, 0)).await;
    assert_eq!(feedback.totals(ALICE), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_cli_shows_each_recipients_state() {
    let sink = Sink::start(SinkOptions {
        rules: Some(json!([
            {"when": "rcpt", "match": "^stuck@", "reply": "451 4.3.0 Try again later"},
            {"when": "rcpt", "match": "^nobody@", "reply": "550 5.1.1 No such user"},
        ])),
        ..Default::default()
    });
    let (server, _) = relay_server(&relay_toml(sink.port, "retry_schedule = [\"1h\"]\n", "")).await;
    let mut c = server.alice().await;
    let id = send(
        &mut c,
        &["ok@example.org", "stuck@example.org", "nobody@example.org"],
        "cli",
    )
    .await;
    server.wait_event("delivery.deferred").await;
    let config = server.config_path();
    let config = config.to_str().unwrap();
    let (ok, listed, err) = tokio::task::block_in_place(|| {
        crate::common::run_cli(&["--config", config, "queue", "list"], "")
    });
    assert!(ok, "{err}");
    assert!(listed.contains(&id), "{listed}");
    assert!(
        listed.contains(
            "    ok@example.org  delivered  1 attempts  last reply: 250 2.0.0 Ok: queued as"
        ),
        "{listed}"
    );
    assert!(
        listed.contains(
            "    nobody@example.org  bounced  1 attempts  last reply: 550 5.1.1 No such user"
        ),
        "{listed}"
    );
    let stuck = listed
        .lines()
        .find(|l| l.contains("stuck@example.org  pending  1 attempts  next try 20"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        stuck.ends_with("last reply: 451 4.3.0 Try again later"),
        "{stuck}"
    );
    let (ok, shown, err) = tokio::task::block_in_place(|| {
        crate::common::run_cli(&["--config", config, "--json", "queue", "show", &id], "")
    });
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let d = &shown["deliveries"];
    assert_eq!(d[0]["status"], "delivered");
    assert_eq!(d[1]["status"], "pending");
    assert_eq!(d[1]["attempts"], 1);
    assert_eq!(d[1]["last_reply"], "451 4.3.0 Try again later");
    let next = d[1]["next_attempt"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        next > now + 3000,
        "next try in about an hour: {next} vs {now}"
    );
    assert_eq!(d[2]["status"], "bounced");
    assert!(d[2]["next_attempt"].is_null());
    assert_eq!(shown["attempts"], 1);
}
