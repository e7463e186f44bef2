//! The "My account" web portal (DESIGN.md, "Web portal"): a blocked user
//! signs in, changes the password, enables 2FA and creates device
//! passwords, exactly as the help page says. axum, server-rendered HTML, no
//! JavaScript.
//!
//! - `session`: in-memory web sessions (random ids, CSRF token, expiry).
//! - `signin_guard`: sign-in failures per client and per account.
//! - `pages`: the routes, a file a page; `extract`: the checks every form
//!   POST starts with; `reply`: how the routes answer.
//! - `html`: the pages' HTML; `style.css`: the look.
//!
//! Every change goes through `Accounts` with `Origin::portal(client_ip)`,
//! so the unblock rule can ignore changes from a block's abuse networks.

mod extract;
pub mod html;
pub mod limiter;
mod pages;
mod reply;
pub mod session;
pub mod signin_guard;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use ipnet::IpNet;

use crate::accounts::{Accounts, Passwords};
use crate::clock::Clock;
use crate::config::Config;
use crate::events::Events;
use pages::{account, devices, otp, password, signin, two_factor};
use session::SessionStore;
use signin_guard::SigninGuard;

/// The cookie name behind an https `public_url`.
pub const SECURE_COOKIE: &str = "__Host-mw_session";
/// The cookie name for plain-http loopback development.
pub const DEV_COOKIE: &str = "mw_session";

/// The portal's view of the configuration, checked at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `public_url` is https: the cookie is `__Host-` and `Secure`.
    pub secure: bool,
    /// The path of `public_url` without a trailing slash ("" for the root).
    pub prefix: String,
    pub trusted_proxies: Vec<IpNet>,
    pub idle_timeout: Duration,
}

impl Settings {
    /// Refuses a portal that would send passwords in clear text over a
    /// network: a non-loopback bind needs an https `public_url` (TLS ends
    /// at a reverse proxy in front of the portal).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let portal = &config.portal;
        let (secure, prefix) = match &portal.public_url {
            Some(url) => parse_public_url(url)?,
            None => (false, String::new()),
        };
        let trusted_proxies = portal
            .trusted_proxies
            .iter()
            .map(|s| parse_network(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bind = config.listeners.portal;
        if !bind.ip().is_loopback() && !secure {
            bail!(
                "`listeners.portal = \"{bind}\"` is not a loopback address, so `portal.public_url` must be \
                 the https:// address users open (TLS at a reverse proxy); otherwise bind the portal to 127.0.0.1"
            );
        }
        if portal.session_idle_timeout.is_zero() {
            bail!("`portal.session_idle_timeout` must be longer than 0s");
        }
        Ok(Self {
            secure,
            prefix,
            trusted_proxies,
            idle_timeout: portal.session_idle_timeout,
        })
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_COOKIE
        } else {
            DEV_COOKIE
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client: the peer, or behind trusted proxies the rightmost
    /// X-Forwarded-For address that is not a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(parse_hop)
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.trusted(**ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// `(https?, path prefix)` of a public URL like `https://mail.example.com/account`.
fn parse_public_url(url: &str) -> anyhow::Result<(bool, String)> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!(
            "`portal.public_url` must start with https:// (or http:// for loopback testing), got {url:?}"
        );
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "?#@".contains(c)) {
        bail!("`portal.public_url` has no valid host: {url:?}");
    }
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if !path_ok || path.contains("//") {
        bail!(
            "`portal.public_url` path may only hold letters, digits and / - . _ ~ (no query): {url:?}"
        );
    }
    Ok((secure, path.trim_end_matches('/').to_string()))
}

fn parse_network(s: &str) -> anyhow::Result<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            anyhow::anyhow!("`portal.trusted_proxies`: {s:?} is not an address or CIDR network")
        })
}

/// One X-Forwarded-For entry: `ip`, `ip:port` or `[v6]:port`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// What the portal needs from the server.
pub struct PortalParts {
    pub accounts: Accounts,
    pub passwords: Arc<Passwords>,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<dyn Events>,
    pub settings: Settings,
    /// Shown with an operator block.
    pub support_contact: Option<String>,
    /// The product name users see (the TOTP issuer).
    pub brand: String,
}

