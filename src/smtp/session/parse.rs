//! Reading command lines: which may be long, and the replies to what
//! smtp-proto cannot parse.

use smtp_proto::{Error as ParseError, Request};

use crate::smtp::reply::{self, Reply};

/// MAIL, RCPT and AUTH lines may be up to 2048 octets; others 512.
pub(crate) fn takes_long_line(line: &[u8]) -> bool {
    let verb = line.get(..4).unwrap_or_default();
    [&b"MAIL"[..], b"RCPT", b"AUTH"]
        .iter()
        .any(|v| verb.eq_ignore_ascii_case(v))
}

pub(crate) fn names_postmaster(line: &[u8]) -> bool {
    line.windows(12)
        .any(|w| w.eq_ignore_ascii_case(b"<postmaster>"))
}

/// A command line as the session reads it: the request, or the reply to a
/// line smtp-proto cannot parse (the fuzz targets drive this too).
pub(crate) fn parse_command(line: &[u8]) -> Result<Request<String>, Reply> {
    Request::parse(&mut line.iter())
        .map(Request::into_owned)
        .map_err(|e| parse_error_reply(&e, line))
}

fn parse_error_reply(e: &ParseError, line: &[u8]) -> Reply {
    match e {
        ParseError::UnknownCommand => reply::UNRECOGNIZED,
        ParseError::UnsupportedParameter { .. } => reply::UNSUPPORTED_PARAMETER,
        ParseError::ResponseTooLong => reply::LINE_TOO_LONG,
        // smtp-proto refuses `<bob>`; to a person that is an address
        // without a domain, which RFC 6409 §4.2 answers with 554.
        ParseError::InvalidSenderAddress => {
            domainless(line).map_or(reply::SYNTAX_ERROR, |a| reply::sender_not_qualified(&a))
        }
        ParseError::InvalidRecipientAddress => {
            domainless(line).map_or(reply::SYNTAX_ERROR, |a| reply::recipient_not_qualified(&a))
        }
        _ => reply::SYNTAX_ERROR,
    }
}

/// The `<...>` of a MAIL or RCPT line when it is a plain local part.
pub(super) fn domainless(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let inner = text.split_once('<')?.1.split_once('>')?.0;
    let plain = !inner.is_empty()
        && inner.len() <= 64
        && inner
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"@<>\"".contains(c));
    plain.then(|| inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domainless_addresses_are_named() {
        assert_eq!(domainless(b"RCPT TO:<bob>\r\n").as_deref(), Some("bob"));
        assert_eq!(domainless(b"MAIL FROM:<a b>\r\n"), None);
        assert_eq!(domainless(b"MAIL FROM:<a@>\r\n"), None);
        assert_eq!(domainless(b"MAIL FROM:bob\r\n"), None);
    }

    #[test]
    fn long_lines_only_for_address_commands() {
        assert!(takes_long_line(b"mail FROM:<a@b.c>\r\n"));
        assert!(takes_long_line(b"AUTH PLAIN xyz\r\n"));
        assert!(!takes_long_line(b"EHLO x\r\n"));
    }
}
