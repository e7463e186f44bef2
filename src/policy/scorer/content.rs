//! Content signals of one message: distinct link domains, a display name
//! that carries another address (`"ceo@bank.example" <x@evil.example>`), and
//! a fingerprint of the body so one text sent to many people in small
//! batches is recognised.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hasher};

use mail_parser::{MessageParser, PartType};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// Distinct domains of http(s) links in the text and HTML bodies.
    pub link_domains: usize,
    /// A hash of each of those domains (at most `MAX_LINKS`), to learn
    /// the sites an account links to.
    pub link_hashes: Vec<u32>,
    /// The mail program named in User-Agent or X-Mailer, digits left out
    /// (so an update is the same program): a hash, 0 when none.
    pub user_agent: u32,
    /// The order a program writes its standard headers in: a hash, 0 when
    /// the message has none of them.
    pub header_shape: u32,
    /// A hash of the Message-ID, 0 when none: a client's retry of one
    /// message keeps it.
    pub message_id: u64,
    /// The From display name holds an address other than the From address.
    pub display_name_address: bool,
    /// Hash of the normalised body text (0 when there is no body).
    pub fingerprint: u64,
}

/// Looks at the first 256 KiB: enough for the signals, bounded cost.
pub const SCAN_LIMIT: usize = 256 * 1024;

pub fn analyse(message: &[u8]) -> Content {
    let message = &message[..message.len().min(SCAN_LIMIT)];
    let Some(parsed) = MessageParser::new().parse(message) else {
        return Content::default();
    };
    let display_name_address = parsed
        .from()
        .and_then(|from| from.first())
        .is_some_and(|addr| {
            let own = addr.address().unwrap_or_default().to_ascii_lowercase();
            addr.name()
                .map(|name| name.to_ascii_lowercase())
                .is_some_and(|name| name.contains('@') && !name.contains(&own))
        });
    let text = parsed.body_text(0).unwrap_or_default();
    // Only a real HTML part: for a text-only message mail-parser would
    // build an HTML version of the text, with no new links in it.
    let html = parsed
        .html_body
        .first()
        .and_then(|&i| parsed.parts.get(i as usize))
        .and_then(|part| match &part.body {
            PartType::Html(html) => Some(html.as_ref()),
            _ => None,
        })
        .unwrap_or_default();
    let mut domains = BTreeSet::new();
    for body in [text.as_ref(), html] {
        domains.extend(link_domains(body));
    }
    let user_agent = parsed
        .header_raw("User-Agent")
        .or_else(|| parsed.header_raw("X-Mailer"))
        .map_or(0, program);
    let message_id = parsed
        .header_raw("Message-ID")
        .map_or(0, |id| stable_hash(id.trim().as_bytes()));
    Content {
        link_domains: domains.len(),
        link_hashes: domains
            .iter()
            .take(MAX_LINKS)
            .map(|d| stable_hash(d.as_bytes()) as u32)
            .collect(),
        display_name_address,
        fingerprint: fingerprint(&text),
        user_agent,
        header_shape: header_shape(parsed.headers().iter().map(|h| h.name.as_str())),
        message_id,
    }
}

/// Link domains learnt from one message, at most.
pub const MAX_LINKS: usize = 16;

/// FNV-1a: a hash that stays the same across builds and versions, for
/// values kept in the store (none of them secret).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The program's name: letters only, lower case, versions and build
/// numbers left out ("Mozilla/5.0 ... Thunderbird/128.3.1" and
/// "... Thunderbird/140.0" are one program).
fn program(header: &str) -> u32 {
    let letters: Vec<u8> = header
        .bytes()
        .filter(|b| b.is_ascii_alphabetic() || *b == b' ')
        .map(|b| b.to_ascii_lowercase())
        .collect();
    let words: Vec<&[u8]> = letters
        .split(|b| *b == b' ')
        .filter(|w| w.len() > 1)
        .collect();
    if words.is_empty() {
        return 0;
    }
    (stable_hash(&words.join(&b' ')) as u32).max(1)
}

/// Headers every program writes; the order it writes them in is its habit.
const SHAPE_HEADERS: &[&str] = &["from", "to", "subject", "mime-version", "content-type"];

