//! Delivery status notifications (RFC 3464): a multipart/report to the
//! envelope sender, from `postmaster@<hostname>` with a null envelope sender,
//! queued through the same spool as any message.
//!
//! What is reported follows the recipient's NOTIFY (RFC 3461): none for
//! NEVER; failures by default or with FAILURE; "delayed" only with DELAY;
//! success only with SUCCESS and only when the next hop did not take the
//! request on itself ("relayed"). RET=FULL returns the whole message,
//! anything else only its header. Never a report to the null sender.

use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smtp_proto::{
    MAIL_BODY_8BITMIME, MAIL_RET_FULL, MAIL_SMTPUTF8, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE,
    RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

use super::transport::{Diagnostic, has_8bit, header_section};
use crate::clock::rfc5322_date;
use crate::spool::{Envelope, QueueEntry, QueueId, Recipient};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    /// Handed to a next hop that will not report on it.
    Relayed,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Delayed => "delayed",
            Self::Relayed => "relayed",
        }
    }
}

/// One recipient's line in a report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Index into the envelope's recipients.
    pub index: usize,
    pub action: Action,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// What the next hop said (its `remote_mta` fills `Remote-MTA`).
    pub diagnostic: Diagnostic,
}

/// Whether the sender asked to hear about `action` for this recipient.
pub fn wanted(envelope: &Envelope, recipient: &Recipient, action: Action) -> bool {
    if envelope.from.is_empty() || recipient.notify & RCPT_NOTIFY_NEVER != 0 {
        return false;
    }
    match action {
        // No NOTIFY: failures only (RFC 3461 §4.1 leaves DELAY to us).
        Action::Failed => recipient.notify == 0 || recipient.notify & RCPT_NOTIFY_FAILURE != 0,
        Action::Delayed => recipient.notify & RCPT_NOTIFY_DELAY != 0,
        Action::Relayed => recipient.notify & RCPT_NOTIFY_SUCCESS != 0,
    }
}

