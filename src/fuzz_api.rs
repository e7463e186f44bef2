//! Entry points for the coverage-guided fuzz targets (fuzz/, see
//! fuzz/README.md) and for the test that replays their seeds and crash
//! regressions (tests/integration/fuzz_corpus.rs). Each takes raw bytes,
//! runs the code the server runs on the same input from a client, a next
//! hop or a config file, and panics only on a bug: a parser's panic, or an
//! invariant asserted here (a reply stays one line, a report keeps its
//! MIME structure, decoding round-trips).
//!
//! Compiled only with the `fuzzing` feature (or `testing`, for the test),
//! so a release build has none of it. It calls into smtp, delivery and
//! config, so it sits in the assembly layer.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use smtp_proto::Request;

use crate::address;
use crate::config::{Config, ConfigSource};
use crate::delivery::dsn::{self, Action, Report};
use crate::delivery::transport::Diagnostic;
use crate::smtp::headers;
use crate::smtp::reply::{self, Reply};
use crate::smtp::sasl;
use crate::smtp::session::{names_postmaster, parse_command, takes_long_line};
use crate::spool::{Envelope, QueueEntry, QueueId, Recipient};

/// A fuzz target: panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name: the fuzz crate's binaries and the folders under
/// fuzz/seeds/ and fuzz/regressions/ use these names.
pub const TARGETS: &[(&str, Target)] = &[
    ("smtp_command", smtp_command),
    ("sasl", sasl),
    ("headers", headers),
    ("dsn", dsn),
    ("config", config),
];

/// The account whose mail the header and command targets check.
const ACCOUNT: &str = "alice@example.com";
const HOSTNAME: &str = "mail.example.com";

fn aliases() -> Vec<String> {
    vec![
        "sales@example.com".to_string(),
        "a@xn--mnchen-3ya.de".to_string(),
    ]
}

/// A reply goes out as exactly one line, whatever the client sent.
fn assert_one_line(r: &Reply) {
    let mut out = Vec::new();
    r.write_to(&mut out);
    let body = &out[..out.len() - 2];
    assert!(
        out.ends_with(b"\r\n") && !body.contains(&b'\r') && !body.contains(&b'\n'),
        "reply is not one line: {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// One command line (CRLF included, as the connection hands it over):
/// parsed as the session parses it, and the addresses it names normalised
/// and echoed as the session would.
pub fn smtp_command(line: &[u8]) {
    let _ = takes_long_line(line);
    let _ = names_postmaster(line);
    let request = match parse_command(line) {
        Ok(request) => request,
        Err(r) => return assert_one_line(&r),
    };
    let aliases = aliases();
    let check = |raw: &str, not_qualified: fn(&str) -> Reply| {
        assert_one_line(&not_qualified(raw));
        assert_one_line(&reply::non_ascii_address(raw));
        if let Ok(a) = address::normalize(raw)
            && address::is_fully_qualified(&a)
            && !address::owns(ACCOUNT, &aliases, &a)
        {
            assert_one_line(&reply::sender_not_owned(raw));
        }
    };
    match request {
        Request::Mail { from } => {
            check(&from.address, reply::sender_not_qualified);
        }
        Request::Rcpt { to } => {
            check(&to.address, reply::recipient_not_qualified);
        }
        Request::Ehlo { host } | Request::Helo { host } => {
            let _ = address::normalize_domain(&host);
        }
        _ => {}
    }
}

/// An AUTH PLAIN response or a LOGIN username/password line (the text
/// after the command, as the session hands it to sasl.rs). What decodes
/// re-encodes to the same fields.
pub fn sasl(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sasl::decode_base64_text(text);
    if let Ok(creds) = sasl::decode_plain(text) {
        assert!(!creds.authcid.is_empty() && !creds.password.is_empty());
        let joined = format!("{}\0{}\0{}", creds.authzid, creds.authcid, creds.password);
        use base64::Engine;
        let again = base64::engine::general_purpose::STANDARD.encode(joined);
        assert_eq!(sasl::decode_plain(&again), Ok(creds));
    }
}

/// A message as the client sent it, checked against an account with
/// aliases; a refusal's address goes out in a one-line reply.
pub fn headers(message: &[u8]) {
    let aliases = aliases();
    if let Err(not_owned) = headers::inspect(message, |a| address::owns(ACCOUNT, &aliases, a)) {
        assert_one_line(&reply::header_from_not_owned(&not_owned.0));
    }
}

/// Line 1: a MAIL command (RET, ENVID), line 2: a RCPT command (NOTIFY,
/// ORCPT), line 3: the next hop's reply, then the message. The envelope is
/// built as the session builds it, and the report as delivery builds it;
/// the report must keep its MIME structure: exactly three parts and one
/// close delimiter, whatever the message and the parameters hold.
pub fn dsn(data: &[u8]) {
    let mut rest = data;
    let mut line = || {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (l, r) = rest.split_at(end);
        rest = r;
        let mut l = l.strip_suffix(b"\n").unwrap_or(l);
        l = l.strip_suffix(b"\r").unwrap_or(l);
        [l, b"\r\n"].concat()
    };
    let (mail, rcpt, answer) = (line(), line(), line());
    let body = rest;
    let Ok(Request::Mail { from }) = parse_command(&mail) else {
        return;
    };
    let Ok(Request::Rcpt { to }) = parse_command(&rcpt) else {
        return;
    };
    let answer = String::from_utf8_lossy(&answer[..answer.len() - 2]).into_owned();
    let code: u16 = answer.get(..3).and_then(|c| c.parse().ok()).unwrap_or(550);
    let action = match code {
        200..=399 => Action::Relayed,
        400..=499 => Action::Delayed,
        _ => Action::Failed,
    };
    let envelope = Envelope {
        from: address::normalize(&from.address).unwrap_or(from.address),
        recipients: vec![Recipient {
            address: address::normalize(&to.address).unwrap_or(to.address),
            orcpt: to.orcpt,
            notify: to.flags,
        }],
        account: ACCOUNT.to_string(),
        client_ip: std::net::Ipv6Addr::LOCALHOST.into(),
        received_at: 1_795_852_800,
        size: body.len() as u64,
        mail_flags: from.flags,
        envid: from.env_id,
    };
    let _ = dsn::wanted(&envelope, &envelope.recipients[0], action);
    let entry = QueueEntry::new(QueueId(2), envelope);
    let report = Report {
        index: 0,
        action,
        status: format!("{}.0.0", code / 100),
        diagnostic: Diagnostic::reply(code, [(code / 100) as u8, 0, 0], &answer)
            .from_host("relay.example.net"),
    };
    let (_, out) = dsn::build(
        HOSTNAME,
        QueueId(2),
        &entry,
        body,
        &[report],
        UNIX_EPOCH + Duration::from_secs(1_795_852_900),
        Some(1_796_000_000),
    );
    let text = String::from_utf8_lossy(&out);
    let declared = text
        .split_once("boundary=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .expect("the report declares its boundary")
        .0;
    let boundary = format!("--{declared}");
    let close = format!("{boundary}--");
    let lines = out
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (mut parts, mut closes) = (0, 0);
    for l in lines {
        if l == boundary.as_bytes() {
            parts += 1;
        } else if l == close.as_bytes() {
            closes += 1;
        }
    }
    assert_eq!(
        (parts, closes),
        (3, 1),
        "the report's MIME structure was changed by its content"
    );
}

/// A config file's text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(
        text,
        PathBuf::from("/nonexistent"),
        ConfigSource::EmbeddedDefault,
    );
}
