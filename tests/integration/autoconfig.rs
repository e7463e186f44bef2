//! Mail program set-up over real HTTP: Thunderbird autoconfig, Outlook
//! autodiscover (POX and the JSON v2 pointer), on the portal listener's
//! root. The answers must name the server's real ports and TLS modes and
//! never tell whether an address exists.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::web::{Resp, Web};
use crate::common::{ALICE, PASSWORD, TestServer};

const IMAP: &str = "[autoconfig]\nimap_host = \"imap.test.example\"\n";
const WELL_KNOWN: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";
const POX: &str = "/autodiscover/autodiscover.xml";

async fn server(extra: &str) -> TestServer {
    let server = TestServer::start_with(extra).await;
    server.add_account(ALICE, PASSWORD).await;
    server
}

fn web(server: &TestServer) -> Web {
    Web::new(server.running().portal)
}

/// Thunderbird's request, as captured: the address URL-encoded.
async fn thunderbird(w: &mut Web, path: &str, address: &str) -> Resp {
    w.get(&format!(
        "{path}?emailaddress={}",
        address.replace('@', "%40")
    ))
    .await
}

fn pox_request(address: &str, schema: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\r\n\
         <Request><EMailAddress>{address}</EMailAddress>\r\n\
         <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/{schema}</AcceptableResponseSchema>\r\n\
         </Request></Autodiscover>\r\n"
    )
}

const OUTLOOK_SCHEMA: &str = "outlook/responseschema/2006a";

async fn post_xml(w: &mut Web, path: &str, body: String) -> Resp {
    w.request("POST", path, Some(body), &[("Content-Type", "text/xml")])
        .await
}

