//! Submission duties on the message itself (RFC 6409 §8): the header
//! senders must belong to the authenticated account, and Date and
//! Message-ID are added by the server when the client left them out.
//!
//! The header senders are From (exactly one field holding exactly one
//! mailbox), Sender (at most one field, one mailbox) and the topmost
//! Resent-From/Resent-Sender (see `checked`). Each mailbox must be owned,
//! and nothing a mail reader could show beside it (display name, comments,
//! encoded words) may hold another address: readers show the name, and
//! `bob@example.com <alice@example.com>` reads as bob.
//!
//! Every field is read twice, by mail-parser and by a plain strict reading
//! of the header lines, and the message is refused where the two could
//! disagree (which fields there are, where they start and end, which
//! mailbox a field holds). See docs/decisions.md, "Header From check".

use std::ops::Range;

use base64::Engine;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Addr, Address, Header, HeaderName, HeaderValue, MessageParser};
use unicode_normalization::UnicodeNormalization;

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

impl NotOwned {
    fn nobody() -> Self {
        Self(String::new())
    }
}

/// The header fields whose mailboxes must be the account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    From,
    Sender,
    ResentFrom,
    ResentSender,
}

impl Kind {
    fn of(name: &[u8]) -> Option<Self> {
        [
            (&b"from"[..], Kind::From),
            (b"sender", Kind::Sender),
            (b"resent-from", Kind::ResentFrom),
            (b"resent-sender", Kind::ResentSender),
        ]
        .into_iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, kind)| kind)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One line-started field of the header section, by a plain scan.
struct Field {
    /// The name, without the whitespace obsolete syntax allows before the
    /// colon; `None` for a line that is no field (no colon, or a name with
    /// characters RFC 5322 does not allow).
    name: Option<Range<usize>>,
    /// From the start of the line to the end of its last continuation
    /// line, line break included.
    whole: Range<usize>,
    /// After the colon, up to the end of `whole` without its last line break.
    value: Range<usize>,
}

impl Field {
    fn kind(&self, message: &[u8]) -> Option<Kind> {
        Kind::of(&message[self.name.clone()?])
    }

    fn is_resent(&self, message: &[u8]) -> bool {
        self.name.clone().is_some_and(|n| {
            message[n]
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"resent-"))
        })
    }
}

/// Checks the header senders of `message` (the bytes as the client sent
/// them, without our Received line) against `owns`, which gets normalised
/// addresses.
pub fn inspect(message: &[u8], owns: impl Fn(&str) -> bool) -> Result<Inspection, NotOwned> {
    // A message starting with a continuation line would fold into the
    // header we prepend, and has no sound header section anyway.
    if message.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(NotOwned::nobody());
    }
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or_else(NotOwned::nobody)?;
    let inspection = Inspection {
        has_date: parsed.headers().iter().any(|h| h.name == HeaderName::Date),
        has_message_id: parsed
            .headers()
            .iter()
            .any(|h| h.name == HeaderName::MessageId),
    };
    let fields = scan_fields(message);

    // Both readings must see the same sender fields at the same places; a
    // field only one of them sees (`Fr om:`, a continuation line after a
    // line that is no field, ...) is one some mail reader may show.
    let ours: Vec<(Kind, &Field)> = fields
        .iter()
        .filter_map(|f| Some((f.kind(message)?, f)))
        .collect();
    let theirs: Vec<(Kind, &Header)> = parsed
        .headers()
        .iter()
        .filter_map(|h| Some((Kind::of(h.name.as_str().as_bytes())?, h)))
        .collect();
    let same_fields = ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|((k1, f), (k2, h))| {
            k1 == k2
                && f.whole.start == h.offset_field as usize
                && f.whole.end == h.offset_end as usize
        });
    if !same_fields {
        return Err(NotOwned::nobody());
    }

    let checked = checked(message, &fields);
    let mut seen = [0usize; 4];
    for ((kind, field), (_, header)) in ours.iter().zip(&theirs) {
        if !checked.contains(&field.whole.start) {
            continue;
        }
        let mailbox = one_mailbox(&message[field.value.clone()], &header.value, &owns)?;
        // One From, one Sender, one of each in the topmost Resent-* block.
        seen[kind.index()] += 1;
        if seen[kind.index()] > 1 {
            return Err(NotOwned(mailbox));
        }
    }
    if seen[Kind::From.index()] != 1 {
        return Err(NotOwned::nobody());
    }
    Ok(inspection)
}

