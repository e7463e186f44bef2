//! Mail program set-up (docs/operator-guide.md, "Mail program set-up"):
//! Thunderbird autoconfig and Outlook autodiscover (POX and the JSON v2
//! pointer), served at the root of the portal listener whatever the path
//! of `public_url`.
//! Also the Apple configuration profile (`MailSetup::apple_profile`) that
//! My account offers with a new device password (`pages::devices`).
//!
//! Every answer depends on the mail domain only: it never reads the store,
//! so it cannot tell whether an address exists. A domain outside
//! `[autoconfig] domains` (when that list is set) gets the same 404 as a
//! malformed request. Thunderbird's answer uses `%EMAILADDRESS%` rather
//! than echoing the address; Outlook's POX answer echoes the address as
//! `LoginName`, normalised and XML-escaped. Bodies are bounded (16 KiB)
//! and only scanned, never parsed with a DTD or entities.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::Portal;
use crate::address;
use crate::config::{Config, IncomingServer, is_dns_name};

/// Thunderbird, on `autoconfig.<domain>`.
pub const THUNDERBIRD: &str = "/mail/config-v1.1.xml";
/// Thunderbird, on `<domain>` itself.
pub const THUNDERBIRD_WELL_KNOWN: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";
/// Outlook's Plain Old XML autodiscover (POST).
pub const POX: &str = "/autodiscover/autodiscover.xml";
/// Outlook's autodiscover v2, a JSON pointer to `POX`; also
/// `JSON/v1.0/<address>`.
pub const JSON: &str = "/autodiscover/autodiscover.json";
const JSON_V1: &str = "/autodiscover/autodiscover.json/v1.0/";

/// The paths `answer` serves (Outlook varies their case; the portal's
/// fallback sends any-case matches here).
pub fn is_setup_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [THUNDERBIRD, THUNDERBIRD_WELL_KNOWN, POX, JSON].contains(&lower.as_str())
        || (lower.starts_with(JSON_V1) && lower.len() > JSON_V1.len())
}

/// How a client secures a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (465, 993, 995).
    Implicit,
    /// Plaintext, then STARTTLS (587).
    StartTls,
}

/// What mail programs are told, fixed at start.
#[derive(Debug, Clone)]
pub struct MailSetup {
    /// Empty: every well-formed domain.
    domains: Vec<String>,
    display_name: String,
    smtp_host: String,
    /// Implicit TLS first (the one Thunderbird prefers), then STARTTLS.
    outgoing: Vec<(u16, Security)>,
    imap: Option<IncomingServer>,
    pop3: Option<IncomingServer>,
    /// Where autodiscover v2 points: `POX` on the portal's public origin.
    pox_url: String,
    /// The configured TLS certificate chain (DER) and its key, which sign
    /// Apple profiles; `None`: profiles go out unsigned.
    signing: Option<crate::tls::CertifiedPair>,
}

impl MailSetup {
    /// The submission host is `[server] hostname` (what the certificate and
    /// the EHLO name); the ports are the listeners' ports, as bound (the
    /// configured ones, except that port 0 becomes the port given).
    pub fn new(
        config: &Config,
        submission: &[SocketAddr],
        submissions: &[SocketAddr],
        portal: SocketAddr,
    ) -> Self {
        let mut outgoing: Vec<(u16, Security)> = Vec::new();
        let listeners = submissions
            .iter()
            .map(|a| (a.port(), Security::Implicit))
            .chain(submission.iter().map(|a| (a.port(), Security::StartTls)));
        for l in listeners {
            if !outgoing.contains(&l) {
                outgoing.push(l);
            }
        }
        let origin = match &config.portal.public_url {
            Some(url) => {
                let after_scheme = url.find("://").map_or(0, |i| i + 3);
                let end = url[after_scheme..]
                    .find('/')
                    .map_or(url.len(), |i| after_scheme + i);
                url[..end].to_string()
            }
            None => format!("http://{portal}"),
        };
        Self {
            domains: config.autoconfig.domains.clone(),
            display_name: config.accounts.totp_issuer.clone(),
            smtp_host: config.server.hostname.clone(),
            outgoing,
            imap: config.autoconfig.imap(),
            pop3: config.autoconfig.pop3(),
            pox_url: format!("{origin}{POX}"),
            signing: None,
        }
    }

