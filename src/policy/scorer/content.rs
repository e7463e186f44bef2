//! Content signals of one message: distinct link domains, a display name
//! that carries another address (`"ceo@bank.example" <x@evil.example>`), and
//! a fingerprint of the body so one text sent to many people in small
//! batches is recognised.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use mail_parser::MessageParser;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// Distinct domains of http(s) links in the text and HTML bodies.
    pub link_domains: usize,
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
    let text = parsed
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let html = parsed
        .body_html(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let mut domains = BTreeSet::new();
    for body in [&text, &html] {
        domains.extend(link_domains(body));
    }
    Content {
        link_domains: domains.len(),
        display_name_address,
        fingerprint: fingerprint(&text),
    }
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
    let mut words = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with('>'))
        .skip(1)
    {
        for word in line.split_whitespace() {
            let w: String = word
                .chars()
                .filter(|c| c.is_alphabetic())
                .flat_map(char::to_lowercase)
                .collect();
            if !w.is_empty() {
                words.push(w);
            }
        }
    }
    if words.len() < 5 {
        return 0;
    }
    let mut h = DefaultHasher::new();
    words.hash(&mut h);
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