fn assert_setup_headers(r: &Resp, content_type: &str) {
    assert_eq!(r.header("content-type"), Some(content_type), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
}

#[tokio::test]
async fn thunderbird_is_told_the_listeners_ports_and_tls_modes() {
    let server = server(IMAP).await;
    let mut w = web(&server);
    let r = thunderbird(&mut w, WELL_KNOWN, ALICE).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_setup_headers(&r, "application/xml; charset=utf-8");
    let doc = xml::parse(&r.body);
    assert_eq!(doc.name, "clientConfig");
    assert_eq!(doc.attr("version"), Some("1.1"));
    let provider = doc.child("emailProvider");
    assert_eq!(provider.attr("id"), Some("example.com"));
    assert_eq!(provider.child("domain").text, "example.com");

    let servers = |kind: &str| -> Vec<[String; 5]> {
        provider
            .children(kind)
            .map(|s| {
                [
                    "hostname",
                    "port",
                    "socketType",
                    "username",
                    "authentication",
                ]
                .map(|f| s.child(f).text.clone())
            })
            .collect()
    };
    let row = |host: &str, port: u16, socket: &str| {
        [
            host.to_string(),
            port.to_string(),
            socket.to_string(),
            "%EMAILADDRESS%".to_string(),
            "password-cleartext".to_string(),
        ]
    };
    assert_eq!(
        servers("outgoingServer"),
        [
            row("mail.test.example", server.submissions().port(), "SSL"),
            row("mail.test.example", server.submission().port(), "STARTTLS"),
        ]
    );
    assert!(
        provider
            .children("outgoingServer")
            .all(|s| s.attr("type") == Some("smtp"))
    );
    assert_eq!(
        servers("incomingServer"),
        [row("imap.test.example", 993, "SSL")]
    );
    assert_eq!(provider.child("incomingServer").attr("type"), Some("imap"));

    // Any address of the domain, existing or not, gets the same bytes;
    // so does the other path, and a request with no address at all
    // (the domain from the Host asked: autoconfig.<domain>).
    for (path, address) in [
        (WELL_KNOWN, "nobody@example.com"),
        (WELL_KNOWN, "Alice@EXAMPLE.com"),
        ("/mail/config-v1.1.xml", ALICE),
        ("/mail/config-v1.1.xml", "nobody@example.com"),
    ] {
        let other = thunderbird(&mut w, path, address).await;
        assert_eq!(
            (other.status, &other.body),
            (200, &r.body),
            "{path} {address}"
        );
    }
    for path in ["/mail/config-v1.1.xml", WELL_KNOWN] {
        let by_host = w
            .request("GET", path, None, &[("Host", "AutoConfig.Example.com:443")])
            .await;
        assert_eq!((by_host.status, &by_host.body), (200, &r.body), "{path}");
    }
    // Another domain: the same answer for that domain.
    let other = thunderbird(&mut w, WELL_KNOWN, "bob@example.org").await;
    assert_eq!(other.body, r.body.replace("example.com", "example.org"));
}

#[tokio::test]
async fn with_a_list_of_domains_every_other_request_gets_the_same_404() {
    let server = server("[autoconfig]\ndomains = [\"example.com\"]\n").await;
    let mut w = web(&server);
    let ok = thunderbird(&mut w, WELL_KNOWN, ALICE).await;
    assert_eq!(ok.status, 200);
    // No incoming server configured: only the outgoing ones.
    assert_eq!(
        xml::parse(&ok.body)
            .child("emailProvider")
            .children("incomingServer")
            .count(),
        0
    );

    let refused = thunderbird(&mut w, WELL_KNOWN, "alice@example.org").await;
    assert_eq!(refused.status, 404);
    assert_setup_headers(&refused, "text/plain; charset=utf-8");
    for r in [
        thunderbird(&mut w, WELL_KNOWN, "nobody@example.org").await,
        thunderbird(&mut w, "/mail/config-v1.1.xml", "not-an-address").await,
        thunderbird(&mut w, WELL_KNOWN, "alice@sub.example.com").await,
        w.request(
            "GET",
            WELL_KNOWN,
            None,
            &[("Host", "autoconfig.example.org")],
        )
        .await,
        w.request("GET", WELL_KNOWN, None, &[("Host", "127.0.0.1:8080")])
            .await,
        post_xml(&mut w, POX, pox_request("bob@example.org", OUTLOOK_SCHEMA)).await,
        w.get("/autodiscover/autodiscover.json/v1.0/bob@example.org?Protocol=AutodiscoverV1")
            .await,
        w.get("/autodiscover/autodiscover.json?Protocol=AutodiscoverV1")
            .await,
    ] {
        assert_eq!((r.status, &r.body), (404, &refused.body), "{r:?}");
    }
    // A method the path does not take.
    let r = w
        .request("POST", WELL_KNOWN, Some(String::new()), &[])
        .await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
}

#[tokio::test]
async fn outlook_pox_is_told_the_implicit_tls_port_and_the_login_name() {
    let server = server(IMAP).await;
    let mut w = web(&server);
    let r = post_xml(&mut w, POX, pox_request(ALICE, OUTLOOK_SCHEMA)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_setup_headers(&r, "application/xml; charset=utf-8");
    let doc = xml::parse(&r.body);
    assert_eq!(doc.name, "Autodiscover");
    let account = doc.child("Response").child("Account");
    assert_eq!(account.child("AccountType").text, "email");
    assert_eq!(account.child("Action").text, "settings");
    let protocol = |kind: &str| {
        account
            .children("Protocol")
            .find(|p| p.child("Type").text == kind)
            .unwrap_or_else(|| panic!("no {kind} in {}", r.body))
    };
    let smtp = protocol("SMTP");
    assert_eq!(smtp.child("Server").text, "mail.test.example");
    assert_eq!(
        smtp.child("Port").text,
        server.submissions().port().to_string()
    );
    assert_eq!(smtp.child("Encryption").text, "SSL");
    assert_eq!(smtp.child("LoginName").text, ALICE);
    assert_eq!(smtp.child("SPA").text, "off");
    assert_eq!(smtp.child("AuthRequired").text, "on");
    let imap = protocol("IMAP");
    assert_eq!(
        [
            &imap.child("Server").text,
            &imap.child("Port").text,
            &imap.child("SSL").text
        ],
        ["imap.test.example", "993", "on"]
    );
    assert_eq!(imap.child("LoginName").text, ALICE);

    // An unknown address: the same answer but for the echoed address.
    // Outlook varies the path's case.
    let nobody = post_xml(
        &mut w,
        "/Autodiscover/Autodiscover.xml",
        pox_request("Nobody@Example.com", OUTLOOK_SCHEMA),
    )
    .await;
    assert_eq!(nobody.status, 200);
    assert_eq!(nobody.body, r.body.replace(ALICE, "nobody@example.com"));

    // The echoed address is escaped.
    let odd = post_xml(
        &mut w,
        POX,
        pox_request("o'hara@example.com", OUTLOOK_SCHEMA),
    )
    .await;
    assert!(
        odd.body
            .contains("<LoginName>o&apos;hara@example.com</LoginName>"),
        "{}",
        odd.body
    );
    assert_eq!(
        xml::parse(&odd.body)
            .child("Response")
            .child("Account")
            .child("Protocol")
            .child("LoginName")
            .text,
        "o'hara@example.com"
    );

    // What it cannot use gets the error form (200, code 600), the same
    // for every request: ActiveSync's schema, entities, markup in the
    // address, no address, a GET.
    let mut errors = vec![
        post_xml(
            &mut w,
            POX,
            pox_request(ALICE, "mobilesync/responseschema/2006"),
        )
        .await,
        post_xml(
            &mut w,
            POX,
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY e \"x\">]>{}",
                pox_request("&e;@example.com", OUTLOOK_SCHEMA)
            ),
        )
        .await,
        post_xml(
            &mut w,
            POX,
            pox_request("a<b/>@example.com", OUTLOOK_SCHEMA),
        )
        .await,
        post_xml(
            &mut w,
            POX,
            pox_request("a&amp;b@example.com", OUTLOOK_SCHEMA),
        )
        .await,
        post_xml(
            &mut w,
            POX,
            pox_request(&format!("{}@example.com", "a".repeat(250)), OUTLOOK_SCHEMA),
        )
        .await,
        post_xml(&mut w, POX, "not xml".into()).await,
        w.get(POX).await,
    ];
    for e in &mut errors {
        assert_eq!(e.status, 200, "{e:?}");
        assert_setup_headers(e, "application/xml; charset=utf-8");
        let doc = xml::parse(&e.body);
        let error = doc.child("Response").child("Error");
        assert_eq!(error.child("ErrorCode").text, "600");
        assert_eq!(error.child("Message").text, "Invalid Request");
        // Only the time of day may differ.
        let time = error.attr("Time").unwrap().to_string();
        e.body = e.body.replace(&time, "TIME");
    }
    assert!(errors.iter().all(|e| e.body == errors[0].body));

    // The body is bounded (16 KiB): refused by its Content-Length alone.
    let head = format!(
        "POST {POX} HTTP/1.0\r\nHost: portal.test\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        20 * 1024
    );
    let mut tcp = tokio::net::TcpStream::connect(server.running().portal)
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    // Answered with no body sent: read the head only (the connection may
    // stay open for the body).
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within 20s");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.get(9..12), Some("413"), "{answer}");
}

#[tokio::test]
async fn autodiscover_v2_points_to_the_pox_endpoint() {
    let server = server("").await;
    let mut w = web(&server);
    let expected = serde_json::json!({
        "Protocol": "AutodiscoverV1",
        "Url": format!("http://{}/autodiscover/autodiscover.xml", server.running().portal),
    });
    let mut bodies = Vec::new();
    for path in [
        "/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=AutodiscoverV1",
        "/autodiscover/autodiscover.json/v1.0/nobody%40example.com?Protocol=autodiscoverv1",
        "/autodiscover/autodiscover.json?Email=alice%40example.com&Protocol=AutodiscoverV1",
        "/AutoDiscover/AutoDiscover.json?email=nobody@example.com&protocol=AutodiscoverV1",
    ] {
        let r = w.get(path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_setup_headers(&r, "application/json");
        let json: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
        assert_eq!(json, expected, "{path}");
        bodies.push(r.body);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]));

    let r = w
        .get("/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=Active%3CSync%3E")
        .await;
    assert_eq!(r.status, 400);
    assert_setup_headers(&r, "application/json");
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(json["ErrorCode"], "InvalidProtocol");
    assert_eq!(
        json["ErrorMessage"],
        "The given protocol value 'ActiveSync' is invalid. Supported values are 'AutodiscoverV1'"
    );
}