    /// Profiles are signed with this certificate chain (DER) and key.
    pub fn with_signing(mut self, signing: Option<crate::tls::CertifiedPair>) -> Self {
        self.signing = signing;
        self
    }

    /// A profile as it is handed out: CMS-signed when a certificate is
    /// configured (devices then show it as verified), as is otherwise.
    pub fn seal(&self, profile: String) -> Vec<u8> {
        let Some((chain, key)) = &self.signing else {
            return profile.into_bytes();
        };
        match crate::cms::sign(profile.as_bytes(), chain, key) {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!(event = "portal.profile_unsigned", error = %e);
                profile.into_bytes()
            }
        }
    }

    /// `domain` (normalised) is answered for.
    fn serves(&self, domain: &str) -> bool {
        is_dns_name(domain) && (self.domains.is_empty() || self.domains.iter().any(|d| d == domain))
    }

    /// The served domain of an address, normalised; `None` for anything
    /// else (not an address, or not a served domain).
    fn served_address(&self, raw: &str) -> Option<String> {
        let normalized = address::normalize(raw).ok()?;
        self.serves(address::domain_of(&normalized))
            .then_some(normalized)
    }

    /// Thunderbird's `config-v1.1.xml` for `domain`.
    pub fn thunderbird_xml(&self, domain: &str) -> String {
        let domain = xml(domain);
        let name = xml(&self.display_name);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <clientConfig version=\"1.1\">\n\
             \x20 <emailProvider id=\"{domain}\">\n\
             \x20   <domain>{domain}</domain>\n\
             \x20   <displayName>{name}</displayName>\n\
             \x20   <displayShortName>{name}</displayShortName>\n"
        );
        let server = |kind: &str, typ: &str, host: &str, port: u16, security: Security| {
            let socket = match security {
                Security::Implicit => "SSL",
                Security::StartTls => "STARTTLS",
            };
            format!(
                "    <{kind} type=\"{typ}\">\n\
                 \x20     <hostname>{}</hostname>\n\
                 \x20     <port>{port}</port>\n\
                 \x20     <socketType>{socket}</socketType>\n\
                 \x20     <username>%EMAILADDRESS%</username>\n\
                 \x20     <authentication>password-cleartext</authentication>\n\
                 \x20   </{kind}>\n",
                xml(host)
            )
        };
        for (typ, incoming) in [("imap", &self.imap), ("pop3", &self.pop3)] {
            if let Some(s) = incoming {
                out.push_str(&server(
                    "incomingServer",
                    typ,
                    &s.host,
                    s.port,
                    Security::Implicit,
                ));
            }
        }
        for &(port, security) in &self.outgoing {
            out.push_str(&server(
                "outgoingServer",
                "smtp",
                &self.smtp_host,
                port,
                security,
            ));
        }
        out.push_str("  </emailProvider>\n</clientConfig>\n");
        out
    }

    /// Outlook's POX answer for `address` (normalised, in a served domain).
    /// One SMTP server: implicit TLS if there is a listener for it.
    pub fn outlook_xml(&self, address: &str) -> String {
        let login = xml(address);
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n\
             \x20 <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n\
             \x20   <Account>\n\
             \x20     <AccountType>email</AccountType>\n\
             \x20     <Action>settings</Action>\n",
        );
        for (typ, incoming) in [("IMAP", &self.imap), ("POP3", &self.pop3)] {
            if let Some(s) = incoming {
                out.push_str(&format!(
                    "      <Protocol>\n\
                     \x20       <Type>{typ}</Type>\n\
                     \x20       <Server>{}</Server>\n\
                     \x20       <Port>{}</Port>\n\
                     \x20       <DomainRequired>off</DomainRequired>\n\
                     \x20       <LoginName>{login}</LoginName>\n\
                     \x20       <SPA>off</SPA>\n\
                     \x20       <SSL>on</SSL>\n\
                     \x20       <AuthRequired>on</AuthRequired>\n\
                     \x20     </Protocol>\n",
                    xml(&s.host),
                    s.port
                ));
            }
        }
        let smtp = self
            .outgoing
            .iter()
            .find(|(_, s)| *s == Security::Implicit)
            .or(self.outgoing.first());
        if let Some(&(port, security)) = smtp {
            let encryption = match security {
                Security::Implicit => "SSL",
                Security::StartTls => "TLS",
            };
            out.push_str(&format!(
                "      <Protocol>\n\
                 \x20       <Type>SMTP</Type>\n\
                 \x20       <Server>{}</Server>\n\
                 \x20       <Port>{port}</Port>\n\
                 \x20       <DomainRequired>off</DomainRequired>\n\
                 \x20       <LoginName>{login}</LoginName>\n\
                 \x20       <SPA>off</SPA>\n\
                 \x20       <Encryption>{encryption}</Encryption>\n\
                 \x20       <AuthRequired>on</AuthRequired>\n\
                 \x20       <UsePOPAuth>off</UsePOPAuth>\n\
                 \x20       <SMTPLast>off</SMTPLast>\n\
                 \x20     </Protocol>\n",
                xml(&self.smtp_host)
            ));
        }
        out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
        out
    }

    /// Whether `apple_profile` has an answer (an incoming server is set).
    pub fn offers_apple_profile(&self) -> bool {
        (self.imap.is_some() || self.pop3.is_some()) && !self.outgoing.is_empty()
    }

    /// An Apple configuration profile (`.mobileconfig`, unsigned plist XML)
    /// with one `com.apple.mail.managed` payload for `address` and the device
    /// password `password` named `device`. `None` without an incoming server
    /// (Apple's Mail needs one). Outgoing: SSL/TLS if there is a
    /// `submissions` listener, else STARTTLS (`UseSSL` covers both).
    /// PayloadUUIDs are random; PayloadIdentifiers are stable per account and
    /// device name, so installing a profile again replaces the old one.
    pub fn apple_profile(&self, address: &str, device: &str, password: &str) -> Option<String> {
        let (account_type, incoming) = match (&self.imap, &self.pop3) {
            (Some(s), _) => ("EmailTypeIMAP", s),
            (None, Some(s)) => ("EmailTypePOP", s),
            (None, None) => return None,
        };
        let &(out_port, _) = self
            .outgoing
            .iter()
            .find(|(_, s)| *s == Security::Implicit)
            .or(self.outgoing.first())?;
        let id = profile_id(&self.smtp_host, address, device);
        let name = xml(&self.display_name);
        let string = |key: &str, value: &str| {
            format!(
                "\t\t\t<key>{key}</key>\n\t\t\t<string>{}</string>\n",
                xml(value)
            )
        };
        let integer = |key: &str, value: u16| {
            format!("\t\t\t<key>{key}</key>\n\t\t\t<integer>{value}</integer>\n")
        };
        let boolean = |key: &str| format!("\t\t\t<key>{key}</key>\n\t\t\t<true/>\n");
        let mut payload = String::new();
        payload.push_str(&string(
            "EmailAccountDescription",
            &format!("{} ({device})", self.display_name),
        ));
        payload.push_str(&string("EmailAccountName", address));
        payload.push_str(&string("EmailAccountType", account_type));
        payload.push_str(&string("EmailAddress", address));
        payload.push_str(&string(
            "IncomingMailServerAuthentication",
            "EmailAuthPassword",
        ));
        payload.push_str(&string("IncomingMailServerHostName", &incoming.host));
        payload.push_str(&integer("IncomingMailServerPortNumber", incoming.port));
        payload.push_str(&boolean("IncomingMailServerUseSSL"));
        payload.push_str(&string("IncomingMailServerUsername", address));
        payload.push_str(&string("IncomingPassword", password));
        payload.push_str(&string(
            "OutgoingMailServerAuthentication",
            "EmailAuthPassword",
        ));
        payload.push_str(&string("OutgoingMailServerHostName", &self.smtp_host));
        payload.push_str(&integer("OutgoingMailServerPortNumber", out_port));
        payload.push_str(&boolean("OutgoingMailServerUseSSL"));
        payload.push_str(&string("OutgoingMailServerUsername", address));
        payload.push_str(&string("OutgoingPassword", password));
        payload.push_str(&string(
            "PayloadDescription",
            &format!("Email account {address}"),
        ));
        payload.push_str(&string("PayloadDisplayName", address));
        payload.push_str(&string("PayloadIdentifier", &format!("{id}.mail")));
        payload.push_str(&string("PayloadType", "com.apple.mail.managed"));
        payload.push_str(&string("PayloadUUID", &random_uuid()));
        payload.push_str("\t\t\t<key>PayloadVersion</key>\n\t\t\t<integer>1</integer>\n");
        Some(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \t<key>PayloadContent</key>\n\
         \t<array>\n\
         \t\t<dict>\n\
         {payload}\
         \t\t</dict>\n\
         \t</array>\n\
         \t<key>PayloadDescription</key>\n\
         \t<string>Sets up email for {addr} ({dev}).</string>\n\
         \t<key>PayloadDisplayName</key>\n\
         \t<string>{name} email: {addr}</string>\n\
         \t<key>PayloadIdentifier</key>\n\
         \t<string>{id}</string>\n\
         \t<key>PayloadOrganization</key>\n\
         \t<string>{name}</string>\n\
         \t<key>PayloadRemovalDisallowed</key>\n\
         \t<false/>\n\
         \t<key>PayloadType</key>\n\
         \t<string>Configuration</string>\n\
         \t<key>PayloadUUID</key>\n\
         \t<string>{uuid}</string>\n\
         \t<key>PayloadVersion</key>\n\
         \t<integer>1</integer>\n\
         </dict>\n\
         </plist>\n",
            addr = xml(address),
            dev = xml(device),
            uuid = random_uuid(),
        ))
    }
}

