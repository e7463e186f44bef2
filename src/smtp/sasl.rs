//! SASL PLAIN (RFC 4616) and LOGIN decoding. Small enough to own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, PartialEq, Eq)]
pub struct PlainCredentials {
    pub authzid: String,
    pub authcid: String,
    pub password: String,
}

/// Broken base64, bad UTF-8, or the wrong number of fields.
#[derive(Debug, PartialEq, Eq)]
pub struct CannotDecode;

pub fn decode_base64_text(input: &str) -> Result<String, CannotDecode> {
    let bytes = STANDARD.decode(input.trim()).map_err(|_| CannotDecode)?;
    String::from_utf8(bytes).map_err(|_| CannotDecode)
}

/// `authzid NUL authcid NUL password`, base64-encoded.
pub fn decode_plain(input: &str) -> Result<PlainCredentials, CannotDecode> {
    let text = decode_base64_text(input)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CannotDecode);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(CannotDecode);
    }
    Ok(PlainCredentials {
        authzid: authzid.to_string(),
        authcid: authcid.to_string(),
        password: password.to_string(),
    })
}

/// Base64 of `text`, as a client sends it (tests).
#[cfg(any(test, feature = "testing"))]
pub fn encode(text: &str) -> String {
    STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decodes_three_fields() {
        let creds = decode_plain(&encode("\0alice@example.com\0pass word:x")).unwrap();
        assert_eq!(creds.authzid, "");
        assert_eq!(creds.authcid, "alice@example.com");
        assert_eq!(creds.password, "pass word:x");
    }

    #[test]
    fn plain_refuses_malformed_input() {
        assert_eq!(decode_plain("not base64!"), Err(CannotDecode));
        assert_eq!(decode_plain(&encode("alice\0pw")), Err(CannotDecode));
        assert_eq!(
            decode_plain(&encode("\0alice\0pw\0extra")),
            Err(CannotDecode)
        );
        assert_eq!(decode_plain(&encode("\0\0pw")), Err(CannotDecode));
        assert_eq!(decode_plain(""), Err(CannotDecode));
    }
}