#[tokio::test]
async fn with_a_public_url_path_set_up_still_answers_at_the_root() {
    let server = server("[portal]\npublic_url = \"https://mail.test.example/account\"\n").await;
    let mut w = web(&server);
    let r = thunderbird(&mut w, WELL_KNOWN, ALICE).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        thunderbird(&mut w, "/mail/config-v1.1.xml", ALICE)
            .await
            .body,
        r.body
    );
    let pox = post_xml(&mut w, POX, pox_request(ALICE, OUTLOOK_SCHEMA)).await;
    assert_eq!(pox.status, 200);
    assert!(pox.body.contains("<Type>SMTP</Type>"), "{}", pox.body);
    let json = w
        .get("/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=AutodiscoverV1")
        .await;
    let json: serde_json::Value = serde_json::from_str(&json.body).expect("JSON");
    assert_eq!(
        json["Url"],
        "https://mail.test.example/autodiscover/autodiscover.xml"
    );
    // Not under the portal's path, and the portal is still there.
    assert_eq!(
        thunderbird(&mut w, "/account/mail/config-v1.1.xml", ALICE)
            .await
            .status,
        404
    );
    assert_eq!(w.get("/account/").await.status, 200);
}

/// Just enough XML for these answers: elements, double-quoted attributes,
/// text with the five predefined entities, an XML declaration. Anything
/// else (and any mismatched tag) fails the test.
mod xml {
    #[derive(Debug)]
    pub struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Element>,
        pub text: String,
    }

    impl Element {
        pub fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        pub fn children<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Element> {
            let name = name.to_string();
            self.children.iter().filter(move |c| c.name == name)
        }

        pub fn child(&self, name: &str) -> &Element {
            self.children(name)
                .next()
                .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
        }
    }

    pub fn parse(doc: &str) -> Element {
        let mut rest = doc.trim_start();
        if let Some(decl) = rest.strip_prefix("<?xml ") {
            let end = decl.find("?>").expect("end of the XML declaration");
            rest = decl[end + 2..].trim_start();
        }
        let (root, after) = element(rest);
        assert!(after.trim().is_empty(), "text after the root: {after:?}");
        root
    }

    pub fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find(';').expect("an entity ends with ;") + i;
            out.push(match &rest[i + 1..end] {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                other => panic!("unknown entity &{other};"),
            });
            rest = &rest[end + 1..];
        }
        assert!(!rest.contains(['<', '>']), "markup in text: {rest:?}");
        out + rest
    }

    /// One element at the start of `s`; returns it and what follows.
    fn element(s: &str) -> (Element, &str) {
        let s = s.strip_prefix('<').expect("an element starts with <");
        let name_end = s
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .expect("a tag name");
        let name = s[..name_end].to_string();
        assert!(!name.is_empty(), "empty tag name");
        let mut rest = &s[name_end..];
        let mut attrs = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix("/>") {
                let e = Element {
                    name,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                };
                return (e, after);
            }
            if let Some(after) = rest.strip_prefix('>') {
                rest = after;
                break;
            }
            let eq = rest.find('=').expect("attribute =");
            let key = rest[..eq].trim().to_string();
            let value = rest[eq + 1..]
                .strip_prefix('"')
                .expect("a quoted attribute");
            let close = value.find('"').expect("attribute's closing quote");
            attrs.push((key, unescape(&value[..close])));
            rest = &value[close + 1..];
        }
        let mut children = Vec::new();
        let mut text = String::new();
        loop {
            let lt = rest.find('<').expect("a closing tag");
            text.push_str(&unescape(&rest[..lt]));
            rest = &rest[lt..];
            if let Some(after) = rest.strip_prefix("</") {
                let after = after
                    .strip_prefix(name.as_str())
                    .and_then(|a| a.strip_prefix('>'))
                    .unwrap_or_else(|| panic!("</{name}> expected at {rest:.40}"));
                let text = if children.is_empty() {
                    text
                } else {
                    text.trim().to_string()
                };
                return (
                    Element {
                        name,
                        attrs,
                        children,
                        text,
                    },
                    after,
                );
            }
            assert!(
                !rest.starts_with("<!") && !rest.starts_with("<?"),
                "no DTD or PI: {rest:.40}"
            );
            let (child, after) = element(rest);
            children.push(child);
            rest = after;
        }
    }

    #[test]
    fn the_checker_refuses_broken_xml() {
        assert_eq!(
            parse("<a x=\"1 &amp; 2\"><b>t&lt;</b><c/></a>")
                .child("b")
                .text,
            "t<"
        );
        for bad in [
            "<a><b></a>",
            "<a>x &nbsp; y</a>",
            "<a x=1></a>",
            "<a></a><b/>",
            "<a>1 < 2</a>",
        ] {
            assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "{bad}");
        }
    }
}

