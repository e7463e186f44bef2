//! The preamble of every form POST, in one place: the extractors `Post`
//! (a live session whose CSRF token the form carries) and `SignedIn` (that,
//! and the session's account). A request they refuse gets the gate's
//! answer and never reaches the handler: cross-site or a wrong or missing
//! token 403, no live session 303 to sign-in; for `SignedIn` also 303 to
//! the sign-in step a session is at, or (account gone, disabled or its
//! password changed) the end of the session and 303 to sign-in. The token
//! rides in the form, so they read the body too, before any check.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, RequestExt};
use serde::Deserialize;

use super::Portal;
use super::session::{Auth, Notice, Session};
use crate::accounts::{Account, AccountError, Origin};

/// Every form's fields; each form sends the ones it has.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Fields {
    csrf: String,
    pub email: String,
    pub password: String,
    pub current: String,
    pub new: String,
    pub repeat: String,
    pub otp: String,
    pub name: String,
    /// A recovery link's kind (`confirm`, `open`) and token.
    pub kind: String,
    pub token: String,
}

/// A form POST past the gate (`Portal::gate`): the client, its live
/// session, and the form.
pub struct Post {
    pub ip: IpAddr,
    pub session: Session,
    pub form: Fields,
}

/// A form POST past the gate from a signed-in session
/// (`Portal::signed_in`), with the session's account.
pub struct SignedIn {
    pub ip: IpAddr,
    pub session: Session,
    pub account: Account,
    pub form: Fields,
}

impl SignedIn {
    /// What its changes go through `Accounts` with: the portal, and this
    /// client (the unblock rule ignores a block's abuse networks).
    pub fn origin(&self) -> Origin {
        Origin {
            via: if self.session.recovery_for.is_some() {
                "recovery"
            } else {
                "portal"
            },
            enrolment: self.session.enrolment,
            recovery_for: self.session.recovery_for,
            ..Origin::portal(self.ip)
        }
    }
}

impl FromRequest<Portal> for Post {
    type Rejection = Response;

    async fn from_request(mut req: Request, p: &Portal) -> Result<Self, Response> {
        let ConnectInfo(peer) = req
            .extract_parts::<ConnectInfo<SocketAddr>>()
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = req.headers().clone();
        let ip = client(p, peer, &headers);
        let Form(form) = Form::<Fields>::from_request(req, p)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = p.gate(&headers, &form.csrf)?;
        Ok(Self { ip, session, form })
    }
}

impl FromRequest<Portal> for SignedIn {
    type Rejection = Response;

    async fn from_request(req: Request, p: &Portal) -> Result<Self, Response> {
        let Post { ip, session, form } = Post::from_request(req, p).await?;
        let (session, account) = p.signed_in(session).await?;
        Ok(Self {
            ip,
            session,
            account,
            form,
        })
    }
}

// The early returns are finished responses; they are built once per
// request, so their size does not matter.
#[allow(clippy::result_large_err)]
impl Portal {
    /// The live session named by the request's cookie. `Err`: the
    /// sessions cannot be read now, and the answer to send (503, the
    /// cookie left as it is).
    pub(super) fn current(&self, headers: &HeaderMap) -> Result<Option<Session>, Response> {
        let Some(id) = cookie(headers, self.inner.settings.cookie_name()) else {
            return Ok(None);
        };
        self.inner.sessions.get(&id).map_err(|_| self.unavailable())
    }

    /// The checks every POST starts with: a live session and its CSRF token.
    fn gate(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        if cross_site {
            return Err(self.forbidden());
        }
        let Some(session) = self.current(headers)? else {
            return Err(self.to_signin(
                Notice::error("Your session has ended")
                    .detail("Nothing was changed. Please sign in again."),
            ));
        };
        if !session.csrf_matches(csrf) {
            return Err(self.forbidden());
        }
        Ok(session)
    }

    /// A signed-in session and its account, or the way back to sign-in.
    /// A session ends when the account is gone or disabled, or when its
    /// credentials changed since it signed in (a new password, 2FA on or
    /// off: elsewhere, or by the operator).
    pub(super) async fn signed_in(&self, session: Session) -> Result<(Session, Account), Response> {
        let (address, hash, credentials) = match &session.auth {
            Auth::SignedIn {
                address,
                password_hash,
                credentials,
                ..
            } => (address.clone(), password_hash.clone(), *credentials),
            Auth::OtpPending { .. } => return Err(self.see_other("/signin/otp")),
            Auth::Anonymous => return Err(self.see_other("/")),
        };
        match self.inner.accounts.get(&address).await {
            Ok(a)
                if !a.disabled && a.password_hash == hash && a.credentials_seq() == credentials =>
            {
                Ok((session, a))
            }
            Ok(_) | Err(AccountError::NotFound(_)) => {
                // Signed out whether or not the row goes now: the check
                // above fails on every request of this session.
                let _ = self.inner.sessions.remove(&session.id);
                Err(self.to_signin(
                    Notice::info("You were signed out")
                        .detail("The password or the account was changed. Please sign in again."),
                ))
            }
            Err(e) => Err(self.internal(e)),
        }
    }
}

/// `cookie_name`'s value from the Cookie header(s).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

fn client(p: &Portal, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    p.inner.settings.client_ip(peer.ip(), headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; mw_session=abc ; x_mw_session=no".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "mw_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "__Host-mw_session"), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1".parse().unwrap());
        h.append(header::COOKIE, "__Host-mw_session=xyz".parse().unwrap());
        assert_eq!(cookie(&h, "__Host-mw_session").as_deref(), Some("xyz"));
    }
}
