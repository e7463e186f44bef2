//! Device passwords: `abcd-efgh-ijkl-mnop`, 16 random lowercase letters
//! (75 bits), shown once and stored only as an HMAC under the server key.
//! They are random, so a keyed hash is enough: no argon2 cost per AUTH.

use subtle::ConstantTimeEq;

use crate::secrets::ServerKey;

const LETTERS: usize = 16;

/// A new device password, formatted for showing.
pub fn generate() -> String {
    let mut letters = String::with_capacity(LETTERS);
    while letters.len() < LETTERS {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("randomness");
        // Rejection sampling: 26 * 9 = 234, so bytes below 234 map evenly.
        for byte in b.into_iter().filter(|&x| x < 234) {
            if letters.len() < LETTERS {
                letters.push((b'a' + byte % 26) as char);
            }
        }
    }
    format(&letters)
}

fn format(letters: &str) -> String {
    letters
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// What the user typed, without dashes or spaces, lowercased; `None` if it
/// cannot be a device password.
pub fn normalize(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (letters.len() == LETTERS && letters.bytes().all(|b| b.is_ascii_lowercase())).then_some(letters)
}

/// The stored form: HMAC(key, address, letters), hex.
pub fn hash(key: &ServerKey, address: &str, letters: &str) -> String {
    key.mac(format!("device-password\0{address}\0{letters}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn matches(stored: &str, computed: &str) -> bool {
    stored.as_bytes().ct_eq(computed.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_typing_variants() {
        let pw = generate();
        assert_eq!(pw.len(), 19);
        assert!(
            pw.split('-')
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_lowercase()))
        );
        let letters = normalize(&pw).unwrap();
        assert_eq!(
            normalize(&pw.to_uppercase()).as_deref(),
            Some(letters.as_str())
        );
        assert_eq!(
            normalize(&pw.replace('-', " ")).as_deref(),
            Some(letters.as_str())
        );
        assert_eq!(normalize(&letters).as_deref(), Some(letters.as_str()));
        assert_eq!(normalize("correct horse battery staple"), None);
        assert_ne!(generate(), generate());
    }
}