/// The sender fields that must be owned, by where they start: every From
/// and Sender, and the topmost Resent-From/Resent-Sender. The topmost
/// resent block is the run of Resent-* fields that starts at the first one
/// (RFC 5322 §3.6.6: each resending prepends a block); its Resent-From and
/// Resent-Sender fields are checked. When that block has no Resent-From
/// (or no Resent-Sender), the first one further down is checked instead,
/// because a reader looking for the first such field would show it. Older
/// blocks are history and left alone.
fn checked(message: &[u8], fields: &[Field]) -> Vec<usize> {
    let block = match fields.iter().position(|f| f.is_resent(message)) {
        Some(start) => {
            let len = fields[start..]
                .iter()
                .take_while(|f| f.is_resent(message))
                .count();
            &fields[start..start + len]
        }
        None => &[],
    };
    let starts = |fields: &[Field], kinds: &[Kind]| -> Vec<usize> {
        fields
            .iter()
            .filter(|f| f.kind(message).is_some_and(|k| kinds.contains(&k)))
            .map(|f| f.whole.start)
            .collect()
    };
    let mut out = starts(fields, &[Kind::From, Kind::Sender]);
    for kind in [Kind::ResentFrom, Kind::ResentSender] {
        let in_block = starts(block, &[kind]);
        if in_block.is_empty() {
            out.extend(starts(fields, &[kind]).first());
        } else {
            out.extend(in_block);
        }
    }
    out
}

/// The header section by a plain scan of its lines: it ends at the first
/// empty line; a line starting with a space or tab continues the field
/// above it.
fn scan_fields(message: &[u8]) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| at + p + 1);
        let line = &message[at..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text_end = at + text.len();
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            // `inspect` refused a first line like this.
            if let Some(field) = fields.last_mut() {
                field.whole.end = end;
                field.value.end = text_end;
            }
        } else {
            let colon = text.iter().position(|&b| b == b':');
            let name = colon.and_then(|c| {
                let name = text[..c].trim_ascii_end();
                let ftext = |b: &u8| (33..=126).contains(b) && *b != b':';
                (!name.is_empty() && name.iter().all(ftext)).then(|| at..at + name.len())
            });
            let value_start = colon.map_or(text_end, |c| at + c + 1);
            fields.push(Field {
                name,
                whole: at..end,
                value: value_start..text_end,
            });
        }
        at = end;
    }
    fields
}

/// The one mailbox of a sender field, normalised, if both readings agree
/// on it, the account owns it, and nothing shown beside it names another
/// address.
fn one_mailbox(
    raw: &[u8],
    parsed: &HeaderValue,
    owns: &impl Fn(&str) -> bool,
) -> Result<String, NotOwned> {
    let HeaderValue::Address(list) = parsed else {
        // Empty or unparseable: no mailbox to own.
        return Err(NotOwned::nobody());
    };
    let single = match list {
        Address::List(l) if l.len() == 1 => &l[0],
        // A list, a group (even of owned addresses) or nothing.
        _ => return Err(NotOwned(first_problem(list, owns))),
    };
    // A name without an address (`From: alice@example.com` hidden in an
    // encoded word, or plain garbage) owns nothing.
    let Some(found) = single.address.as_deref() else {
        return Err(NotOwned::nobody());
    };
    let value = unfold(raw);
    // The strict reading must find the same single mailbox.
    let strict = strict_mailbox(&value).ok_or_else(NotOwned::nobody)?;
    let mailbox = address::normalize(found).map_err(|_| NotOwned(shown(found)))?;
    if address::normalize(strict).as_deref() != Ok(mailbox.as_str()) {
        return Err(NotOwned::nobody());
    }
    if !owns(&mailbox) {
        return Err(NotOwned(shown(found)));
    }
    // What a reader may show beside it: the field as written, with every
    // encoded word decoded (two ways), and mail-parser's name (which holds
    // comments).
    let name = single.name.as_deref().unwrap_or("");
    let greedy = decode_encoded_words(&value, Reading::Greedy);
    let strict = decode_encoded_words(&value, Reading::Strict);
    for text in [value.as_str(), &greedy, &strict, name] {
        if let Some(other) = other_address(text, &mailbox) {
            return Err(NotOwned(other));
        }
    }
    Ok(mailbox)
}

