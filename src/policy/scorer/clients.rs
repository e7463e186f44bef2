//! The mail programs an account sends with. A program is known by a few
//! traits: the EHLO name (an address literal counts as one kind), TLS
//! version and cipher, the AUTH mechanism and credential type, the program
//! named in User-Agent/X-Mailer and the order of its standard headers.
//! Most of them survive an update of the owner's program, few of them a
//! thief's script. A program becomes known after sending accepted mail on
//! `program_known_after_days` days; until an account has a known program, no
//! program counts as unknown (the first weeks after deployment).

use serde::{Deserialize, Serialize};

use super::content::{Content, stable_hash};
use crate::policy::ClientHints;

/// Programs kept per account (the most recently used).
const MAX_CLIENTS: usize = 6;
/// Days kept per program.
const MAX_DAYS: usize = 4;

/// One program's traits, each a hash; 0 when the trait was not seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPrint {
    pub helo: u32,
    pub tls: u32,
    pub auth: u32,
    pub agent: u32,
    pub shape: u32,
}

fn h(s: &str) -> u32 {
    (stable_hash(s.as_bytes()) as u32).max(1)
}

impl ClientPrint {
    pub fn of(hints: &ClientHints, content: &Content) -> Self {
        let helo = hints.helo.as_deref().map_or(0, |name| {
            if name.starts_with('[') {
                // Thunderbird and others say their local address: one kind.
                h("[literal]")
            } else {
                h(&name.to_ascii_lowercase())
            }
        });
        let tls = match (&hints.tls_version, &hints.tls_cipher) {
            (Some(v), Some(c)) => h(&format!("{v}/{c}")),
            _ => 0,
        };
        let auth = match (&hints.mechanism, &hints.credential) {
            (Some(m), Some(c)) => h(&format!("{m}/{c}")),
            (Some(m), None) => h(m),
            _ => 0,
        };
        Self {
            helo,
            tls,
            auth,
            agent: content.user_agent,
            shape: content.header_shape,
        }
    }

    fn traits(&self) -> [u32; 5] {
        [self.helo, self.tls, self.auth, self.agent, self.shape]
    }

    /// (traits both know, traits that agree).
    fn compare(&self, other: &Self) -> (usize, usize) {
        self.traits()
            .iter()
            .zip(other.traits())
            .filter(|(a, b)| **a != 0 && *b != 0)
            .fold((0, 0), |(n, same), (a, b)| {
                (n + 1, same + usize::from(*a == b))
            })
    }

    /// Enough traits to judge by.
    pub fn telling(&self) -> bool {
        self.traits().iter().filter(|t| **t != 0).count() >= 2
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenClient {
    pub print: ClientPrint,
    /// Days (see `contacts::day_number`) it sent accepted, clean mail.
    pub days: Vec<u16>,
}

/// The verdict on the program of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// One of the account's known programs.
    Known,
    /// Not one of them.
    Unknown,
    /// Nothing to judge by: the account has no known program yet, or the
    /// message says too little about its program.
    NoHistory,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    #[serde(default)]
    pub seen: Vec<SeenClient>,
}

impl Clients {
    fn matching(&self, print: &ClientPrint) -> Option<usize> {
        self.seen
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let (n, same) = c.print.compare(print);
                (n >= 2 && same * 2 > n).then_some((i, same))
            })
            .max_by_key(|(_, same)| *same)
            .map(|(i, _)| i)
    }

    /// A program is known after sending clean mail on `known_after` days.
    pub fn judge(&self, print: &ClientPrint, known_after: usize) -> Program {
        let known = |c: &SeenClient| c.days.len() >= known_after.max(1);
        if !print.telling() || !self.seen.iter().any(known) {
            return Program::NoHistory;
        }
        match self.matching(print) {
            Some(i) if known(&self.seen[i]) => Program::Known,
            _ => Program::Unknown,
        }
    }

    /// A clean message from this program on `day`.
    pub fn learn(&mut self, print: &ClientPrint, day: u16) {
        if !print.telling() {
            return;
        }
        let i = match self.matching(print) {
            Some(i) => i,
            None => {
                if self.seen.len() >= MAX_CLIENTS {
                    // The one used longest ago goes.
                    if let Some(oldest) = self
                        .seen
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.days.last().copied().unwrap_or(0))
                        .map(|(i, _)| i)
                    {
                        self.seen.remove(oldest);
                    }
                }
                self.seen.push(SeenClient {
                    print: *print,
                    days: Vec::new(),
                });
                self.seen.len() - 1
            }
        };
        let c = &mut self.seen[i];
        // An update changes a trait or two: follow it.
        for (old, new) in [
            (&mut c.print.helo, print.helo),
            (&mut c.print.tls, print.tls),
            (&mut c.print.auth, print.auth),
            (&mut c.print.agent, print.agent),
            (&mut c.print.shape, print.shape),
        ] {
            if new != 0 {
                *old = new;
            }
        }
        if c.days.last() != Some(&day) {
            c.days.push(day);
            if c.days.len() > MAX_DAYS {
                c.days.remove(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(helo: &str, agent: u32) -> ClientPrint {
        let hints = ClientHints {
            helo: Some(helo.into()),
            tls_version: Some("TLSv1_3".into()),
            tls_cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
            mechanism: Some("PLAIN".into()),
            credential: Some("password".into()),
        };
        let content = Content {
            user_agent: agent,
            header_shape: 7,
            ..Content::default()
        };
        ClientPrint::of(&hints, &content)
    }

    #[test]
    fn a_program_is_known_after_two_days_and_a_script_is_not() {
        let mut c = Clients::default();
        let laptop = print("[192.168.1.20]", 11);
        assert_eq!(c.judge(&laptop, 2), Program::NoHistory);
        c.learn(&laptop, 100);
        assert_eq!(
            c.judge(&laptop, 2),
            Program::NoHistory,
            "one day is not enough"
        );
        c.learn(&laptop, 101);
        assert_eq!(c.judge(&laptop, 2), Program::Known);
        // The same laptop in a hotel: another local address, same kind.
        assert_eq!(c.judge(&print("[10.0.0.7]", 11), 2), Program::Known);
        let script = ClientPrint::of(
            &ClientHints {
                helo: Some("localhost".into()),
                tls_version: Some("TLSv1_2".into()),
                tls_cipher: Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into()),
                mechanism: Some("LOGIN".into()),
                credential: Some("password".into()),
            },
            &Content::default(),
        );
        assert_eq!(c.judge(&script, 2), Program::Unknown);
        assert_eq!(c.judge(&ClientPrint::default(), 2), Program::NoHistory);
    }
}