/// A reverse-DNS identifier stable for (server, address, device name):
/// the host's labels reversed, then a hash of the address and name (which
/// may hold anything).
fn profile_id(host: &str, address: &str, device: &str) -> String {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(address.as_bytes());
    ctx.update(b"\0");
    ctx.update(device.as_bytes());
    let hash = ctx.finish();
    let hex: String = hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let reversed: Vec<&str> = host
        .split('.')
        .rev()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .collect();
    let base = if reversed.is_empty() {
        "mailwarden".to_string()
    } else {
        reversed.join(".")
    };
    format!("{base}.mailwarden.email.d{hex}")
}

/// A random (version 4) UUID, uppercase as Apple writes them.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("randomness");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Outlook's error form ("600 Invalid Request"), for a body it cannot use,
/// the ActiveSync schema, or a GET. The same for every address.
fn outlook_error_xml(unix: u64) -> String {
    let day = unix % 86_400;
    let time = format!(
        "{:02}:{:02}:{:02}.0000000",
        day / 3600,
        day % 3600 / 60,
        day % 60
    );
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n\
         \x20 <Response>\n\
         \x20   <Error Time=\"{time}\" Id=\"1\">\n\
         \x20     <ErrorCode>600</ErrorCode>\n\
         \x20     <Message>Invalid Request</Message>\n\
         \x20     <DebugData />\n\
         \x20   </Error>\n\
         \x20 </Response>\n\
         </Autodiscover>\n"
    )
}

