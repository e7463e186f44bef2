//! Password hashes other than mailwarden's own: the Dovecot schemes an
//! import accepts (`{SHA512-CRYPT}`, `{SHA256-CRYPT}`, `{BLF-CRYPT}`,
//! `{ARGON2I}`, `{ARGON2ID}`), how each is recognised in a stored hash and
//! verified. An imported hash is kept only until the first successful
//! login, which replaces it with mailwarden's own argon2id
//! (`Accounts::authenticate`).

use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
use argon2::{Argon2, Params};

/// A supported Dovecot scheme, by its `{NAME}` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sha512Crypt,
    Sha256Crypt,
    BlfCrypt,
    Argon2i,
    Argon2id,
}

/// Why a `{SCHEME}hash` value cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("scheme {0} not supported")]
    Unsupported(String),
    #[error("no {{SCHEME}} prefix before the hash")]
    NoScheme,
    #[error("the {0} hash is malformed")]
    Malformed(&'static str),
    /// A cost no login should pay (each verify runs on the AUTH queue).
    #[error("the {0} hash costs more than mailwarden verifies (at most {1})")]
    TooCostly(&'static str, &'static str),
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha512Crypt => "SHA512-CRYPT",
            Self::Sha256Crypt => "SHA256-CRYPT",
            Self::BlfCrypt => "BLF-CRYPT",
            Self::Argon2i => "ARGON2I",
            Self::Argon2id => "ARGON2ID",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Sha512Crypt,
            Self::Sha256Crypt,
            Self::BlfCrypt,
            Self::Argon2i,
            Self::Argon2id,
        ]
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The hash string's own prefix(es) for this scheme.
    fn matches(self, hash: &str) -> bool {
        match self {
            Self::Sha512Crypt => hash.starts_with("$6$"),
            Self::Sha256Crypt => hash.starts_with("$5$"),
            Self::BlfCrypt => ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)),
            Self::Argon2i => hash.starts_with("$argon2i$"),
            Self::Argon2id => hash.starts_with("$argon2id$"),
        }
    }

    /// Which scheme a stored hash string is.
    pub fn of_hash(hash: &str) -> Option<Self> {
        [
            Self::Argon2id,
            Self::Argon2i,
            Self::Sha512Crypt,
            Self::Sha256Crypt,
            Self::BlfCrypt,
        ]
        .into_iter()
        .find(|s| s.matches(hash))
    }
}

/// Parses a Dovecot `{SCHEME}hash` value into the hash to store. Every
/// scheme but the supported ones is refused, `{PLAIN}` included; the hash
/// must parse as its scheme says.
pub fn parse(value: &str) -> Result<(Scheme, String), SchemeError> {
    let rest = value.strip_prefix('{').ok_or(SchemeError::NoScheme)?;
    let (name, hash) = rest.split_once('}').ok_or(SchemeError::NoScheme)?;
    let scheme = Scheme::from_name(name).ok_or_else(|| SchemeError::Unsupported(name.into()))?;
    if !scheme.matches(hash) || !well_formed(scheme, hash) {
        return Err(SchemeError::Malformed(scheme.name()));
    }
    if let Some(limit) = too_costly(scheme, hash) {
        return Err(SchemeError::TooCostly(scheme.name(), limit));
    }
    Ok((scheme, hash.to_string()))
}

/// The most an imported hash may cost, well above Dovecot's defaults
/// (5000 rounds, bcrypt 05, argon2 32-64 MiB): past them one verify takes
/// seconds or a large part of the server's memory.
const MAX_SHA_ROUNDS: u32 = 1_000_000;
const MAX_BCRYPT_COST: u32 = 14;
const MAX_ARGON2_KIB: u32 = 256 * 1024;
const MAX_ARGON2_PASSES: u32 = 16;

/// The limit `hash` is over, if any.
fn too_costly(scheme: Scheme, hash: &str) -> Option<&'static str> {
    match scheme {
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let rounds = hash[3..]
                .strip_prefix("rounds=")
                .and_then(|r| r.split('$').next())
                .and_then(|r| r.parse::<u32>().ok());
            rounds
                .is_some_and(|r| r > MAX_SHA_ROUNDS)
                .then_some("rounds=1000000")
        }
        Scheme::BlfCrypt => hash
            .get(4..6)
            .and_then(|c| c.parse::<u32>().ok())
            .is_none_or(|cost| cost > MAX_BCRYPT_COST)
            .then_some("cost 14"),
        Scheme::Argon2i | Scheme::Argon2id => {
            let parsed = PasswordHash::new(hash).ok()?;
            let get = |k: &str| parsed.params.get_decimal(k).unwrap_or(u32::MAX);
            (get("m") > MAX_ARGON2_KIB || get("t") > MAX_ARGON2_PASSES || get("p") > 16)
                .then_some("m=262144,t=16,p=16")
        }
    }
}

fn well_formed(scheme: Scheme, hash: &str) -> bool {
    match scheme {
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => sha_crypt::PasswordHashRef::new(hash).is_ok(),
        // $2y$NN$ + 22 salt + 31 hash characters.
        Scheme::BlfCrypt => hash.len() == 60 && hash.as_bytes()[3] == b'$',
        Scheme::Argon2i | Scheme::Argon2id => PasswordHash::new(hash).is_ok(),
    }
}