/// For a refused list or group: the first mailbox not owned, else the
/// second mailbox, else nothing.
fn first_problem(list: &Address, owns: &impl Fn(&str) -> bool) -> String {
    let addresses: Vec<&str> = list
        .iter()
        .filter_map(|a: &Addr| a.address.as_deref())
        .collect();
    let owned = |a: &str| address::normalize(a).is_ok_and(|a| owns(&a));
    addresses
        .iter()
        .find(|a| !owned(a))
        .or(addresses.get(1))
        .map(|a| shown(a))
        .unwrap_or_default()
}

/// Removes the line breaks of folding.
fn unfold(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 5322 §3.4 read strictly: a field value that is exactly one mailbox,
/// `[display-name] <addr-spec>` or a bare addr-spec, with comments and
/// whitespace around. Lists, groups, a second `<...>`, words after the
/// `<...>`, unbalanced quotes or comments, and addr-specs with comments,
/// quoted local parts or spaces inside give `None`. The display name may
/// hold anything a reader would show (`@` included): `other_address`
/// judges it.
fn strict_mailbox(value: &str) -> Option<&str> {
    let mut chars = value.char_indices();
    let mut angle: Option<&str> = None;
    let mut words: Vec<&str> = Vec::new();
    let mut quoted = false;
    let mut word: Option<usize> = None;
    while let Some((i, c)) = chars.next() {
        let special = c.is_whitespace() || "()\"<>,;:\\".contains(c);
        if special && let Some(start) = word.take() {
            words.push(&value[start..i]);
            if angle.is_some() {
                return None;
            }
        }
        match c {
            c if c.is_whitespace() => {}
            '(' => skip_comment(&mut chars)?,
            '"' => {
                if angle.is_some() {
                    return None;
                }
                skip_quoted(&mut chars)?;
                quoted = true;
            }
            '<' => {
                if angle.is_some() {
                    return None;
                }
                let start = i + c.len_utf8();
                loop {
                    let (j, c) = chars.next()?;
                    match c {
                        '>' => break angle = Some(value[start..j].trim()),
                        '<' | '"' | '(' | ')' | '\\' | ',' | ';' => return None,
                        _ => {}
                    }
                }
            }
            ')' | '>' | ',' | ';' | ':' | '\\' => return None,
            _ => {
                word.get_or_insert(i);
            }
        }
    }
    if let Some(start) = word {
        words.push(&value[start..]);
        if angle.is_some() {
            return None;
        }
    }
    let address = match (angle, words.as_slice()) {
        (Some(a), _) => a,
        (None, [only]) if !quoted => only,
        _ => return None,
    };
    is_addr_spec(address).then_some(address)
}

/// Skips a comment after its `(`: nested comments, `\` quoting.
fn skip_comment(chars: &mut std::str::CharIndices) -> Option<()> {
    let mut depth = 1;
    while depth > 0 {
        match chars.next()?.1 {
            '\\' => {
                chars.next()?;
            }
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
    }
    Some(())
}

/// Skips a quoted string after its `"`.
fn skip_quoted(chars: &mut std::str::CharIndices) -> Option<()> {
    loop {
        match chars.next()?.1 {
            '\\' => {
                chars.next()?;
            }
            '"' => return Some(()),
            _ => {}
        }
    }
}

/// `local@domain` with dot-atom local part and domain (UTF-8 allowed,
/// RFC 6532) or a domain literal.
fn is_addr_spec(address: &str) -> bool {
    let atext = |c: char| c.is_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom =
        |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(atext));
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let literal = domain.len() > 2
        && domain.starts_with('[')
        && domain.ends_with(']')
        && !domain[1..domain.len() - 1].contains(['[', ']', '\\', ' ']);
    dot_atom(local) && (dot_atom(domain) || literal)
}

/// Quote marks and brackets an address in a name may stand in
/// (`'alice@example.com'` is what some clients put there).
const QUOTES: &[char] = &[
    '\'', '`', '[', ']', '{', '}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{ab}',
    '\u{bb}', '\u{2039}', '\u{203a}',
];

/// Characters that end an address-like word in shown text.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || "<>(),;:@".contains(c)
}

