//! The people an account writes to: keyed fingerprints of their addresses
//! (never the addresses), each with the last day it was mailed, at most
//! `MAX_CONTACTS` per account. The key comes from the server key, so a
//! copy of the store does not say whom anyone writes to.

use serde::{Deserialize, Serialize};

/// Contacts kept per account; the longest unmailed go first.
pub const MAX_CONTACTS: usize = 1500;

/// A keyed 32-bit fingerprint of a lower-cased address. A collision (1 in
/// 4 billion per pair) only makes a new recipient look known.
#[derive(Debug, Clone, Copy)]
pub struct ContactKey(pub [u64; 2]);

impl ContactKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Self([word(0), word(8)])
    }

    pub fn of(&self, address: &str) -> u32 {
        use std::hash::Hasher;
        // SipHash-2-4 with the key: a fixed algorithm (the type is only
        // deprecated in favour of crates that offer the same).
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.0[0], self.0[1]);
        // One write of the lower-cased bytes (SipHash streams, so this is
        // the same hash as byte by byte, only faster).
        let mut buf = [0u8; 256];
        match buf.get_mut(..address.len()) {
            Some(lower) => {
                lower.copy_from_slice(address.as_bytes());
                lower.make_ascii_lowercase();
                h.write(lower);
            }
            None => {
                for b in address.bytes() {
                    h.write_u8(b.to_ascii_lowercase());
                }
            }
        }
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    }
}

/// (fingerprint, last day mailed), sorted by fingerprint; stored packed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    #[serde(with = "packed", default)]
    entries: Vec<(u32, u16)>,
}

impl Contacts {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, fp: u32) -> bool {
        self.entries.binary_search_by_key(&fp, |e| e.0).is_ok()
    }

    /// The day `fp` was last mailed, if it is a contact.
    pub fn last_day(&self, fp: u32) -> Option<u16> {
        self.entries
            .binary_search_by_key(&fp, |e| e.0)
            .ok()
            .map(|i| self.entries[i].1)
    }

    /// Records a message to `fp` on `day`.
    pub fn touch(&mut self, fp: u32, day: u16) {
        match self.entries.binary_search_by_key(&fp, |e| e.0) {
            Ok(i) => self.entries[i].1 = day,
            Err(i) => {
                self.entries.insert(i, (fp, day));
                if self.entries.len() > MAX_CONTACTS
                    && let Some(oldest) = self
                        .entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.1)
                        .map(|(i, _)| i)
                {
                    self.entries.remove(oldest);
                }
            }
        }
    }

    /// Contacts mailed on or after `day`.
    pub fn mailed_since(&self, day: u16) -> usize {
        self.entries.iter().filter(|e| e.1 >= day).count()
    }
}

/// Days since 2020-01-01, in 16 bits (good until 2199).
pub fn day_number(unix: u64) -> u16 {
    (unix.saturating_sub(1_577_836_800) / 86_400).min(u64::from(u16::MAX)) as u16
}

mod packed {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(entries: &[(u32, u16)], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(entries.len() * 6);
        for (fp, day) in entries {
            bytes.extend_from_slice(&fp.to_le_bytes());
            bytes.extend_from_slice(&day.to_le_bytes());
        }
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, u16)>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() % 6 != 0 {
            return Err(serde::de::Error::custom(
                "contacts: not a whole number of entries",
            ));
        }
        let mut entries: Vec<(u32, u16)> = bytes
            .chunks_exact(6)
            .map(|c| {
                (
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    u16::from_le_bytes([c[4], c[5]]),
                )
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_keyed_bounded_and_round_trip() {
        let k1 = ContactKey([1, 2]);
        let k2 = ContactKey([3, 4]);
        assert_eq!(k1.of("Bob@X.org"), k1.of("bob@x.org"));
        assert_ne!(k1.of("bob@x.org"), k2.of("bob@x.org"));
        let mut c = Contacts::default();
        for i in 0..(MAX_CONTACTS as u32 + 10) {
            c.touch(k1.of(&format!("p{i}@x.org")), (i / 100) as u16);
        }
        assert_eq!(c.len(), MAX_CONTACTS);
        // Ten of those mailed longest ago (day 0) went first.
        let day0 = (0..100)
            .filter(|i| c.contains(k1.of(&format!("p{i}@x.org"))))
            .count();
        assert_eq!(day0, 90);
        assert!(c.contains(k1.of(&format!("p{}@x.org", MAX_CONTACTS + 9))));
        assert_eq!(c.mailed_since(15), MAX_CONTACTS + 10 - 1500);
        let json = serde_json::to_string(&c).unwrap();
        let back: Contacts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(json.len() < MAX_CONTACTS * 9, "{}", json.len());
    }
}