/// Builds the report about `original` and the envelope to queue it with.
/// `retry_until` is given for delayed recipients.
pub fn build(
    hostname: &str,
    id: QueueId,
    original: &QueueEntry,
    body: &[u8],
    reports: &[Report],
    now: SystemTime,
    retry_until: Option<u64>,
) -> (Envelope, Vec<u8>) {
    let env = &original.envelope;
    let postmaster = format!("postmaster@{hostname}");
    let failed = reports.iter().any(|r| r.action == Action::Failed);
    let delayed = reports.iter().any(|r| r.action == Action::Delayed);
    let subject = if failed {
        "Undelivered Mail Returned to Sender"
    } else if delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };
    let full = env.mail_flags & MAIL_RET_FULL != 0;
    let date = |unix: u64| rfc5322_date(UNIX_EPOCH + Duration::from_secs(unix));

    // Part 1: for people.
    let mut text = format!("This is the mail system at host {hostname}.\r\n\r\n");
    let returned = if full {
        "It is attached below."
    } else {
        "Its header is attached below."
    };
    for (action, intro) in [
        (
            Action::Failed,
            format!("Your message could not be delivered to the recipients below. {returned}\r\n"),
        ),
        (
            Action::Delayed,
            format!(
                "Your message has not been delivered yet to the recipients below. It will be \
                 retried{}; you do not need to send it again.\r\n",
                retry_until
                    .map(|t| format!(" until {}", date(t)))
                    .unwrap_or_default()
            ),
        ),
        (
            Action::Relayed,
            "Your message was passed on to the recipients below by a server that does not \
             send delivery reports; this is the last report about them.\r\n"
                .to_string(),
        ),
    ] {
        let lines: Vec<String> = reports
            .iter()
            .filter(|r| r.action == action)
            .map(|r| {
                let via = r
                    .diagnostic
                    .remote_mta
                    .as_ref()
                    .map(|h| format!(" (said {h})"))
                    .unwrap_or_default();
                format!(
                    "  <{}>: {}{via}\r\n",
                    env.recipients[r.index].address,
                    r.diagnostic.line()
                )
            })
            .collect();
        if !lines.is_empty() {
            text.push_str(&intro);
            text.push_str("\r\n");
            for l in lines {
                text.push_str(&l);
            }
            text.push_str("\r\n");
        }
    }

    // Part 2: for programs.
    let mut status = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(envid) = &env.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", field(envid)));
    }
    status.push_str(&format!("Arrival-Date: {}\r\n", date(env.received_at)));
    let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    for r in reports {
        let rcpt = &env.recipients[r.index];
        status.push_str("\r\n");
        if let Some(orcpt) = &rcpt.orcpt {
            status.push_str(&format!("Original-Recipient: {}\r\n", address_field(orcpt)));
        }
        status.push_str(&format!(
            "Final-Recipient: {}\r\nAction: {}\r\nStatus: {}\r\n",
            address_field(&rcpt.address),
            r.action.word(),
            r.status
        ));
        if let Some(host) = &r.diagnostic.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {host}\r\n"));
        }
        if r.diagnostic.is_remote() {
            status.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                r.diagnostic.line()
            ));
        }
        status.push_str(&format!("Last-Attempt-Date: {}\r\n", date(now_unix)));
        if r.action == Action::Delayed
            && let Some(until) = retry_until
        {
            status.push_str(&format!("Will-Retry-Until: {}\r\n", date(until)));
        }
    }
    // RFC 6533: UTF-8 addresses need the "global" type.
    let status_type = if status.is_ascii() {
        "message/delivery-status"
    } else {
        "message/global-delivery-status"
    };

    // Part 3: the message, or its header. 8-bit content goes as
    // message/global (RFC 6532), base64-encoded, so the report itself stays
    // 7-bit and passes any relay.
    let returned = if full { body } else { header_section(body) };
    let kind = match (full, has_8bit(returned)) {
        (true, false) => "message/rfc822",
        (true, true) => "message/global",
        (false, false) => "text/rfc822-headers",
        (false, true) => "message/global-headers",
    };
    let boundary = boundary(
        format!("{id}/{hostname}"),
        &[text.as_bytes(), status.as_bytes(), returned],
    );

    // Every part below is 7-bit (8-bit ones are base64-encoded): only a
    // non-ASCII sender address in `To:` makes the report need SMTPUTF8.
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <{postmaster}>\r\nTo: <{}>\r\nSubject: {subject}\r\n\
         Date: {}\r\nMessage-ID: <{id}.dsn@{hostname}>\r\nAuto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n",
        env.from,
        rfc5322_date(now),
    ));

    m.push_str(&part(
        &boundary,
        "Notification",
        "text/plain; charset=utf-8",
        text.as_bytes(),
    ));
    m.push_str(&part(
        &boundary,
        "Delivery report",
        status_type,
        status.as_bytes(),
    ));
    m.push_str(&part(&boundary, "Undelivered message", kind, returned));
    m.push_str(&format!("--{boundary}--\r\n"));
    let out = m.into_bytes();

    let mut flags = 0;
    if has_8bit(&out) {
        flags |= MAIL_BODY_8BITMIME;
    }
    if !env.from.is_ascii() {
        flags |= MAIL_SMTPUTF8;
    }
    let envelope = Envelope {
        from: String::new(),
        recipients: vec![Recipient {
            address: env.from.clone(),
            orcpt: None,
            notify: 0,
        }],
        account: postmaster,
        client_ip: Ipv6Addr::LOCALHOST.into(),
        received_at: now_unix,
        size: out.len() as u64,
        mail_flags: flags,
        envid: None,
    };
    (envelope, out)
}

/// The MIME boundary: `base`, unless a part's content holds it (the
/// returned message may hold any line, and RFC 2046 §5.1.1 forbids the
/// delimiter inside a part); then `base` and a digest of the contents,
/// which they cannot hold in turn.
fn boundary(base: String, contents: &[&[u8]]) -> String {
    let holds = |b: &str| {
        contents
            .iter()
            .any(|c| memchr::memmem::find(c, b.as_bytes()).is_some())
    };
    if !holds(&base) {
        return base;
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for c in contents {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c);
    }
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{base}/{hex}")
}

