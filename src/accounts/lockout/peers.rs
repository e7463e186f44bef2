//! With several nodes, the brute-force counters count as one: every wrong
//! password and every successful login this node sees is told to the other
//! nodes (through the shared store's change channel), and what they tell is
//! counted here as if seen here. Only the keyed hashes travel (the key is
//! derived from the server key every node shares), never a password.
//! Hearing one's own note again changes nothing: counters keep distinct
//! hashes.

use std::net::IpAddr;
use std::sync::Arc;

use super::Lockouts;
use crate::locks::Recover;

/// Something the other nodes must count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A wrong secret: the hash of the secret and of (login, secret).
    Failure {
        ip: IpAddr,
        login: String,
        hash: u64,
        pair: u64,
    },
    /// A successful login from `ip`'s network.
    Success { ip: IpAddr, account: String },
    /// A wrong OTP code for a bucket.
    OtpFailure { bucket: String },
}

impl Note {
    /// As the change channel carries it (the login goes last: it is the
    /// only part that may hold any character).
    pub fn to_text(&self) -> String {
        match self {
            Self::Failure {
                ip,
                login,
                hash,
                pair,
            } => format!("f|{ip}|{hash:x}|{pair:x}|{login}"),
            Self::Success { ip, account } => format!("s|{ip}|{account}"),
            Self::OtpFailure { bucket } => format!("o|{bucket}"),
        }
    }

    pub fn from_text(text: &str) -> Option<Self> {
        let mut parts = text.splitn(5, '|');
        match parts.next()? {
            "f" => Some(Self::Failure {
                ip: parts.next()?.parse().ok()?,
                hash: u64::from_str_radix(parts.next()?, 16).ok()?,
                pair: u64::from_str_radix(parts.next()?, 16).ok()?,
                login: parts.next()?.to_string(),
            }),
            "s" => {
                let mut parts = text.splitn(3, '|').skip(1);
                Some(Self::Success {
                    ip: parts.next()?.parse().ok()?,
                    account: parts.next()?.to_string(),
                })
            }
            "o" => Some(Self::OtpFailure {
                bucket: text.split_once('|')?.1.to_string(),
            }),
            _ => None,
        }
    }
}

/// Where notes for the other nodes go.
pub type Publisher = Arc<dyn Fn(Note) + Send + Sync>;

impl Lockouts {
    /// From now on, tells `publish` what the other nodes must count.
    pub fn publish_to(&self, publish: Publisher) {
        *self.peers.lock_or_recover() = Some(publish);
    }

    pub(super) fn tell_peers(&self, note: impl FnOnce() -> Note) {
        let peers = self.peers.lock_or_recover().clone();
        if let Some(p) = peers {
            p(note());
        }
    }

    /// Counts what another node saw.
    pub fn heard(&self, note: &Note) {
        match note {
            Note::Failure {
                ip,
                login,
                hash,
                pair,
            } => {
                self.count_failure(*ip, login, *hash, *pair);
            }
            Note::Success { ip, account } => self.count_success(*ip, account),
            Note::OtpFailure { bucket } => {
                self.count_otp_failure(bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_survive_the_channel() {
        for note in [
            Note::Failure {
                ip: "2001:db8::1".parse().unwrap(),
                login: "odd|login@example.com".into(),
                hash: u64::MAX,
                pair: 7,
            },
            Note::Success {
                ip: "192.0.2.1".parse().unwrap(),
                account: "a@example.com".into(),
            },
            Note::OtpFailure {
                bucket: "a@example.com|192.0.2.0/24".into(),
            },
        ] {
            assert_eq!(Note::from_text(&note.to_text()), Some(note));
        }
    }
}