/// A minimal plist reader for the profile: `<dict>` of `<key>` and
/// `<string>`, `<integer>`, `<true/>`, `<false/>`, `<array>` of dicts.
/// Panics on anything else, so the profile must be well-formed plist.
#[derive(Debug, Clone, PartialEq)]
enum Plist {
    Str(String),
    Int(i64),
    Bool(bool),
    Array(Vec<Plist>),
    Dict(Vec<(String, Plist)>),
}

impl Plist {
    fn get(&self, key: &str) -> &Plist {
        let Plist::Dict(entries) = self else {
            panic!("not a dict: {self:?}")
        };
        let mut found = entries.iter().filter(|(k, _)| k == key);
        let v = &found.next().unwrap_or_else(|| panic!("no {key}")).1;
        assert!(found.next().is_none(), "{key} twice");
        v
    }
    fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Plist::Str(s) => s,
            v => panic!("{key}: {v:?}"),
        }
    }
}

fn unescape(s: &str) -> String {
    xml::unescape(s)
}

fn parse_plist(doc: &str) -> Plist {
    let doc = doc
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">")
        .expect("plist prologue");
    let mut rest = doc.trim_start();
    let value = parse_value(&mut rest);
    assert_eq!(rest.trim(), "</plist>");
    value
}

fn take<'a>(rest: &mut &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let s = rest.strip_prefix(&open)?;
    let close = format!("</{tag}>");
    let end = s.find(&close).expect("closed");
    *rest = s[end + close.len()..].trim_start();
    Some(&s[..end])
}

