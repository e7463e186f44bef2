//! TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, ±1 step of skew,
//! 160-bit secrets. totp-rs computes the codes; the replay guard (each step
//! accepted once per account) is ours.

use totp_rs::{Algorithm, Builder, Secret, Totp};

pub const STEP_SECONDS: u64 = 30;
const DIGITS: u8 = 6;
const SKEW: u16 = 1;

/// A fresh 160-bit secret from the OS CSPRNG.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    getrandom::fill(&mut secret).expect("randomness");
    secret
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW)
        .with_step_duration(STEP_SECONDS)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build_noncompliant()
}

/// `otpauth://totp/<issuer>:<account>?secret=...&issuer=<issuer>`.
pub fn otpauth_url(secret: &[u8], issuer: &str, account: &str) -> String {
    totp(secret, issuer, account)
        .to_url()
        .unwrap_or_else(|_| String::new())
}

/// The QR code of the otpauth URL as a PNG.
pub fn qr_png(secret: &[u8], issuer: &str, account: &str) -> Option<Vec<u8>> {
    totp(secret, issuer, account).to_qr_png().ok()
}

/// Uppercase base32 without padding, in groups of four: what a person types.
pub fn display_key(secret: &[u8]) -> String {
    let b32 = Secret::from(secret.to_vec()).to_base32();
    let b32 = b32.trim_end_matches('=').to_ascii_uppercase();
    b32.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The code for a time, as an authenticator app shows it (tests).
#[cfg(any(test, feature = "testing"))]
pub fn code_at(secret: &[u8], unix: u64) -> String {
    totp(secret, "x", "x").generate(unix).to_string()
}

/// The matched step if `code` is valid at `now` and its step is newer than
/// `last_step` (a code works once).
pub fn check(secret: &[u8], code: &str, now: u64, last_step: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "x", "x")
        .check(&code, now)
        .filter(|&step| step > last_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B (SHA-1), the last six digits of each code.
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
            (20000000000, "353130"),
        ] {
            assert_eq!(code_at(secret, time), code, "at {time}");
            assert_eq!(check(secret, code, time, 0), Some(time / 30), "at {time}");
        }
    }

    #[test]
    fn skew_and_replay() {
        let secret = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&secret, now);
        let step = check(&secret, &code, now, 0).unwrap();
        // Accepted one step later, not three.
        assert_eq!(check(&secret, &code, now + 30, 0), Some(step));
        assert_eq!(check(&secret, &code, now + 90, 0), None);
        // The same step twice: refused.
        assert_eq!(check(&secret, &code, now, step), None);
        assert_eq!(check(&secret, "12345", now, 0), None);
        assert_eq!(check(&secret, "abcdef", now, 0), None);
    }

    #[test]
    fn key_and_url_formats() {
        let secret = [0u8; 20];
        assert_eq!(
            display_key(&secret),
            "AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA"
        );
        let url = otpauth_url(&secret, "Example Mail", "alice@example.com");
        assert!(
            url.starts_with("otpauth://totp/Example%20Mail:alice%40example.com?"),
            "{url}"
        );
        assert!(url.contains("issuer=Example%20Mail"), "{url}");
        assert!(
            qr_png(&secret, "Example Mail", "alice@example.com")
                .unwrap()
                .starts_with(b"\x89PNG")
        );
    }
}