fn header_shape<'a>(names: impl Iterator<Item = &'a str>) -> u32 {
    let mut order: Vec<u8> = Vec::with_capacity(SHAPE_HEADERS.len());
    for name in names {
        if let Some(i) = SHAPE_HEADERS
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            && !order.contains(&(i as u8))
        {
            order.push(i as u8);
        }
    }
    if order.is_empty() {
        return 0;
    }
    (stable_hash(&order) as u32).max(1)
}

/// The registrable-looking part (last two labels) of each link's host.
fn link_domains(body: &str) -> Vec<String> {
    let lower = body.to_ascii_lowercase();
    let mut out = Vec::new();
    for scheme in ["http://", "https://"] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(scheme) {
            rest = &rest[at + scheme.len()..];
            let host: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
            if labels.len() >= 2 {
                out.push(labels[labels.len() - 2..].join("."));
            }
        }
    }
    out
}

/// Lowercased words without digits, quoted lines and greetings' names
/// left out: the same template with another name or number hashes alike.
fn fingerprint(text: &str) -> u64 {
    // The words, normalised, one space after each: one buffer, one hash.
    let mut normal: Vec<u8> = Vec::with_capacity(text.len());
    let mut words = 0;
    let mut end_word = |normal: &mut Vec<u8>, start: usize| {
        if normal.len() > start {
            normal.push(b' ');
            words += 1;
        }
    };
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with('>'))
        .skip(1)
    {
        if line.is_ascii() {
            // Most mail: bytes, no char decoding.
            let mut start = normal.len();
            for &b in line.as_bytes() {
                if b.is_ascii_alphabetic() {
                    normal.push(b.to_ascii_lowercase());
                } else if b.is_ascii_whitespace() {
                    end_word(&mut normal, start);
                    start = normal.len();
                }
            }
            end_word(&mut normal, start);
            continue;
        }
        for word in line.split_whitespace() {
            let start = normal.len();
            let mut utf8 = [0; 4];
            for c in word.chars().filter(|c| c.is_alphabetic()) {
                for l in c.to_lowercase() {
                    normal.extend_from_slice(l.encode_utf8(&mut utf8).as_bytes());
                }
            }
            end_word(&mut normal, start);
        }
    }
    if words < 5 {
        return 0;
    }
    let mut h = DefaultHasher::new();
    h.write(&normal);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_display_names() {
        let m = b"From: \"security@bank.example\" <x@evil.example>\r\nSubject: hi\r\n\r\nDear Bob,\r\nVisit https://a.one.example/x http://b.two.example and https://www.one.example/y now please today\r\n";
        let c = analyse(m);
        assert_eq!(c.link_domains, 2);
        assert!(c.display_name_address);
        let honest = analyse(
            b"From: Alice <alice@example.com>\r\n\r\nHi\r\nsee you tomorrow at the office then\r\n",
        );
        assert!(!honest.display_name_address);
        assert_eq!(honest.link_domains, 0);
    }

    #[test]
    fn a_program_and_its_update_look_alike_and_a_script_does_not() {
        let tb = |v: &str| {
            analyse(format!("From: a@x.org\r\nTo: b@y.org\r\nSubject: s\r\nUser-Agent: Mozilla Thunderbird/{v}\r\nMessage-ID: <1@x>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi\r\n").as_bytes())
        };
        let script = analyse(b"Subject: s\r\nFrom: a@x.org\r\nTo: b@y.org\r\nX-Mailer: PHPMailer 6.9.1\r\n\r\nhi\r\n");
        let (old, new) = (tb("128.3.1"), tb("140.0"));
        assert_ne!(old.user_agent, 0);
        assert_eq!(old.user_agent, new.user_agent);
        assert_eq!(old.header_shape, new.header_shape);
        assert_ne!(old.message_id, 0);
        assert_ne!(script.user_agent, old.user_agent);
        assert_ne!(script.header_shape, old.header_shape);
        assert_eq!(script.message_id, 0);
    }

    #[test]
    fn one_template_with_other_names_has_one_fingerprint() {
        let a = analyse(b"From: a@x.org\r\n\r\nDear Bob,\r\nYour invoice 123 is ready, pay it here today please.\r\n");
        let b = analyse(b"From: a@x.org\r\n\r\nDear Carol,\r\nYour invoice 456 is ready, pay it here today please.\r\n");
        let c = analyse(
            b"From: a@x.org\r\n\r\nDear Bob,\r\nLunch on friday would be great, see you then.\r\n",
        );
        assert_ne!(a.fingerprint, 0);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }
}
