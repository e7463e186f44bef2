//! Submission duties on the message itself (RFC 6409 §8): the header From
//! (and Sender, if present) must belong to the authenticated account, and
//! Date and Message-ID are added by the server when the client left them out.
//!
//! Headers are parsed with mail-parser, so display names, comments, encoded
//! words, groups and folding are read the way mail programs read them; what
//! counts is every mailbox address, never the name shown beside it.

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::address;

/// What the session needs to know about a message it will accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspection {
    pub has_date: bool,
    pub has_message_id: bool,
}

/// A header sender the account does not own; the address is for the reply
/// (empty when there was no usable mailbox at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOwned(pub String);

/// Checks the header senders of `message` (the bytes as the client sent
/// them, without our Received line) against `owns`, which gets normalised
/// addresses.
pub fn inspect(message: &[u8], owns: impl Fn(&str) -> bool) -> Result<Inspection, NotOwned> {
    // A message starting with a continuation line would fold into the
    // header we prepend, and has no sound header section anyway.
    if message.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(NotOwned(String::new()));
    }
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or_else(|| NotOwned(String::new()))?;
    let owned = |a: &str| address::normalize(a).is_ok_and(|a| owns(&a));

    let mut from_fields = 0;
    let mut last_from = String::new();
    let mut inspection = Inspection {
        has_date: false,
        has_message_id: false,
    };
    for header in parsed.headers() {
        let is_from = match header.name {
            HeaderName::From => true,
            HeaderName::Sender => false,
            HeaderName::Date => {
                inspection.has_date = true;
                continue;
            }
            HeaderName::MessageId => {
                inspection.has_message_id = true;
                continue;
            }
            _ => continue,
        };
        let HeaderValue::Address(list) = &header.value else {
            // Empty or unparseable: no mailbox to own.
            return Err(NotOwned(String::new()));
        };
        let mut mailboxes = 0;
        for mailbox in list.iter() {
            mailboxes += 1;
            // A name without an address (`From: alice@example.com` hidden
            // in an encoded word, or plain garbage) owns nothing.
            let Some(addr) = mailbox.address.as_deref() else {
                return Err(NotOwned(String::new()));
            };
            if !owned(addr) {
                return Err(NotOwned(shown(addr)));
            }
            if is_from {
                last_from = shown(addr);
            }
        }
        // An empty group (`From: undisclosed:;`) names nobody.
        if mailboxes == 0 {
            return Err(NotOwned(String::new()));
        }
        if is_from {
            from_fields += 1;
        }
    }
    // Exactly one From field (RFC 5322 §3.6), counted by mail-parser and by
    // a plain scan of the header lines, so a parser difference cannot hide
    // a second one.
    if from_fields != 1 || raw_from_fields(message) != 1 {
        return Err(NotOwned(last_from));
    }
    Ok(inspection)
}

/// Header fields named `From` in the header section, by a plain line scan.
fn raw_from_fields(message: &[u8]) -> usize {
    let mut count = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"from") {
            count += 1;
        }
    }
    count
}

/// An address safe to put inside a one-line reply.
fn shown(address: &str) -> String {
    address
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .take(254)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: &str) -> Result<Inspection, NotOwned> {
        inspect(message.as_bytes(), |a| {
            a == "alice@example.com" || a == "sales@example.com"
        })
    }

    fn refused(message: &str) -> String {
        check(message).expect_err(message).0
    }

    #[test]
    fn owned_from_passes_and_reports_missing_fields() {
        let i = check("From: Alice <Alice@Example.COM>\r\nSubject: x\r\n\r\nbody\r\n").unwrap();
        assert_eq!(
            i,
            Inspection {
                has_date: false,
                has_message_id: false
            }
        );
        let i = check(
            "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <a@b>\r\nFrom: sales@example.com\r\n\r\n",
        )
        .unwrap();
        assert!(i.has_date && i.has_message_id);
    }

    #[test]
    fn display_names_and_comments_do_not_count() {
        assert_eq!(
            refused("From: \"alice@example.com\" <ceo@x.org>\r\n\r\n"),
            "ceo@x.org"
        );
        assert_eq!(
            refused("From: ceo@x.org (alice@example.com)\r\n\r\n"),
            "ceo@x.org"
        );
        assert_eq!(
            refused("From: =?utf-8?q?alice@example.com?= <ceo@x.org>\r\n\r\n"),
            "ceo@x.org"
        );
    }

    #[test]
    fn every_mailbox_must_be_owned() {
        assert_eq!(
            refused("From: <alice@example.com>, <ceo@x.org>\r\n\r\n"),
            "ceo@x.org"
        );
        assert_eq!(
            refused("From: Team: alice@example.com, ceo@x.org;\r\n\r\n"),
            "ceo@x.org"
        );
        assert_eq!(refused("From: Undisclosed:;\r\n\r\n"), "");
        assert_eq!(
            refused("From: <alice@example.com>\r\nSender: <ceo@x.org>\r\n\r\n"),
            "ceo@x.org"
        );
        // Two addresses run together are one unowned address.
        assert!(check("From: <alice@example.com> <ceo@x.org>\r\n\r\n").is_err());
    }

    #[test]
    fn exactly_one_from_field() {
        assert_eq!(
            refused("From: <alice@example.com>\r\nFrom: <ceo@x.org>\r\n\r\n"),
            "ceo@x.org"
        );
        assert!(check("From: <alice@example.com>\r\nfrom : <sales@example.com>\r\n\r\n").is_err());
        assert_eq!(refused("Subject: no from\r\n\r\nbody\r\n"), "");
        assert_eq!(refused("just a body line\r\n"), "");
        assert_eq!(refused(" From: <alice@example.com>\r\n\r\n"), "");
    }

    #[test]
    fn folding_is_read_like_a_mail_program() {
        assert_eq!(refused("From: Alice\r\n <ceo@x.org>\r\n\r\n"), "ceo@x.org");
        assert!(check("From: Alice\r\n\t<alice@example.com>\r\n\r\n").is_ok());
    }

    #[test]
    fn a_name_without_an_address_owns_nothing() {
        assert_eq!(refused("From: =?utf-8?q?alice=40example.com?=\r\n\r\n"), "");
        assert_eq!(refused("From: garbage\r\n\r\n"), "");
    }

    #[test]
    fn raw_scan_stops_at_the_body() {
        assert_eq!(
            raw_from_fields(b"From: a\r\nSubject: b\r\n\r\nFrom: c\r\n"),
            1
        );
        assert_eq!(raw_from_fields(b"FROM\t: a\nfrom:b\n\n"), 2);
    }
}
