//! A deliberately small web client for portal tests: one HTTP/1.0 request
//! per connection, a cookie jar of one cookie, forms as
//! application/x-www-form-urlencoded (unless a request's headers name
//! another Content-Type, or a Host). It never follows redirects, so tests
//! see every 303.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body as sent (`body` is it read as UTF-8).
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }

    /// The page's CSRF token (every form carries the same one).
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }

    /// The body with every CSRF token replaced by `CSRF`.
    pub fn masked(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let mut out = String::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find(marker) {
            out.push_str(&rest[..i + marker.len()]);
            out.push_str("CSRF");
            rest = &rest[i + marker.len()..];
            rest = &rest[rest.find('"').unwrap()..];
        }
        out.push_str(rest);
        out
    }
}

pub struct Web {
    pub addr: SocketAddr,
    pub cookie_name: String,
    /// The session cookie's value, as last set by the server.
    pub cookie: Option<String>,
    /// Sent with every request (e.g. X-Forwarded-For).
    pub extra_headers: Vec<(String, String)>,
    /// The loopback address requests come from (another client network).
    pub source: Option<std::net::IpAddr>,
}

impl Web {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            cookie_name: "mw_session".into(),
            cookie: None,
            extra_headers: Vec::new(),
            source: None,
        }
    }

    /// A browser on another network: its requests come from `source`
    /// (an address in 127.0.0.0/8).
    pub fn from(addr: SocketAddr, source: &str) -> Self {
        Self {
            source: Some(source.parse().expect("source address")),
            ..Self::new(addr)
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, None, &[]).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.post_with(path, fields, &[]).await
    }

    pub async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        self.request("POST", path, Some(form_encode(fields)), headers)
            .await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let given = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        let mut req = format!("{method} {path} HTTP/1.0\r\n");
        if !given("host") {
            req.push_str("Host: portal.test\r\n");
        }
        if let Some(c) = &self.cookie {
            req.push_str(&format!("Cookie: {}={c}\r\n", self.cookie_name));
        }
        for (k, v) in &self.extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = &body {
            if !given("content-type") {
                req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            }
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        if let Some(body) = &body {
            req.push_str(body);
        }
        let resp = tokio::time::timeout(Duration::from_secs(20), async {
            let mut tcp = match self.source {
                None => TcpStream::connect(self.addr).await.expect("connect"),
                Some(source) => {
                    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                    socket
                        .bind(SocketAddr::new(source, 0))
                        .expect("bind source");
                    socket.connect(self.addr).await.expect("connect")
                }
            };
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            tcp.read_to_end(&mut raw).await.unwrap();
            raw
        })
        .await
        .expect("portal answers within 20s");
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP head");
        let head = String::from_utf8(resp[..split].to_vec()).expect("UTF-8 head");
        let bytes = resp[split + 4..].to_vec();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("set-cookie")
                && let Some(value) = v
                    .split(';')
                    .next()
                    .and_then(|kv| kv.strip_prefix(&format!("{}=", self.cookie_name)))
            {
                self.cookie = Some(value.to_string());
            }
        }
        Resp {
            status,
            headers,
            body,
            bytes,
        }
    }
}

pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET / then POST /signin; returns the POST's answer.
pub async fn sign_in(w: &mut Web, email: &str, password: &str) -> Resp {
    let page = w.get("/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    w.post(
        "/signin",
        &[
            ("csrf", &page.csrf()),
            ("email", email),
            ("password", password),
        ],
    )
    .await
}

pub async fn account_page(w: &mut Web) -> Resp {
    let r = w.get("/my-account").await;
    assert_eq!(r.status, 200, "{r:?}");
    r
}

/// POSTs a My account form with the page's CSRF token; expects 303.
pub async fn act(w: &mut Web, path: &str, fields: &[(&str, &str)]) -> Resp {
    let csrf = account_page(w).await.csrf();
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let r = w.post(path, &all).await;
    assert_eq!(r.status, 303, "POST {path}: {r:?}");
    r
}

pub fn key_on(page: &str) -> Option<String> {
    let start = page.find(r#"<code class="key">"#)? + r#"<code class="key">"#.len();
    let end = page[start..].find("</code>")? + start;
    Some(page[start..end].to_string())
}

/// Enable 2FA, QR Code, Verify, all through the portal, with the code
/// `code_for` gives for the secret; returns the secret and the page shown
/// after Verify (with its one-time notices).
pub async fn enable_2fa_with(
    w: &mut Web,
    code_for: impl FnOnce(&[u8]) -> String,
) -> (Vec<u8>, String) {
    act(w, "/my-account/2fa/enable", &[]).await;
    let r = act(w, "/my-account/2fa/qr", &[]).await;
    assert_eq!(r.location(), "/my-account#qr");
    let key = key_on(&account_page(w).await.body).expect("the key is shown");
    let secret = crate::common::base32_decode(&key);
    let code = code_for(&secret);
    act(w, "/my-account/2fa/verify", &[("otp", &code)]).await;
    let page = account_page(w).await.body;
    assert!(page.contains("2FA enabled"));
    (secret, page)
}

/// The OTP step after the password: its page's CSRF token, then `code`.
pub async fn otp_step(w: &mut Web, code: &str) -> Resp {
    let csrf = w.get("/signin/otp").await.csrf();
    w.post("/signin/otp", &[("csrf", &csrf), ("otp", code)])
        .await
}
