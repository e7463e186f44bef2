//! The "My account" web portal (docs/operator-guide.md, "The web portal"): a blocked user
//! signs in, changes the password, enables 2FA and creates device
//! passwords, exactly as the help page says. axum, server-rendered HTML, no
//! JavaScript.
//!
//! - `session`: in-memory web sessions (random ids, CSRF token, expiry).
//! - `signin_guard`: sign-in failures per client and per account.
//! - `pages`: the routes, a file a page; `extract`: the checks every form
//!   POST starts with; `reply`: how the routes answer.
//! - `html`: the pages' HTML; `style.css`: the look.
//! - `autoconfig`: mail program set-up (Thunderbird, Outlook), at the
//!   listener's root whatever the path of `public_url`.
//!
//! Every change goes through `Accounts` with `Origin::portal(client_ip)`,
//! so the unblock rule can ignore changes from a block's abuse networks.

pub mod autoconfig;
mod extract;
pub mod html;
pub mod limiter;
mod pages;
mod reply;
pub mod session;
pub mod signin_guard;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::accounts::{Accounts, Passwords};
use crate::clock::Clock;
use crate::events::Events;
use pages::{account, devices, otp, password, recovery, signin, two_factor};
use session::SessionStore;

use crate::secrets::ServerKey;
use crate::store::shared::SessionRows;
use signin_guard::SigninGuard;

/// The cookie name behind an https `public_url`.
pub const SECURE_COOKIE: &str = "__Host-mw_session";
/// The cookie name for plain-http loopback development.
pub const DEV_COOKIE: &str = "mw_session";

/// The portal's view of the configuration, parsed and checked in `config`.
pub use crate::config::PortalSettings as Settings;

impl Settings {
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_COOKIE
        } else {
            DEV_COOKIE
        }
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
    /// What mail programs are told when they set themselves up.
    pub setup: autoconfig::MailSetup,
    /// With several nodes: the shared database keeps the sessions, sealed
    /// with the server key. `None`: this process's memory.
    pub shared_sessions: Option<(Arc<dyn SessionRows>, Arc<ServerKey>)>,
}

pub(crate) struct Inner {
    accounts: Accounts,
    passwords: Arc<Passwords>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn Events>,
    settings: Settings,
    support_contact: Option<String>,
    brand: String,
    setup: autoconfig::MailSetup,
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
        let idle = parts.settings.idle_timeout;
        let sessions = match parts.shared_sessions {
            Some((rows, key)) => SessionStore::shared(idle, parts.clock.clone(), rows, key),
            None => SessionStore::new(idle, parts.clock.clone()),
        };
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
                setup: parts.setup,
            }),
        }
    }

    /// The HTTP routes, under the path of `public_url`; mail program
    /// set-up at the root.
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
                &at("/my-account/devices/profile"),
                post(devices::apple_profile),
            )
            .route(
                &at("/my-account/devices/revoke"),
                post(devices::revoke_device),
            )
            .route(&at("/my-account/recovery"), post(recovery::set_recovery))
            .route(&at("/my-account/recovery/link"), post(recovery::send_link))
            .route(
                &at("/recovery"),
                get(recovery::link_page).post(recovery::use_link),
            )
            .route(&at("/recovery/request"), post(recovery::request_link))
            .route(&at("/signout"), post(account::signout))
            .route(&at("/style.css"), get(pages::stylesheet));
        if !prefix.is_empty() {
            app = app
                .route("/", get(pages::to_home))
                .route(&prefix, get(pages::to_home));
        }
        for path in [
            autoconfig::THUNDERBIRD,
            autoconfig::THUNDERBIRD_WELL_KNOWN,
            autoconfig::POX,
            autoconfig::JSON,
            "/autodiscover/autodiscover.json/v1.0/{address}",
        ] {
            app = app.route(path, any(autoconfig::answer));
        }
        app.fallback(fallback)
            .layer(DefaultBodyLimit::max(16 * 1024))
            .layer(middleware::map_response(security_headers))
            .with_state(self)
    }
}

/// Set-up paths in another case (Outlook writes `/Autodiscover/...`),
/// else the 404 page.
async fn fallback(State(p): State<Portal>, request: Request) -> Response {
    if autoconfig::is_setup_path(request.uri().path()) {
        return autoconfig::answer.call(request, p).await;
    }
    pages::not_found(State(p)).await
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn client_ip_is_the_rightmost_untrusted_forwarded_address() {
        let settings = Settings {
            secure: true,
            prefix: String::new(),
            trusted_proxies: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
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