/// XML text or attribute value: the five special characters escaped,
/// control characters (not allowed in XML 1.0) dropped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The text of the first element named `local` (any namespace prefix) in
/// a small XML document. Text holding markup or entity references is
/// refused rather than decoded: a request never needs them.
fn element_text<'a>(doc: &'a str, local: &str) -> Option<&'a str> {
    let mut rest = doc;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let name_end = rest.find(|c: char| c == '>' || c == '/' || c.is_whitespace())?;
        let qname = &rest[..name_end];
        let name = qname.rsplit_once(':').map_or(qname, |(_, n)| n);
        if name != local {
            continue;
        }
        let open_end = rest.find('>')?;
        if rest[..open_end].ends_with('/') {
            return Some("");
        }
        let body = &rest[open_end + 1..];
        let text_end = body.find('<')?;
        let text = &body[..text_end];
        let close = format!("</{qname}>");
        if !body[text_end..].starts_with(&close) || text.contains('&') {
            return None;
        }
        return Some(text.trim());
    }
    None
}

/// `%XX` escapes decoded (a path segment); `None` if malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of query parameter `name` (case-insensitive name).
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

const XML: &str = "application/xml; charset=utf-8";
const JSON_TYPE: &str = "application/json";

/// The one answer for a domain that is not served, a malformed request,
/// or an address that does not parse.
fn not_found() -> Response {
    reply(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "Not found\n".into(),
    )
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        "Method not allowed\n".into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A POX request is a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

/// The body, up to `MAX_BODY` bytes; `None` when longer. A longer
/// Content-Length is refused before anything is read.
async fn read_body(headers: &HeaderMap, body: Body) -> Option<axum::body::Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return None;
    }
    axum::body::to_bytes(body, MAX_BODY).await.ok()
}