/// Whether `hash` is mailwarden's own: argon2id with today's parameters.
/// Anything else is re-hashed on the next successful login.
pub fn is_native(hash: &str) -> bool {
    let p = Params::default();
    let prefix = format!(
        "$argon2id$v=19$m={},t={},p={}$",
        p.m_cost(),
        p.t_cost(),
        p.p_cost()
    );
    hash.starts_with(&prefix)
}

/// Checks `password` against a stored hash of any supported scheme.
/// Blocking: argon2 and bcrypt take tens to hundreds of milliseconds.
pub fn verify(password: &str, hash: &str) -> bool {
    match Scheme::of_hash(hash) {
        Some(Scheme::Argon2id | Scheme::Argon2i) => match PasswordHash::new(hash) {
            // The algorithm and costs come from the string.
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        },
        Some(Scheme::Sha512Crypt | Scheme::Sha256Crypt) => {
            use sha_crypt::PasswordVerifier as _;
            match sha_crypt::PasswordHashRef::new(hash) {
                Ok(parsed) => sha_crypt::ShaCrypt::default()
                    .verify_password(password.as_bytes(), parsed)
                    .is_ok(),
                Err(_) => false,
            }
        }
        // Truncates at 72 bytes, as Dovecot (libxcrypt) does: the first
        // login re-hashes, after which the whole password counts.
        Some(Scheme::BlfCrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `doveadm pw` 2.3.19.1 output for `secret123` (../shared/notes/dovecot.md).
    const FIXTURES: &[&str] = &[
        "{SHA512-CRYPT}$6$l2I5dbT1.Az0WJtI$UU3JevIH7789VF3EuJRqI9uz9QjeW62fCc.ShhfM0ExcWjqXer9BN3StDQ/qeYqGgNP2YbAqJTvKN8Bp1C5N7/",
        "{SHA512-CRYPT}$6$rounds=10000$Agfnv3WFlmzl1Pc.$AZzA/r0eol2ILbcQh0UCexI0kDORLPHv34Xg8cZlFXxPC7/o9cIIOiongoFM/q0gsQHJWL/eQWOiAG7X4EiFJ0",
        "{SHA256-CRYPT}$5$uojFf9CKlItfs93F$L3nAHc1ICvNGoeXXFfBvu/4sr.vMcQmfWHlAXY2EUmA",
        "{BLF-CRYPT}$2y$05$toaRqEjZ/NmeXMBSk2JCwuhxcRtzvGohTzuTxHOPh0tXGeqvPS2HW",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$Z7pePsmvF+tTIyzS/K7OYg$DFZOgE0G47HJuoyzn8bf/F2py1WT/Z/T87cNkyMTCdA",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$KnTh0lBfYbDrAYkJac5W4w$5kuwCyQuBWSyaTF61wKKmKC3YaNTB/wM/2RwEp1FQy8",
    ];

    #[test]
    fn dovecot_hashes_verify_and_are_not_native() {
        for value in FIXTURES {
            let (_, hash) = parse(value).unwrap();
            assert!(verify("secret123", &hash), "{value}");
            assert!(!verify("secret124", &hash), "{value}");
            assert!(!is_native(&hash), "{value}");
        }
        let own = super::super::password::hash_blocking("secret123456").unwrap();
        assert!(is_native(&own) && verify("secret123456", &own));
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        for (value, name) in [
            ("{PLAIN}secret123", "PLAIN"),
            ("{CLEAR}secret123", "CLEAR"),
            ("{MD5-CRYPT}$1$abc$def", "MD5-CRYPT"),
            ("{SSHA512}abc", "SSHA512"),
            ("{CRYPT}ab01FAX.bQRSU", "CRYPT"),
        ] {
            assert_eq!(parse(value), Err(SchemeError::Unsupported(name.into())));
        }
        assert_eq!(parse("$6$abc$def"), Err(SchemeError::NoScheme));
        assert_eq!(
            parse("{SHA512-CRYPT}$5$x$y"),
            Err(SchemeError::Malformed("SHA512-CRYPT"))
        );
        assert_eq!(
            parse("{BLF-CRYPT}$2y$05$short"),
            Err(SchemeError::Malformed("BLF-CRYPT"))
        );
        // Costs no login should pay.
        for (value, name) in [
            (
                "{SHA512-CRYPT}$6$rounds=999999999$Agfnv3WFlmzl1Pc.$AZzA/r0eol2ILbcQh0UCexI0kDORLPHv34Xg8cZlFXxPC7/o9cIIOiongoFM/q0gsQHJWL/eQWOiAG7X4EiFJ0",
                "SHA512-CRYPT",
            ),
            (
                "{BLF-CRYPT}$2y$20$KkACu2QIU/o4GgTwce539eOsY2Qj6BXleyauIeyFfjAxHN3xnguyu",
                "BLF-CRYPT",
            ),
            (
                "{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$KnTh0lBfYbDrAYkJac5W4w$5kuwCyQuBWSyaTF61wKKmKC3YaNTB/wM/2RwEp1FQy8",
                "ARGON2ID",
            ),
        ] {
            assert!(
                matches!(parse(value), Err(SchemeError::TooCostly(n, _)) if n == name),
                "{value}"
            );
        }
    }
}