fn parse_value(rest: &mut &str) -> Plist {
    if let Some(s) = rest.strip_prefix("<dict>") {
        *rest = s.trim_start();
        let mut entries = Vec::new();
        while let Some(k) = take(rest, "key") {
            entries.push((unescape(k), parse_value(rest)));
        }
        *rest = rest.strip_prefix("</dict>").expect("</dict>").trim_start();
        Plist::Dict(entries)
    } else if let Some(s) = rest.strip_prefix("<array>") {
        *rest = s.trim_start();
        let mut items = Vec::new();
        while !rest.starts_with("</array>") {
            items.push(parse_value(rest));
        }
        *rest = rest["</array>".len()..].trim_start();
        Plist::Array(items)
    } else if let Some(s) = take(rest, "string") {
        Plist::Str(unescape(s))
    } else if let Some(s) = take(rest, "integer") {
        Plist::Int(s.parse().expect("integer"))
    } else if let Some(s) = rest.strip_prefix("<true/>") {
        *rest = s.trim_start();
        Plist::Bool(true)
    } else if let Some(s) = rest.strip_prefix("<false/>") {
        *rest = s.trim_start();
        Plist::Bool(false)
    } else {
        panic!("unexpected plist at {rest:.60}")
    }
}

/// The device password on the page that shows it once.
fn shown_password(page: &str) -> String {
    let marker = r#"<code class="secret" id="new-device-password">"#;
    let start = page.find(marker).expect("the new password is shown") + marker.len();
    let end = page[start..].find("</code>").unwrap() + start;
    page[start..end].to_string()
}