/// One body part, base64-encoded when it has 8-bit content.
fn part(boundary: &str, description: &str, kind: &str, content: &[u8]) -> String {
    use base64::Engine;
    let mut out =
        format!("--{boundary}\r\nContent-Description: {description}\r\nContent-Type: {kind}\r\n");
    if has_8bit(content) {
        out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        for line in encoded.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push_str("\r\n");
        }
    } else {
        out.push_str("\r\n");
        out.push_str(std::str::from_utf8(content).unwrap_or_default());
        if !content.ends_with(b"\r\n") {
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out
}

/// `rfc822; bob@example.org`, or `utf-8; ...` for a non-ASCII address
/// (RFC 6533).
fn address_field(address: &str) -> String {
    if address.is_ascii() {
        format!("rfc822; {}", field(address))
    } else {
        format!("utf-8; {}", field(address))
    }
}

/// A value safe on one header line.
fn field(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::QueueState;

    fn entry(notify: u64, flags: u64) -> QueueEntry {
        QueueEntry {
            state: QueueState::Queued,
            ..QueueEntry::new(
                QueueId(1),
                Envelope {
                    from: "alice@example.com".into(),
                    recipients: vec![
                        Recipient {
                            address: "bob@example.org".into(),
                            orcpt: Some("Bob@Example.org".into()),
                            notify,
                        },
                        Recipient {
                            address: "carol@example.org".into(),
                            orcpt: None,
                            notify,
                        },
                    ],
                    account: "alice@example.com".into(),
                    client_ip: Ipv6Addr::LOCALHOST.into(),
                    received_at: 1_795_852_800,
                    size: 10,
                    mail_flags: flags,
                    envid: Some("env-1".into()),
                },
            )
        }
    }

    const BODY: &[u8] = b"From: <alice@example.com>\r\nSubject: hi\r\n\r\nsecret body\r\n";

    #[test]
    fn failure_report_has_the_three_parts() {
        let e = entry(0, 0);
        let report = Report {
            index: 0,
            action: Action::Failed,
            status: "5.1.1".into(),
            diagnostic: Diagnostic::reply(550, [5, 1, 1], "No such user")
                .from_host("relay.example.net"),
        };
        let (env, bytes) = build(
            "mail.example.com",
            QueueId(2),
            &e,
            BODY,
            &[report],
            UNIX_EPOCH + Duration::from_secs(1_795_852_900),
            None,
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(env.from, "");
        assert_eq!(env.recipients[0].address, "alice@example.com");
        assert_eq!(env.account, "postmaster@mail.example.com");
        for needle in [
            "From: Mail Delivery System <postmaster@mail.example.com>\r\n",
            "To: <alice@example.com>\r\n",
            "Subject: Undelivered Mail Returned to Sender\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Content-Type: message/delivery-status\r\n",
            "Reporting-MTA: dns; mail.example.com\r\n",
            "Original-Envelope-Id: env-1\r\n",
            "Original-Recipient: rfc822; Bob@Example.org\r\n",
            "Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n",
            "Remote-MTA: dns; relay.example.net\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nFrom: <alice@example.com>\r\nSubject: hi\r\n",
            "<bob@example.org>: 550 5.1.1 No such user (said relay.example.net)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        assert!(!text.contains("secret body"), "RET default is headers only");
        assert!(!text.contains("carol"), "only reported recipients appear");
        assert!(text.ends_with("--0000000000000002/mail.example.com--\r\n"));
        assert!(
            mail_parser::MessageParser::default()
                .parse(text.as_bytes())
                .is_some()
        );
    }

    #[test]
    fn a_returned_message_holding_the_boundary_gets_another_one() {
        let e = entry(0, MAIL_RET_FULL);
        let forged = "From: <alice@example.com>\r\n\r\nhi\r\n\
            --0000000000000002/mail.example.com\r\nContent-Type: text/plain\r\n\r\n\
            forged part\r\n--0000000000000002/mail.example.com--\r\n";
        let report = Report {
            index: 0,
            action: Action::Failed,
            status: "5.1.1".into(),
            diagnostic: Diagnostic::reply(550, [5, 1, 1], "No such user"),
        };
        let (_, bytes) = build(
            "mail.example.com",
            QueueId(2),
            &e,
            forged.as_bytes(),
            &[report],
            UNIX_EPOCH + Duration::from_secs(1_795_852_900),
            None,
        );
        let text = String::from_utf8(bytes).unwrap();
        let boundary = text
            .split_once("boundary=\"0000000000000002/mail.example.com/")
            .and_then(|(_, rest)| rest.split_once('"'))
            .expect("a longer boundary")
            .0;
        let delimiter = format!("\r\n--0000000000000002/mail.example.com/{boundary}");
        assert_eq!(
            text.matches(&delimiter).count(),
            4,
            "three parts and the close"
        );
        assert!(text.contains(forged), "the message is returned as it was");
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(parsed.parts.len(), 4, "the report and its three parts");
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let e = entry(0, MAIL_RET_FULL);
        let report = Report {
            index: 1,
            action: Action::Failed,
            status: "5.4.7".into(),
            diagnostic: Diagnostic::local("expired", "delivery time expired"),
        };
        let (_, bytes) = build(
            "h",
            QueueId(3),
            &e,
            BODY,
            &[report],
            SystemTime::now(),
            None,
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nFrom: <alice@example.com>"));
        assert!(text.contains("secret body"));
        assert!(
            !text.contains("Diagnostic-Code"),
            "no remote reply, no code"
        );
        assert!(text.contains("Status: 5.4.7"));
    }

    #[test]
    fn eight_bit_content_is_base64_so_the_report_stays_7bit() {
        let mut e = entry(0, MAIL_SMTPUTF8);
        e.envelope.recipients[0].address = "j\u{f6}s\u{e9}@example.org".into();
        let body = "From: <alice@example.com>\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nhi\r\n";
        let report = Report {
            index: 0,
            action: Action::Failed,
            status: "5.6.7".into(),
            diagnostic: Diagnostic::local_status("smtputf8", [5, 6, 7], "no SMTPUTF8"),
        };
        let (env, bytes) = build(
            "h",
            QueueId(4),
            &e,
            body.as_bytes(),
            &[report],
            SystemTime::now(),
            None,
        );
        assert!(!has_8bit(&bytes));
        assert_eq!(env.mail_flags, 0);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(text.contains("Content-Type: message/global-headers\r\n"));
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        let status = parsed
            .parts
            .iter()
            .find_map(|p| {
                let text = String::from_utf8_lossy(p.contents());
                text.contains("Final-Recipient").then(|| text.into_owned())
            })
            .expect("a decoded status part");
        assert!(
            status.contains("Final-Recipient: utf-8; j\u{f6}s\u{e9}@example.org"),
            "{status}"
        );
    }

    #[test]
    fn notify_decides_what_is_reported() {
        let e = entry(0, 0);
        let r = |notify| Recipient {
            address: "x@y.z".into(),
            orcpt: None,
            notify,
        };
        let env = &e.envelope;
        assert!(wanted(env, &r(0), Action::Failed));
        assert!(!wanted(env, &r(0), Action::Delayed));
        assert!(!wanted(env, &r(0), Action::Relayed));
        assert!(!wanted(env, &r(RCPT_NOTIFY_NEVER), Action::Failed));
        assert!(!wanted(env, &r(RCPT_NOTIFY_SUCCESS), Action::Failed));
        assert!(wanted(env, &r(RCPT_NOTIFY_SUCCESS), Action::Relayed));
        assert!(wanted(
            env,
            &r(RCPT_NOTIFY_DELAY | RCPT_NOTIFY_FAILURE),
            Action::Delayed
        ));
        let mut null = env.clone();
        null.from.clear();
        assert!(!wanted(&null, &r(RCPT_NOTIFY_FAILURE), Action::Failed));
    }
}
