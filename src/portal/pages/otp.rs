//! The second sign-in step: a code from the authenticator app.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::accounts::AccountError;
use crate::events::EventKind;
use crate::portal::Portal;
use crate::portal::extract::Post;
use crate::portal::html;
use crate::portal::session::{Auth, Notice, OTP_STEP_TIME};

/// GET /signin/otp: the second sign-in step.
pub async fn otp_page(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let session = match p.current(&headers) {
        Ok(Some(s)) => s,
        Ok(None) => return p.see_other("/"),
        Err(unavailable) => return unavailable,
    };
    match &session.auth {
        Auth::OtpPending { since, .. } => {
            if p.now() >= since + OTP_STEP_TIME.as_secs() {
                return p.restart_signin(
                    &session,
                    Notice::error("The sign-in took too long")
                        .detail("Please enter your email and password again."),
                );
            }
        }
        Auth::SignedIn { .. } => return p.see_other("/my-account"),
        Auth::Anonymous => return p.see_other("/"),
    }
    let notices = p
        .inner
        .sessions
        .take(&session.id, |s| std::mem::take(&mut s.notices))
        .unwrap_or_default();
    p.page(
        StatusCode::OK,
        html::otp_page(&p.ctx(&session.csrf), &notices),
    )
}

/// POST /signin/otp: the code from the authenticator app.
pub async fn otp(State(p): State<Portal>, post: Post) -> Response {
    let Auth::OtpPending {
        address,
        since,
        password_hash,
    } = post.session.auth.clone()
    else {
        return p.see_other("/");
    };
    if p.now() >= since + OTP_STEP_TIME.as_secs() {
        return p.see_other("/signin/otp");
    }
    match p
        .inner
        .accounts
        .totp_check(&address, &post.form.otp, Some(post.ip))
        .await
    {
        Ok(()) => {
            let current = match p.inner.accounts.get(&address).await {
                Ok(a) if !a.disabled && a.password_hash == password_hash => a,
                _ => {
                    let _ = p.inner.sessions.remove(&post.session.id);
                    return p.to_signin(Notice::error("Please sign in again"));
                }
            };
            let s = p
                .inner
                .sessions
                .sign_in(&post.session.id, &current, Some(p.now()));
            p.signin_event(EventKind::PortalSignin, &address, post.ip, "otp");
            p.see_other_with("/my-account", &s)
        }
        Err(e @ (AccountError::BadCode | AccountError::OtpLocked(_))) => {
            let reason = if matches!(e, AccountError::BadCode) {
                "bad_otp"
            } else {
                "otp_locked"
            };
            p.signin_event(EventKind::PortalSigninFailure, &address, post.ip, reason);
            p.account_error(&post.session, e, "otp");
            p.see_other("/signin/otp")
        }
        Err(e) => {
            p.account_error(&post.session, e, "otp");
            p.see_other("/signin/otp")
        }
    }
}