#[tokio::test]
async fn a_new_device_password_downloads_once_as_an_apple_profile_that_works() {
    use crate::common::client::Client;
    use crate::common::server_with_clock;
    use crate::common::web::{account_page, act, enable_2fa_with, otp_step, sign_in};
    use mailwarden::accounts::totp;
    use mailwarden::clock::Clock;

    const PROFILE: &str = "/my-account/devices/profile";
    let (server, clock) = server_with_clock(IMAP).await;
    let mut w = web(&server);
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
    let (secret, _) = enable_2fa_with(&mut w, |secret| {
        clock.advance(Duration::from_secs(30));
        totp::code_at(secret, clock.unix())
    })
    .await;
    let name = "Kim's <iPhone> & \"iPad\"";
    act(&mut w, "/my-account/devices/create", &[("name", name)]).await;
    let page = account_page(&mut w).await;
    let password = shown_password(&page.body);
    assert!(
        page.body
            .contains("Download for iPhone, iPad or Mac (.mobileconfig)"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!("action=\"{PROFILE}\"")));
    let csrf = page.csrf();

    // Another session (signed in, right CSRF for its own page) has nothing.
    let mut other = web(&server);
    sign_in(&mut other, ALICE, PASSWORD).await;
    clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, clock.unix());
    let r = otp_step(&mut other, &code).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
    let other_csrf = account_page(&mut other).await.csrf();
    let r = other.post(PROFILE, &[("csrf", &other_csrf)]).await;
    assert_eq!(r.status, 410, "{r:?}");
    assert!(!r.body.contains(&password));
    // Without the session's token: 403, and the profile is still there.
    let r = w.post(PROFILE, &[("csrf", "wrong")]).await;
    assert_eq!(r.status, 403, "{r:?}");

    let r = w.post(PROFILE, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-apple-aspen-config")
    );
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"alice@example.com.mobileconfig\"")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let profile = parse_plist(&r.body);
    assert_eq!(profile.str("PayloadType"), "Configuration");
    assert_eq!(profile.get("PayloadVersion"), &Plist::Int(1));
    let Plist::Array(content) = profile.get("PayloadContent") else {
        panic!("{profile:?}")
    };
    assert_eq!(content.len(), 1);
    let mail = &content[0];
    assert_eq!(mail.str("PayloadType"), "com.apple.mail.managed");
    assert_eq!(mail.str("EmailAccountType"), "EmailTypeIMAP");
    assert_eq!(mail.str("EmailAddress"), ALICE);
    assert_eq!(mail.str("IncomingMailServerHostName"), "imap.test.example");
    assert_eq!(mail.get("IncomingMailServerPortNumber"), &Plist::Int(993));
    assert_eq!(mail.get("IncomingMailServerUseSSL"), &Plist::Bool(true));
    assert_eq!(mail.str("OutgoingMailServerHostName"), "mail.test.example");
    assert_eq!(
        mail.get("OutgoingMailServerPortNumber"),
        &Plist::Int(i64::from(server.submissions().port()))
    );
    assert_eq!(mail.get("OutgoingMailServerUseSSL"), &Plist::Bool(true));
    assert_eq!(
        mail.str("OutgoingMailServerAuthentication"),
        "EmailAuthPassword"
    );
    assert_eq!(mail.str("OutgoingMailServerUsername"), ALICE);
    assert_eq!(mail.str("OutgoingPassword"), password);
    assert!(mail.str("EmailAccountDescription").contains(name));
    let uuid = profile.str("PayloadUUID");
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_ne!(uuid, mail.str("PayloadUUID"));
    let id = profile.str("PayloadIdentifier").to_string();
    assert!(id.starts_with("example.test.mail."), "{id}");
    assert!(mail.str("PayloadIdentifier").starts_with(&id));

    // Once only: a second download has nothing.
    let r = w.post(PROFILE, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 410, "{r:?}");
    assert!(!r.body.contains(&password));
    // The page no longer offers it.
    let page = account_page(&mut w).await;
    assert!(!page.body.contains(".mobileconfig"));

    // The password in the profile authenticates over SMTP.
    let (mut c, greeting) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.ehlo().await;
    let r = c.auth_plain(ALICE, mail.str("OutgoingPassword")).await;
    assert_eq!(r.line(), "235 2.7.0 Authentication successful");
}

