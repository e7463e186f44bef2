//! One address normalisation used everywhere (AUTH, ownership, portal, CLI):
//! the whole address lowercased, the domain as an IDNA A-label, a UTF-8 local
//! part in NFC.

use unicode_normalization::UnicodeNormalization;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("the address has no '@'")]
    MissingAt,
    #[error("the part before '@' is empty")]
    EmptyLocalPart,
    #[error("the domain is empty")]
    EmptyDomain,
    #[error("the domain is not a valid domain name")]
    BadDomain,
    #[error("the address is longer than 254 octets")]
    TooLong,
    #[error("the address contains spaces or control characters")]
    ForbiddenCharacter,
}

/// Normalises `user@domain` (no angle brackets).
pub fn normalize(address: &str) -> Result<String, AddressError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    if address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err(AddressError::ForbiddenCharacter);
    }
    let (local, domain) = address.rsplit_once('@').ok_or(AddressError::MissingAt)?;
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    let domain = normalize_domain(domain)?;
    let local: String = local.nfc().collect::<String>().to_lowercase();
    let out = format!("{local}@{domain}");
    if out.len() > 254 {
        return Err(AddressError::TooLong);
    }
    Ok(out)
}

/// Lowercase IDNA A-label form of a domain.
pub fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    // Address literals ([192.0.2.1]) are kept as they are, lowercased.
    if domain.starts_with('[') && domain.ends_with(']') {
        return Ok(domain.to_ascii_lowercase());
    }
    let ascii = idna::domain_to_ascii(domain).map_err(|_| AddressError::BadDomain)?;
    if ascii.is_empty() || ascii.starts_with('.') || ascii.ends_with('.') || ascii.contains("..") {
        return Err(AddressError::BadDomain);
    }
    Ok(ascii)
}

/// The domain part of a normalised address.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// RFC 6409 §4.2: a submitted envelope domain must be fully qualified.
pub fn is_fully_qualified(address: &str) -> bool {
    let domain = domain_of(address);
    (domain.contains('.') && !domain.ends_with('.'))
        || (domain.starts_with('[') && domain.ends_with(']'))
}

/// `local+tag@domain` → `local@domain`; other addresses unchanged.
pub fn strip_tag(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => address.to_string(),
        },
        None => address.to_string(),
    }
}

/// Whether an account with this primary address and aliases owns `address`
/// (already normalised): the primary, an alias, or a `+tag` form of either.
pub fn owns(primary: &str, aliases: &[String], address: &str) -> bool {
    let base = strip_tag(address);
    [address, base.as_str()]
        .iter()
        .any(|a| *a == primary || aliases.iter().any(|x| x == a))
}

/// The network a client counts as (the scorer's networks, the log's
/// rate-limit key): its /24, or /64 for IPv6.
pub fn client_network(ip: std::net::IpAddr) -> ipnet::IpNet {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    ipnet::IpNet::new(ip, prefix)
        .expect("24 and 64 are valid prefixes")
        .trunc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_encodes_domains() {
        assert_eq!(normalize("Alice@Example.COM").unwrap(), "alice@example.com");
        assert_eq!(
            normalize("jörg@Bücher.example").unwrap(),
            "jörg@xn--bcher-kva.example"
        );
        // NFD input ends up NFC.
        assert_eq!(
            normalize("jo\u{308}rg@example.com").unwrap(),
            "jörg@example.com"
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        assert_eq!(normalize(""), Err(AddressError::Empty));
        assert_eq!(normalize("alice"), Err(AddressError::MissingAt));
        assert_eq!(normalize("@x.com"), Err(AddressError::EmptyLocalPart));
        assert_eq!(normalize("a@"), Err(AddressError::EmptyDomain));
        assert_eq!(
            normalize("a b@x.com"),
            Err(AddressError::ForbiddenCharacter)
        );
        assert_eq!(normalize("a@x..com"), Err(AddressError::BadDomain));
    }

    #[test]
    fn ownership_covers_aliases_and_tags() {
        let aliases = vec!["sales@example.com".to_string()];
        assert!(owns("alice@example.com", &aliases, "alice@example.com"));
        assert!(owns(
            "alice@example.com",
            &aliases,
            "alice+news@example.com"
        ));
        assert!(owns("alice@example.com", &aliases, "sales+x@example.com"));
        assert!(!owns("alice@example.com", &aliases, "bob@example.com"));
        assert!(!owns("alice@example.com", &aliases, "alice@example.org"));
    }

    #[test]
    fn fully_qualified() {
        assert!(is_fully_qualified("a@example.com"));
        assert!(!is_fully_qualified("a@localhost"));
        assert!(is_fully_qualified("a@[192.0.2.1]"));
    }
}
