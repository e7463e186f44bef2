//! `[autoconfig]`: what mail programs are told when they set themselves up
//! (Thunderbird autoconfig, Outlook autodiscover; docs/operator-guide.md,
//! "Mail program set-up"). The outgoing server comes from `[server]
//! hostname` and the submission listeners; the incoming server (IMAP or
//! POP3, run by another program) and the domains answered for come from
//! here.

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoconfigConfig {
    /// The mail domains answered for (normalised: lowercase A-labels).
    /// Empty: every well-formed domain gets the same answer.
    pub domains: Vec<String>,
    /// IMAP server, TLS from the first byte (port 993 unless `imap_port`).
    pub imap_host: Option<String>,
    pub imap_port: Option<u16>,
    /// POP3 server, TLS from the first byte (port 995 unless `pop3_port`).
    pub pop3_host: Option<String>,
    pub pop3_port: Option<u16>,
}

/// The incoming server mail programs are told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingServer {
    pub host: String,
    pub port: u16,
}

impl AutoconfigConfig {
    pub const IMAPS_PORT: u16 = 993;
    pub const POP3S_PORT: u16 = 995;

    pub fn imap(&self) -> Option<IncomingServer> {
        self.imap_host.as_ref().map(|host| IncomingServer {
            host: host.clone(),
            port: self.imap_port.unwrap_or(Self::IMAPS_PORT),
        })
    }

    pub fn pop3(&self) -> Option<IncomingServer> {
        self.pop3_host.as_ref().map(|host| IncomingServer {
            host: host.clone(),
            port: self.pop3_port.unwrap_or(Self::POP3S_PORT),
        })
    }

    /// Normalises `domains` (lowercase IDNA, no trailing dot); called once
    /// the file is read.
    pub(super) fn normalize(&mut self) -> anyhow::Result<()> {
        for d in &mut self.domains {
            let trimmed = d.trim().trim_end_matches('.');
            match crate::address::normalize_domain(trimmed) {
                Ok(n) if is_dns_name(&n) => *d = n,
                _ => bail!("`autoconfig.domains`: {d:?} is not a domain name"),
            }
        }
        self.domains.sort();
        self.domains.dedup();
        Ok(())
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        for (key, host, port) in [
            ("imap", &self.imap_host, self.imap_port),
            ("pop3", &self.pop3_host, self.pop3_port),
        ] {
            if let Some(h) = host
                && !is_dns_name(&h.to_ascii_lowercase())
            {
                bail!("`autoconfig.{key}_host` must be an ASCII host name, got {h:?}");
            }
            match port {
                Some(0) => bail!("`autoconfig.{key}_port` must be 1 to 65535"),
                Some(_) if host.is_none() => {
                    bail!("`autoconfig.{key}_port` is set but `autoconfig.{key}_host` is not")
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// An ASCII DNS name of at least two labels: letters, digits and hyphens,
/// 1 to 63 characters a label, no hyphen at either end of a label, and a
/// last label that is not all digits (so no IPv4 address).
pub fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, parse};
    use super::*;

    #[test]
    fn dns_names() {
        for good in [
            "example.com",
            "mail.example.com",
            "xn--bcher-kva.example",
            "a-b.c",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "localhost",
            "example..com",
            ".example.com",
            "-a.example",
            "a_b.example",
            "a b.example",
            "[192.0.2.1]",
            "exa<mple>.com",
            "192.0.2.1",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn keys_default_and_check() {
        let cfg = parse(MINIMAL).unwrap();
        assert!(cfg.autoconfig.domains.is_empty());
        assert_eq!(cfg.autoconfig.imap(), None);
        assert_eq!(cfg.autoconfig.pop3(), None);

        let cfg = parse(&format!(
            "{MINIMAL}[autoconfig]\ndomains = [\"Example.COM.\", \"bücher.example\", \"example.com\"]\n\
             imap_host = \"imap.example.com\"\npop3_host = \"pop.example.com\"\npop3_port = 1995\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.autoconfig.domains,
            ["example.com", "xn--bcher-kva.example"]
        );
        assert_eq!(
            cfg.autoconfig.imap(),
            Some(IncomingServer {
                host: "imap.example.com".into(),
                port: 993
            })
        );
        assert_eq!(cfg.autoconfig.pop3().unwrap().port, 1995);

        for (bad, needle) in [
            ("domains = [\"not a domain\"]", "autoconfig.domains"),
            ("domains = [\"localhost\"]", "autoconfig.domains"),
            ("imap_port = 143", "autoconfig.imap_host"),
            (
                "imap_host = \"imap.example.com\"\nimap_port = 0",
                "imap_port",
            ),
            ("pop3_host = \"pop <3>\"", "autoconfig.pop3_host"),
            ("imap = \"x\"", "imap"),
        ] {
            let err = parse(&format!("{MINIMAL}[autoconfig]\n{bad}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{bad}: {err:#}");
        }
    }
}
