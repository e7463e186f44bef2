//! One line of `policy replay` input (docs/policy.md, "Replaying
//! traffic"): JSON with `at` (RFC 3339) and `type`. Unknown fields are
//! ignored; missing optional ones are neutral.

use std::net::IpAddr;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::policy::scorer::Features;

#[derive(Debug, Clone, Deserialize)]
pub struct Tls {
    pub version: Option<String>,
    pub cipher: Option<String>,
}

/// A session id: logs write numbers, people write strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(untagged)]
pub enum SessionId {
    Number(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    Account {
        account: String,
    },
    Auth {
        account: String,
        ip: IpAddr,
        ok: bool,
        /// An opaque id of the password tried (repeats of one wrong
        /// password are one mistake).
        password: Option<String>,
        helo: Option<String>,
        session: Option<SessionId>,
        tls: Option<Tls>,
        mech: Option<String>,
        credential: Option<String>,
    },
    Message {
        account: String,
        ip: IpAddr,
        mail_from: Option<String>,
        rcpts: Vec<String>,
        helo: Option<String>,
        session: Option<SessionId>,
        headers: Option<String>,
        body: Option<String>,
        features: Option<Features>,
    },
    Bounce {
        account: String,
        #[serde(default = "yes")]
        permanent: bool,
    },
    Complaint {
        account: String,
    },
    Unblock {
        account: String,
        via: Via,
    },
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    SelfService,
    Operator,
}

/// A parsed line: its time (Unix seconds, with fractions) and content.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at: f64,
    pub at_text: String,
    pub line: Line,
}

pub fn parse(text: &str) -> Result<Timed, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let at_text = value
        .get("at")
        .and_then(|v| v.as_str())
        .ok_or("no `at` (an RFC 3339 time)")?
        .to_string();
    let at = OffsetDateTime::parse(&at_text, &Rfc3339)
        .map_err(|e| format!("`at` {at_text:?} is not an RFC 3339 time: {e}"))?;
    let at = at.unix_timestamp_nanos() as f64 / 1e9;
    if at < 0.0 {
        return Err(format!("`at` {at_text:?} is before 1970"));
    }
    let line: Line = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(Timed { at, at_text, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_bad_ones_say_why() {
        let m = parse(r#"{"at":"2026-12-07T10:00:00.5+01:00","type":"message","account":"a@x.org","ip":"192.0.2.1","rcpts":["b@y.org"],"extra":1}"#).unwrap();
        assert_eq!(m.at, 1_796_634_000.5);
        assert!(matches!(m.line, Line::Message { .. }));
        let e = parse(r#"{"type":"message"}"#).unwrap_err();
        assert!(e.contains("`at`"), "{e}");
        let e = parse(r#"{"at":"yesterday","type":"auth"}"#).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        let e = parse(r#"{"at":"2026-12-07T10:00:00Z","type":"teleport"}"#).unwrap_err();
        assert!(e.contains("teleport"), "{e}");
        let e = parse(r#"{"at":"2026-12-07T10:00:00Z","type":"auth","account":"a@x.org"}"#)
            .unwrap_err();
        assert!(e.contains("ip"), "{e}");
    }
}