/// The first address in `text` other than `mailbox`, as shown in the
/// reply. An at-sign is read after NFKC folding, so U+FF20 FULLWIDTH and
/// U+FE6B SMALL COMMERCIAL AT (and fullwidth letters around them) count;
/// double quotes and backslashes are dropped first, quote marks and
/// brackets around the address and a full stop after it are not part of
/// it, and whitespace around the
/// at-sign is allowed (RFC 5322's obsolete syntax allows it, and a person
/// reads `bob @ example.com` as an address). An at-sign with no word on
/// one side (`@alice`, `Alice @`) names nobody and is let through.
fn other_address(text: &str, mailbox: &str) -> Option<String> {
    let text: String = text.nfkc().filter(|c| *c != '"' && *c != '\\').collect();
    let mailbox: String = mailbox.nfkc().collect();
    for (at, _) in text.match_indices('@') {
        let before = text[..at].trim_end_matches(char::is_whitespace);
        let local_start = before
            .char_indices()
            .rev()
            .find(|(_, c)| ends_word(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        // Quotes and brackets around the address, a full stop after it.
        let local = before[local_start..].trim_start_matches(QUOTES);
        let after = text[at + 1..].trim_start_matches(char::is_whitespace);
        let domain = &after[..after.find(ends_word).unwrap_or(after.len())];
        let domain = match domain.starts_with('[') {
            true => domain,
            false => domain.trim_end_matches(|c| QUOTES.contains(&c) || c == '.'),
        };
        if local.is_empty() || domain.is_empty() {
            continue;
        }
        let word = format!("{local}@{domain}");
        match address::normalize(&word) {
            Ok(a) if a.nfkc().eq(mailbox.chars()) => {}
            Ok(a) => return Some(shown(&a)),
            Err(_) => return Some(shown(&word)),
        }
    }
    None
}

/// `text` with every RFC 2047 encoded word decoded, wherever it stands
/// (mail-parser only decodes words at a token start; some readers decode
/// more). Readers differ on where a word ends, so there are two readings:
/// `Greedy` runs to the first `?=` (spaces and `?` inside, as mail-parser
/// allows), `Strict` takes RFC 2047's encoded-text (no space, no `?`), so
/// a word inside a broken one is decoded too. Charsets are mail-parser's;
/// an unknown one is read as UTF-8. Linear in the length of `text`.
fn decode_encoded_words(text: &str, reading: Reading) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("=?") {
        out.push_str(&rest[..start]);
        let word = &rest[start + 2..];
        match decode_word(word, reading) {
            Word::Decoded(decoded, used) => {
                out.push_str(&decoded);
                rest = &word[used..];
            }
            Word::Not => {
                out.push_str("=?");
                rest = word;
            }
            // No `?=` anywhere after: no later word can end either.
            Word::Unclosed => break,
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Greedy,
    Strict,
}

enum Word {
    /// The text and the length read.
    Decoded(String, usize),
    Not,
    Unclosed,
}

/// Decodes `charset?e?data?=` (what follows a `=?`).
fn decode_word(word: &str, reading: Reading) -> Word {
    // `charset` or `charset*language`, at most 64 characters.
    let Some(q) = word.bytes().take(65).position(|b| b == b'?') else {
        return Word::Not;
    };
    let charset = word[..q].split('*').next().unwrap_or_default();
    let (encoding, data) = (word.as_bytes().get(q + 1), word.get(q + 3..));
    let (Some(&encoding), Some(data)) = (encoding, data) else {
        return Word::Not;
    };
    if charset.is_empty()
        || charset.contains(|c: char| c.is_whitespace() || c == '=')
        || !b"bBqQ".contains(&encoding)
        || word.as_bytes()[q + 2] != b'?'
    {
        return Word::Not;
    }
    let end = match reading {
        Reading::Greedy => match data.find("?=") {
            Some(end) => end,
            None => return Word::Unclosed,
        },
        Reading::Strict => {
            let end = data
                .find(|c: char| c == '?' || c.is_whitespace())
                .unwrap_or(data.len());
            if !data[end..].starts_with("?=") {
                return Word::Not;
            }
            end
        }
    };
    let data = &data.as_bytes()[..end];
    let bytes = if encoding.eq_ignore_ascii_case(&b'b') {
        // Whatever a lenient reader would make of it: other characters
        // skipped, padding optional.
        let mut clean: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
            .collect();
        if clean.len() % 4 == 1 {
            clean.pop();
        }
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        match lenient.decode(&clean) {
            Ok(bytes) => bytes,
            Err(_) => return Word::Not,
        }
    } else {
        let hex = |b: u8| (b as char).to_digit(16);
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            match data[i] {
                b'_' => out.push(b' '),
                b'=' if i + 2 < data.len() => match (hex(data[i + 1]), hex(data[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'='),
                },
                b => out.push(b),
            }
            i += 1;
        }
        out
    };
    let text = match charset_decoder(charset.as_bytes()) {
        Some(decode) => decode(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    Word::Decoded(text, q + 3 + end + 2)
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

    /// `header` as the whole header section of a short message.
    fn header(header: &str) -> String {
        format!("{header}\r\nSubject: x\r\n\r\nbody\r\n")
    }

    fn accepts(h: &str) {
        assert!(check(&header(h)).is_ok(), "{h:?}: {:?}", check(&header(h)));
    }

    fn refuses(h: &str, shown: &str) {
        assert_eq!(refused(&header(h)), shown, "{h:?}");
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
    fn owned_names_are_not_mailboxes() {
        refuses("From: \"alice@example.com\" <ceo@x.org>", "ceo@x.org");
        refuses("From: ceo@x.org (alice@example.com)", "ceo@x.org");
        refuses(
            "From: =?utf-8?q?alice@example.com?= <ceo@x.org>",
            "ceo@x.org",
        );
    }

    #[test]
    fn names_holding_another_address_are_refused() {
        for h in [
            "From: bob@example.com <alice@example.com>",
            "From: \"bob@example.com\" <alice@example.com>",
            "From: \"Bob <bob@example.com>\" <alice@example.com>",
            "From: \"Bob Smith bob@example.com today\" <alice@example.com>",
            "From: \"alice@example.com bob@example.com\" <alice@example.com>",
            "From: \"bob\\@example.com\" <alice@example.com>",
            "From: \"\\\"bob\\\"@example.com\" <alice@example.com>",
            "From: \"bob @ example.com\" <alice@example.com>",
            "From: (bob@example.com) <alice@example.com>",
            "From: Bob (x (bob@example.com)) <alice@example.com>",
            "From: alice@example.com (bob@example.com)",
            "From: <alice@example.com> (bob@example.com)",
            "From: \"bob@example.com\"\r\n\t<alice@example.com>",
            "Sender: \"bob@example.com\" <alice@example.com>\r\nFrom: <alice@example.com>",
            "From: 'bob@example.com' <alice@example.com>",
            "From: \"Alice [bob@example.com].\" <alice@example.com>",
        ] {
            refuses(h, "bob@example.com");
        }
        // Another owned address is still another address.
        refuses(
            "From: \"sales@example.com\" <alice@example.com>",
            "sales@example.com",
        );
        refuses(
            "From: \"o'bob@example.com\" <alice@example.com>",
            "o'bob@example.com",
        );
        // An address at-sign with odd words around it is shown as found.
        refuses("From: \"Team @ Acme\" <alice@example.com>", "team@acme");
        refuses(
            "From: \"bob@exa\u{200b}mple.com\" <alice@example.com>",
            "bob@example.com",
        );
    }

    #[test]
    fn look_alike_at_signs_count() {
        for h in [
            "From: \"bob\u{ff20}example.com\" <alice@example.com>",
            "From: bob\u{fe6b}example.com <alice@example.com>",
            "From: \"\u{ff42}\u{ff4f}\u{ff42}\u{ff20}\u{ff45}\u{ff58}ample.com\" <alice@example.com>",
        ] {
            refuses(h, "bob@example.com");
        }
    }

    #[test]
    fn encoded_words_are_read_wherever_they_stand() {
        for h in [
            "From: =?UTF-8?Q?bob=40example.com?= <alice@example.com>",
            "From: =?UTF-8?B?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>",
            // No padding, a stray character.
            "From: =?UTF-8?B?Ym9iQGV4YW1w!bGUuY29t?= <alice@example.com>",
            "From: \"=?UTF-8?Q?bob=40example.com?=\" <alice@example.com>",
            "From: Bob=?UTF-8?Q?=40example.com?= <alice@example.com>",
            "From: Bob (=?UTF-8?Q?bob=40example.com?=) <alice@example.com>",
            "From: =?UTF-8?Q?bob=EF=BC=A0example.com?= <alice@example.com>",
            "From: =?UTF-8*en?Q?bob=40example.com?= <alice@example.com>",
            "From: =?UTF-7?Q?bob+AEA-example.com?= <alice@example.com>",
            "From: =?UTF-8?Q?bob?= =?UTF-8?Q?=40example.com?= <alice@example.com>",
            // A broken word around a good one.
            "From: =?UTF-8?B?!!!! =?UTF-8?B?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>",
        ] {
            refuses(h, "bob@example.com");
        }
    }

    #[test]
    fn plain_names_and_the_own_address_are_fine() {
        for h in [
            "From: <alice@example.com>",
            "From: alice@example.com",
            "From: alice@example.com (Alice Smith)",
            "From: \"Alice Smith\" <alice@example.com>",
            "From: \"Smith, Alice\" <alice@example.com>",
            "From: \"O'Brien, Alice (at home)\" <alice@example.com>",
            "From: =?UTF-8?Q?Alice_Sm=C3=AFth?= <alice@example.com>",
            "From: =?UTF-8?B?QWxpY2UgU21pdGg=?= <alice@example.com>",
            "From: =?ISO-8859-1?Q?Alice_M=FCller?= <alice@example.com>",
            "From: alice@example.com <alice@example.com>",
            "From: \"Alice@Example.COM\" <alice@example.com>",
            "From: \"Alice (alice@example.com)\" <alice@example.com>",
            "From: alice\u{ff20}example.com <alice@example.com>",
            "From: 'alice@example.com' <alice@example.com>",
            "From: \"Alice [alice@example.com].\" <alice@example.com>",
            "From: \"Alice \u{201c}alice@example.com\u{201d}\" <alice@example.com>",
            // An at-sign with no word on one side names nobody.
            "From: \"Alice (@alice)\" <alice@example.com>",
            "From: Alice @ <alice@example.com>",
            "From: Sales <sales@example.com>",
            "From: Alice\r\n <alice@example.com>",
            "From: < alice@example.com > (work)",
            "From: <alice@example.com>\r\nSender: <sales@example.com>",
            "From:<alice@example.com>",
        ] {
            accepts(h);
        }
    }

    #[test]
    fn exactly_one_mailbox() {
        refuses("From: <alice@example.com>, <ceo@x.org>", "ceo@x.org");
        refuses(
            "From: <alice@example.com>, <sales@example.com>",
            "sales@example.com",
        );
        refuses("From: Team: alice@example.com, ceo@x.org;", "ceo@x.org");
        refuses("From: Me: alice@example.com;", "");
        refuses("From: Undisclosed:;", "");
        refuses("From: Smith, Alice <alice@example.com>", "");
        // Two addresses run together, or words after the address.
        refuses("From: <alice@example.com> <ceo@x.org>", "");
        refuses("From: Bob <bob@x.org> <alice@example.com>", "");
        refuses("From: <alice@example.com> Alice", "");
        // A form mail-parser and the strict reading may see differently.
        refuses("From: <\"alice\"@example.com>", "");
        refuses("From: <alice(x)@example.com>", "");
        refuses("From: \"Alice <alice@example.com>", "");
        refuses("From: Alice (unclosed <alice@example.com>", "");
    }

    #[test]
    fn exactly_one_from_field_and_at_most_one_sender() {
        refuses(
            "From: <alice@example.com>\r\nFrom: <ceo@x.org>",
            "ceo@x.org",
        );
        refuses(
            "From: <alice@example.com>\r\nfrom : <sales@example.com>",
            "sales@example.com",
        );
        refuses(
            "From: <alice@example.com>\r\n \r\nFrom: <ceo@x.org>",
            "ceo@x.org",
        );
        refuses(
            "From: <alice@example.com>\r\nSender: <ceo@x.org>",
            "ceo@x.org",
        );
        refuses(
            "From: <alice@example.com>\r\nSender: <alice@example.com>\r\nSender: <sales@example.com>",
            "sales@example.com",
        );
        refuses(
            "From: <alice@example.com>\r\nSender: <alice@example.com>, <ceo@x.org>",
            "ceo@x.org",
        );
        assert_eq!(refused("Subject: no from\r\n\r\nbody\r\n"), "");
        assert_eq!(refused("just a body line\r\n"), "");
        assert_eq!(refused(" From: <alice@example.com>\r\n\r\n"), "");
    }

    #[test]
    fn fields_the_two_readings_disagree_on_are_refused() {
        // mail-parser drops the space and reads From; a plain scan reads
        // no field at all.
        refuses("From: <alice@example.com>\r\nFr om: <ceo@x.org>", "");
        refuses("From: <alice@example.com>\r\n: From: <ceo@x.org>", "");
        // mail-parser starts a field on a continuation line after a line
        // that is no field.
        refuses(
            "From: <alice@example.com>\r\nno colon\r\n From: <ceo@x.org>",
            "",
        );
        // A line that is no field is harmless on its own.
        accepts("From: <alice@example.com>\r\nno colon here");
    }

    #[test]
    fn the_topmost_resent_block_is_owned() {
        refuses(
            "From: <alice@example.com>\r\nResent-From: <ceo@x.org>",
            "ceo@x.org",
        );
        refuses(
            "Resent-Sender: <ceo@x.org>\r\nResent-From: <alice@example.com>\r\nFrom: <alice@example.com>",
            "ceo@x.org",
        );
        refuses(
            "Resent-From: \"ceo@x.org\" <alice@example.com>\r\nFrom: <alice@example.com>",
            "ceo@x.org",
        );
        refuses(
            "Resent-From: <alice@example.com>\r\nResent-From: <sales@example.com>\r\nFrom: <alice@example.com>",
            "sales@example.com",
        );
        refuses(
            "Resent-From: <alice@example.com>, <ceo@x.org>\r\nFrom: <alice@example.com>",
            "ceo@x.org",
        );
        // The topmost block has none: the first one below is what readers
        // take.
        refuses(
            "Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nX: y\r\nResent-From: <ceo@x.org>\r\nFrom: <alice@example.com>",
            "ceo@x.org",
        );
        refuses(
            "Resent-From: <alice@example.com>\r\nX: y\r\nResent-From: <bob@x.org>\r\nResent-Sender: <ceo@x.org>\r\nFrom: <alice@example.com>",
            "ceo@x.org",
        );
        // Older blocks are history.
        accepts(
            "Resent-From: <sales@example.com>\r\nResent-Sender: <alice@example.com>\r\nResent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nReceived: from x\r\nResent-From: <bob@x.org>\r\nResent-Sender: <ceo@x.org>\r\nFrom: <alice@example.com>",
        );
    }

    #[test]
    fn folding_is_read_like_a_mail_program() {
        assert_eq!(refused("From: Alice\r\n <ceo@x.org>\r\n\r\n"), "ceo@x.org");
        assert!(check("From: Alice\r\n\t<alice@example.com>\r\n\r\n").is_ok());
        assert!(check("From: Alice\n <alice@example.com>\n\n").is_ok());
    }

    #[test]
    fn a_name_without_an_address_owns_nothing() {
        assert_eq!(refused("From: =?utf-8?q?alice=40example.com?=\r\n\r\n"), "");
        assert_eq!(refused("From: garbage\r\n\r\n"), "");
        assert_eq!(refused("From: Bob <=?utf-8?q?bob=40x.org?=>\r\n\r\n"), "");
    }

    #[test]
    fn scan_stops_at_the_body() {
        let m = b"From: a\r\n b\r\nSubject: b\r\n\r\nFrom: c\r\n";
        let fields = scan_fields(m);
        assert_eq!(fields.len(), 2);
        assert_eq!(&m[fields[0].whole.clone()], b"From: a\r\n b\r\n");
        assert_eq!(&m[fields[0].value.clone()], b" a\r\n b");
        assert_eq!(fields[1].kind(m), None);
        let m = b"FROM\t: a\nfrom:b\nFr om: c\n\n";
        let kinds: Vec<_> = scan_fields(m).iter().map(|f| f.kind(m)).collect();
        assert_eq!(kinds, [Some(Kind::From), Some(Kind::From), None]);
    }

    #[test]
    fn strict_reading() {
        assert_eq!(strict_mailbox(" a@b.c"), Some("a@b.c"));
        assert_eq!(strict_mailbox(" (x) a@b.c (y)"), Some("a@b.c"));
        assert_eq!(strict_mailbox(" \"A, B\" <a@b.c>"), Some("a@b.c"));
        assert_eq!(strict_mailbox(" x@y.z <a@b.c>"), Some("a@b.c"));
        assert_eq!(strict_mailbox(" <a@[192.0.2.1]>"), Some("a@[192.0.2.1]"));
        assert_eq!(strict_mailbox(" <a@[IPv6:::1]>"), Some("a@[IPv6:::1]"));
        for bad in [
            " a@b.c, d@e.f",
            " G: a@b.c;",
            " <a@b.c> <d@e.f>",
            " <a@b.c> x",
            " <a@b.c> \"x\"",
            " \"x\" a@b.c",
            " a@b.c d@e.f",
            " <a b@c.d>",
            " <a..b@c.d>",
            " <@c.d>",
            " <a@>",
            " (a@b.c",
            " \"a <a@b.c>",
            " a@b.c)",
            " <a@b.c",
            "",
        ] {
            assert_eq!(strict_mailbox(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decoding() {
        let both = |text: &str| {
            let greedy = decode_encoded_words(text, Reading::Greedy);
            assert_eq!(greedy, decode_encoded_words(text, Reading::Strict));
            greedy
        };
        assert_eq!(
            both("=?utf-8?q?a=40b_c?= x=?US-ASCII?B?QA?=y =?bad"),
            "a@b c x@y =?bad"
        );
        assert_eq!(both("=?iso-8859-1?q?=FC?="), "ü");
        assert_eq!(both("=?iso-8859-1*de?q?=FC?="), "ü");
        assert_eq!(both("=?x?z?abc?="), "=?x?z?abc?=");
        assert_eq!(both("=?utf-8?q?a=+1=4?="), "a=+1=4");
        assert_eq!(both("=?utf-8?q?abc"), "=?utf-8?q?abc");
        // Where a word ends: mail-parser allows spaces; RFC 2047 does not,
        // and then the word inside is one.
        let text = "=?utf-8?q?a b?=";
        assert_eq!(decode_encoded_words(text, Reading::Greedy), "a b");
        assert_eq!(decode_encoded_words(text, Reading::Strict), text);
        let text = "=?utf-8?b?!!!! =?utf-8?b?QA==?=";
        assert_eq!(
            decode_encoded_words(text, Reading::Strict),
            "=?utf-8?b?!!!! @"
        );
        // Many openers and no closer: linear, nothing decoded.
        let text = "=?a?q?b".repeat(100_000);
        assert!(decode_encoded_words(&text, Reading::Greedy) == text);
        assert!(decode_encoded_words(&text, Reading::Strict) == text);
    }
}