pub(crate) struct Inner {
    accounts: Accounts,
    passwords: Arc<Passwords>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn Events>,
    settings: Settings,
    support_contact: Option<String>,
    brand: String,
    sessions: SessionStore,
    signin: SigninGuard,
}

/// The portal's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Portal {
    inner: Arc<Inner>,
}

impl Portal {
    pub fn new(parts: PortalParts) -> Self {
        let sessions = SessionStore::new(parts.settings.idle_timeout, parts.clock.clone());
        Self {
            inner: Arc::new(Inner {
                sessions,
                signin: SigninGuard::new(parts.clock.clone()),
                accounts: parts.accounts,
                passwords: parts.passwords,
                clock: parts.clock,
                events: parts.events,
                settings: parts.settings,
                support_contact: parts.support_contact,
                brand: parts.brand,
            }),
        }
    }

    /// The HTTP routes, under the path of `public_url`.
    pub fn router(self) -> Router {
        let prefix = self.inner.settings.prefix.clone();
        let at = |path: &str| format!("{prefix}{path}");
        let mut app = Router::new()
            .route(&at("/"), get(signin::signin_page))
            .route(&at("/signin"), post(signin::signin))
            .route(&at("/signin/otp"), get(otp::otp_page).post(otp::otp))
            .route(&at("/my-account"), get(account::account_page))
            .route(&at("/my-account/password"), post(password::change_password))
            .route(&at("/my-account/2fa/enable"), post(two_factor::enable_2fa))
            .route(&at("/my-account/2fa/qr"), post(two_factor::show_qr))
            .route(&at("/my-account/2fa/verify"), post(two_factor::verify_2fa))
            .route(&at("/my-account/2fa/confirm"), post(devices::confirm_otp))
            .route(
                &at("/my-account/2fa/disable"),
                post(two_factor::disable_2fa),
            )
            .route(
                &at("/my-account/devices/create"),
                post(devices::create_device),
            )
            .route(
                &at("/my-account/devices/revoke"),
                post(devices::revoke_device),
            )
            .route(&at("/signout"), post(account::signout))
            .route(&at("/style.css"), get(pages::stylesheet));
        if !prefix.is_empty() {
            app = app
                .route("/", get(pages::to_home))
                .route(&prefix, get(pages::to_home));
        }
        app.fallback(pages::not_found)
            .layer(DefaultBodyLimit::max(16 * 1024))
            .layer(middleware::map_response(security_headers))
            .with_state(self)
    }
}

/// Headers on every response: no framing, no inline script, no caching of
/// pages (they may hold secrets), no referrer.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        assert_eq!(
            parse_public_url("https://mail.example.com/account/").unwrap(),
            (true, "/account".into())
        );
        assert_eq!(
            parse_public_url("https://mail.example.com").unwrap(),
            (true, String::new())
        );
        assert_eq!(
            parse_public_url("http://127.0.0.1:8080/").unwrap(),
            (false, String::new())
        );
        for bad in [
            "mail.example.com",
            "ftp://x",
            "https:///x",
            "https://x/a?b",
            "https://x/{a}",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ip_is_the_rightmost_untrusted_forwarded_address() {
        let settings = Settings {
            secure: true,
            prefix: String::new(),
            trusted_proxies: vec![
                parse_network("127.0.0.1").unwrap(),
                parse_network("10.0.0.0/8").unwrap(),
            ],
            idle_timeout: Duration::from_secs(60),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.1.1.1, 203.0.113.9, 10.1.1.1".parse().unwrap(),
        );
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            settings.client_ip(local, &headers),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Not from a trusted proxy: the header is ignored.
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(settings.client_ip(other, &headers), other);
        // No header: the proxy itself.
        assert_eq!(settings.client_ip(local, &HeaderMap::new()), local);
        // Several header lines count as one list; ports are dropped.
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        headers.append("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(
            settings.client_ip(local, &headers),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