#[tokio::test]
async fn without_an_incoming_server_no_profile_is_offered() {
    use crate::common::server_with_clock;
    use crate::common::web::{account_page, act, enable_2fa_with, sign_in};
    use mailwarden::accounts::totp;
    use mailwarden::clock::Clock;

    let (server, clock) = server_with_clock("").await;
    let mut w = web(&server);
    sign_in(&mut w, ALICE, PASSWORD).await;
    enable_2fa_with(&mut w, |secret| {
        clock.advance(Duration::from_secs(30));
        totp::code_at(secret, clock.unix())
    })
    .await;
    act(&mut w, "/my-account/devices/create", &[("name", "Mac")]).await;
    let page = account_page(&mut w).await;
    shown_password(&page.body);
    assert!(!page.body.contains(".mobileconfig"));
    let r = w
        .post("/my-account/devices/profile", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(r.status, 410, "{r:?}");
}

/// With a certificate configured, the profile is CMS-signed with it: the
/// signature verifies (OpenSSL, when installed) and carries the profile.
#[tokio::test]
async fn with_a_configured_certificate_the_profile_is_signed() {
    use crate::common::web::{account_page, act, enable_2fa_with, sign_in};
    use mailwarden::accounts::totp;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (
        certs.path().join("fullchain.pem"),
        certs.path().join("privkey.pem"),
    );
    mailwarden::tls::write_self_signed(&cert, &key, "mail.test.example").unwrap();
    let text = crate::common::test_config_text(IMAP).replace(
        "self_signed = true",
        &format!("cert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
    );
    let server = TestServer::start_config(&text, mailwarden::server::Overrides::default()).await;
    server.add_account(ALICE, PASSWORD).await;
    let mut w = web(&server);
    sign_in(&mut w, ALICE, PASSWORD).await;
    enable_2fa_with(&mut w, |secret| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        totp::code_at(secret, now.as_secs())
    })
    .await;
    act(&mut w, "/my-account/devices/create", &[("name", "iPhone")]).await;
    let page = account_page(&mut w).await;
    let password = shown_password(&page.body);
    let r = w
        .post("/my-account/devices/profile", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // DER, not the plist itself: a SEQUENCE that holds the profile.
    assert_eq!(r.bytes[0], 0x30);
    assert!(!r.bytes.starts_with(b"<?xml"));
    let signed = certs.path().join("profile.der");
    std::fs::write(&signed, &r.bytes).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["cms", "-verify", "-inform", "DER", "-noverify", "-in"])
        .arg(&signed)
        .output();
    match verified {
        Ok(out) if out.status.code().is_some() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "openssl: {stderr}");
            let plist = String::from_utf8(out.stdout).unwrap();
            assert!(plist.starts_with("<?xml"), "{plist}");
            assert!(
                plist.contains(&format!("<string>{password}</string>")),
                "{plist}"
            );
        }
        _ => println!("openssl not installed: the signature was not checked"),
    }
}