/// Every set-up path, any case (`is_setup_path`).
pub async fn answer(
    State(p): State<Portal>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Response {
    let setup = &p.inner.setup;
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let path = uri.path().to_ascii_lowercase();
    let get = method == Method::GET || method == Method::HEAD;
    match path.as_str() {
        THUNDERBIRD | THUNDERBIRD_WELL_KNOWN if get => thunderbird(setup, &query, &headers),
        THUNDERBIRD | THUNDERBIRD_WELL_KNOWN => method_not_allowed("GET, HEAD"),
        POX if method == Method::POST => match read_body(&headers, body).await {
            Some(body) => outlook(setup, &body, p.now()),
            None => reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                "Request too large\n".into(),
            ),
        },
        POX if get => reply(StatusCode::OK, XML, outlook_error_xml(p.now())),
        POX => method_not_allowed("POST, GET, HEAD"),
        _ if !get => method_not_allowed("GET, HEAD"),
        JSON => autodiscover_v2(setup, param(&query, "Email"), &query),
        _ if path.starts_with(JSON_V1) => {
            match uri.path().get(JSON_V1.len()..).and_then(percent_decode) {
                Some(address) => autodiscover_v2(setup, Some(&address), &query),
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// The address in `emailaddress` picks the domain; without it, the Host
/// the client asked (`autoconfig.<domain>` or `<domain>`).
fn thunderbird(setup: &MailSetup, query: &[(String, String)], headers: &HeaderMap) -> Response {
    let domain = match param(query, "emailaddress") {
        Some(a) => setup
            .served_address(a)
            .map(|a| address::domain_of(&a).to_string()),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
            .and_then(|h| address::normalize_domain(h).ok())
            .map(|h| match h.strip_prefix("autoconfig.") {
                Some(domain) => domain.to_string(),
                None => h,
            })
            .filter(|d| setup.serves(d)),
    };
    match domain {
        Some(d) => reply(StatusCode::OK, XML, setup.thunderbird_xml(&d)),
        None => not_found(),
    }
}

/// POX: the `<EMailAddress>` of the request. A body that is not a usable
/// request gets the error form; a foreign domain the 404.
fn outlook(setup: &MailSetup, body: &[u8], now: u64) -> Response {
    let error = || reply(StatusCode::OK, XML, outlook_error_xml(now));
    let Ok(doc) = std::str::from_utf8(body) else {
        return error();
    };
    // No DTDs, so no entities to expand.
    if doc.contains("<!") {
        return error();
    }
    let schema = element_text(doc, "AcceptableResponseSchema").unwrap_or("");
    if schema.contains("/mobilesync/") {
        return error();
    }
    let Some(raw) = element_text(doc, "EMailAddress") else {
        return error();
    };
    if address::normalize(raw).is_err() {
        return error();
    }
    match setup.served_address(raw) {
        Some(a) => reply(StatusCode::OK, XML, setup.outlook_xml(&a)),
        None => not_found(),
    }
}

/// Autodiscover v2: a pointer to `POX` for `Protocol=AutodiscoverV1`,
/// the same URL for every address of a served domain.
fn autodiscover_v2(
    setup: &MailSetup,
    address: Option<&str>,
    query: &[(String, String)],
) -> Response {
    if address.and_then(|a| setup.served_address(a)).is_none() {
        return not_found();
    }
    let protocol = param(query, "Protocol").unwrap_or("");
    if protocol.eq_ignore_ascii_case("AutodiscoverV1") {
        let body = serde_json::json!({"Protocol": "AutodiscoverV1", "Url": setup.pox_url});
        return reply(StatusCode::OK, JSON_TYPE, body.to_string());
    }
    let shown: String = protocol
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    let body = serde_json::json!({
        "ErrorCode": "InvalidProtocol",
        "ErrorMessage": format!(
            "The given protocol value '{shown}' is invalid. Supported values are 'AutodiscoverV1'"
        ),
    });
    reply(StatusCode::BAD_REQUEST, JSON_TYPE, body.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ConfigSource;

    fn setup(extra: &str) -> MailSetup {
        let text = format!(
            "[server]\nhostname = \"mail.example.net\"\n[accounts]\ntotp_issuer = \"Ex & Co\"\n\
             [delivery]\nmode = \"outbox\"\n[tls]\nself_signed = true\n{extra}"
        );
        let config =
            Config::from_toml(&text, PathBuf::from("/x"), ConfigSource::EmbeddedDefault).unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        MailSetup::new(
            &config,
            &[a("0.0.0.0:587"), a("[::]:587")],
            &[a("0.0.0.0:465")],
            a("127.0.0.1:8080"),
        )
    }

    #[test]
    fn thunderbird_lists_incoming_then_implicit_tls_then_starttls() {
        let s = setup("[autoconfig]\nimap_host = \"imap.example.net\"\n");
        let x = s.thunderbird_xml("example.com");
        assert!(x.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">"
        ));
        assert!(x.contains("<emailProvider id=\"example.com\">"));
        assert!(x.contains("<displayName>Ex &amp; Co</displayName>"));
        let imap = x.find("<hostname>imap.example.net</hostname>\n      <port>993</port>\n      <socketType>SSL</socketType>").unwrap();
        let ssl = x
            .find("<port>465</port>\n      <socketType>SSL</socketType>")
            .unwrap();
        let starttls = x
            .find("<port>587</port>\n      <socketType>STARTTLS</socketType>")
            .unwrap();
        assert!(imap < ssl && ssl < starttls, "{x}");
        assert_eq!(
            x.matches("<outgoingServer").count(),
            2,
            "ports are listed once: {x}"
        );
        assert!(!x.contains("pop3"));
    }

    #[test]
    fn outlook_picks_implicit_tls_and_escapes_the_login() {
        let s = setup("");
        let x = s.outlook_xml("o'hara&co@example.com");
        assert!(x.contains("<LoginName>o&apos;hara&amp;co@example.com</LoginName>"));
        assert!(x.contains("<Port>465</Port>"));
        assert!(x.contains("<Encryption>SSL</Encryption>"));
        assert!(!x.contains("<Type>IMAP</Type>"));
    }

    #[test]
    fn served_domains() {
        let any = setup("");
        assert!(any.serves("example.org"));
        assert!(!any.serves("localhost"));
        assert!(any.served_address("Alice@Example.ORG").is_some());
        assert!(any.served_address("alice@[192.0.2.1]").is_none());
        let listed = setup("[autoconfig]\ndomains = [\"example.com\"]\n");
        assert_eq!(
            listed.served_address("Bob@EXAMPLE.com").as_deref(),
            Some("bob@example.com")
        );
        assert!(listed.served_address("bob@example.org").is_none());
        assert!(listed.served_address("bob@mail.example.com").is_none());
    }

    #[test]
    fn pox_url_is_on_the_public_origin() {
        assert_eq!(
            setup("[portal]\npublic_url = \"https://mail.example.com/account\"\n").pox_url,
            "https://mail.example.com/autodiscover/autodiscover.xml"
        );
        assert_eq!(
            setup("").pox_url,
            "http://127.0.0.1:8080/autodiscover/autodiscover.xml"
        );
    }

    #[test]
    fn elements_are_found_without_decoding() {
        let doc = "<?xml version=\"1.0\"?><Autodiscover xmlns=\"x\"><Request>\
                   <EMailAddress> alice@example.com </EMailAddress>\
                   <a:AcceptableResponseSchema>s</a:AcceptableResponseSchema></Request></Autodiscover>";
        assert_eq!(element_text(doc, "EMailAddress"), Some("alice@example.com"));
        assert_eq!(element_text(doc, "AcceptableResponseSchema"), Some("s"));
        assert_eq!(element_text(doc, "Missing"), None);
        assert_eq!(
            element_text("<EMailAddress>a&amp;b@x.y</EMailAddress>", "EMailAddress"),
            None
        );
        assert_eq!(
            element_text("<EMailAddress>a<b/>@x.y</EMailAddress>", "EMailAddress"),
            None
        );
        assert_eq!(element_text("<EMailAddress>a@x.y", "EMailAddress"), None);
    }

    #[test]
    fn apple_profiles_escape_everything_and_keep_a_stable_identifier() {
        assert_eq!(setup("").apple_profile("a@example.com", "x", "pw"), None);
        assert!(!setup("").offers_apple_profile());
        let s = setup("[autoconfig]\npop3_host = \"pop.example.net\"\n");
        assert!(s.offers_apple_profile());
        let p = s
            .apple_profile("a@example.com", "<Kim's & \"Mac\">", "p<&>w")
            .unwrap();
        assert!(p.contains("<string>EmailTypePOP</string>"));
        assert!(
            p.contains("<key>IncomingMailServerPortNumber</key>\n\t\t\t<integer>995</integer>")
        );
        assert!(
            p.contains("<key>OutgoingMailServerPortNumber</key>\n\t\t\t<integer>465</integer>")
        );
        assert!(p.contains("<string>p&lt;&amp;&gt;w</string>"));
        assert!(p.contains("&lt;Kim&apos;s &amp; &quot;Mac&quot;&gt;"));
        assert!(p.contains("<string>Ex &amp; Co email: a@example.com</string>"));
        assert!(!p.contains("<Kim") && !p.contains("p<&"));
        let id = |p: &str| {
            let i = p.rfind("<key>PayloadIdentifier</key>").unwrap();
            p[i..].lines().nth(1).unwrap().trim().to_string()
        };
        let again = s
            .apple_profile("a@example.com", "<Kim's & \"Mac\">", "other")
            .unwrap();
        assert_eq!(id(&p), id(&again));
        assert!(id(&p).starts_with("<string>net.example.mail.mailwarden.email.d"));
        let other = s.apple_profile("a@example.com", "Phone", "pw").unwrap();
        assert_ne!(id(&p), id(&other));
        let uuid = random_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(uuid, random_uuid());
    }

    #[test]
    fn setup_paths_and_escapes() {
        for p in [
            "/mail/config-v1.1.xml",
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            "/Autodiscover/Autodiscover.xml",
            "/autodiscover/autodiscover.json",
            "/AutoDiscover/autodiscover.json/v1.0/a@b.c",
        ] {
            assert!(is_setup_path(p), "{p}");
            let lower = p.to_ascii_lowercase();
            let base = lower.split("/v1.0/").next().unwrap();
            assert!(crate::config::SETUP_PATHS.contains(&base), "{p}");
        }
        assert!(!is_setup_path("/autodiscover/autodiscover.json/v1.0/"));
        assert!(!is_setup_path("/autodiscover/"));
        assert_eq!(
            percent_decode("alice%40example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(xml("a\u{1}<b>\"'&"), "a&lt;b&gt;&quot;&apos;&amp;");
        assert_eq!(
            outlook_error_xml(1_800_000_000)
                .matches("Time=\"08:00:00.0000000\"")
                .count(),
            1
        );
    }
}
