//! The routes, a file a page. GET pages render; every form POST checks the
//! session's CSRF token, does one thing through `Accounts`, puts its notice
//! (or one-time value) in the web session, and answers `303 See Other` to a
//! GET page (one exception: the `.mobileconfig` download answers the file,
//! or 410 Gone). A POST without a live session goes back to sign-in (303); one
//! with a session but a wrong or missing token changes nothing and gets
//! 403 (both in `extract`, before the handler runs).
//!
//! - `signin`: the sign-in page and its form; `otp`: the second step.
//! - `account`: the My account page, and signing out.
//! - `password`, `two_factor`, `devices`: the My account sections' forms.

pub mod account;
pub mod devices;
pub mod otp;
pub mod password;
pub mod recovery;
pub mod signin;
pub mod two_factor;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Portal;
use super::html;
use super::session::{Auth, Session};

const STYLE: &str = include_str!("../style.css");
/// Device passwords need an OTP passed in this web session this recently.
const OTP_FRESH_SECS: u64 = 15 * 60;

/// When a signed-in session last passed an OTP (`None`: not since 2FA
/// went off).
fn set_otp_at(s: &mut Session, at: Option<u64>) {
    if let Auth::SignedIn { otp_at, .. } = &mut s.auth {
        *otp_at = at;
    }
}

pub async fn to_home(State(p): State<Portal>) -> Response {
    p.see_other("/")
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

pub async fn not_found(State(p): State<Portal>) -> Response {
    p.page(StatusCode::NOT_FOUND, html::not_found_page(&p.ctx("")))
}
