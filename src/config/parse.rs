//! serde helpers shared by the sections: sizes and durations as text.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// "25MiB", "10MB", "1048576" or an integer.
pub(super) fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| serde::de::Error::custom(format!("invalid size {s:?}: {e}"))),
    }
}

/// A list of durations: `["1m", "5m"]`.
pub(super) fn de_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            humantime::parse_duration(s.trim())
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
        })
        .collect()
}

/// "5m", "30s", "1h 30m".
pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn sizes_and_durations_parse() {
        let cfg = parse(&format!(
            "{MINIMAL}[smtp]\nmax_message_size = \"10MiB\"\ncommand_timeout = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.smtp.max_message_size, 10 * 1024 * 1024);
        assert_eq!(cfg.smtp.command_timeout, Duration::from_secs(30));
        let err = parse(&format!("{MINIMAL}[smtp]\ndata_timeout = \"soon\"\n")).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
