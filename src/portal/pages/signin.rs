//! The sign-in page and its email and password form.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::accounts::AccountError;
use crate::address;
use crate::events::EventKind;
use crate::portal::Portal;
use crate::portal::extract::Post;
use crate::portal::html;
use crate::portal::session::{Auth, Notice};

/// GET /: the sign-in page, or a redirect for a signed-in session.
pub async fn signin_page(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let (session, new) = match p.current(&headers) {
        Ok(Some(s)) => (s, false),
        Ok(None) => (p.inner.sessions.create(Auth::Anonymous), true),
        Err(unavailable) => return unavailable,
    };
    match session.auth {
        Auth::SignedIn { .. } => return p.see_other("/my-account"),
        Auth::OtpPending { .. } => return p.see_other("/signin/otp"),
        Auth::Anonymous => {}
    }
    // A session made just now holds nothing to show.
    let notices = if new {
        Vec::new()
    } else {
        p.inner
            .sessions
            .take(&session.id, |s| std::mem::take(&mut s.notices))
            .unwrap_or_default()
    };
    let mut r = p.page(
        StatusCode::OK,
        html::signin_page(&p.ctx(&session.csrf), &notices),
    );
    if new {
        r.headers_mut()
            .insert(header::SET_COOKIE, p.set_cookie(&session.id));
    }
    r
}

/// POST /signin: email and password. Unknown and known addresses take the
/// same path: one store read, one argon2id verify, the same notice.
pub async fn signin(State(p): State<Portal>, post: Post) -> Response {
    if let Auth::SignedIn { .. } = post.session.auth {
        return p.see_other("/my-account");
    }
    let normalized = address::normalize(&post.form.email).ok();
    // What the failure counts and events use: the address as normalised,
    // or (not an address) what was typed, bounded.
    let key = normalized.clone().unwrap_or_else(|| {
        post.form
            .email
            .trim()
            .to_lowercase()
            .chars()
            .take(254)
            .collect()
    });
    let account = match &normalized {
        Some(a) => match p.inner.accounts.get(a).await {
            Ok(a) => Some(a),
            Err(AccountError::NotFound(_)) => None,
            Err(e) => {
                tracing::error!(event = "portal.error", error = %e);
                None
            }
        },
        None => None,
    };
    // The account's failures count per bucket: each of its trusted
    // networks has its own, so a thief's failures never lock the owner out.
    let bucket = match &account {
        Some(a) => p.inner.accounts.lockout_bucket(a, Some(post.ip)),
        None => key.clone(),
    };
    // The portal's own window, and the lockouts SMTP AUTH shares.
    let shared_lockout = p.inner.accounts.lockouts().check(post.ip, &key).is_err();
    if p.inner.signin.check(post.ip, &bucket).is_err() || shared_lockout {
        p.signin_event(EventKind::PortalSigninFailure, &key, post.ip, "locked_out");
        return p.restart_signin(
            &post.session,
            Notice::error("Too many failed sign-ins")
                .detail("Please wait 15 minutes, then try again."),
        );
    }
    let usable = account.filter(|a| !a.disabled);
    let verified = p
        .inner
        .passwords
        .verify_from(
            post.ip,
            &post.form.password,
            usable.as_ref().map(|a| a.password_hash.as_str()),
        )
        .await;
    let ok = match verified {
        Ok(ok) => ok,
        Err(_busy) => {
            p.notice(
                &post.session,
                Notice::error("The service is busy").detail("Please try again in a minute."),
            );
            return p.see_other("/");
        }
    };
    let Some(account) = usable.filter(|_| ok) else {
        p.inner.signin.failure(post.ip, &bucket);
        let started = p
            .inner
            .accounts
            .lockouts()
            .failure(post.ip, &key, &post.form.password);
        p.inner
            .accounts
            .report_lockouts(&key, Some(post.ip), started);
        p.signin_event(
            EventKind::PortalSigninFailure,
            &key,
            post.ip,
            "bad_credentials",
        );
        return p.restart_signin(
            &post.session,
            Notice::error("The email or password is not right").detail(
                "Check both and try again. Use your account password here, not a device password.",
            ),
        );
    };
    p.inner.signin.success(&bucket);
    p.inner.accounts.lockouts().success(post.ip, &key);
    if account.totp.active.is_some() {
        let s = p.inner.sessions.rotate(
            &post.session.id,
            Auth::OtpPending {
                address: account.address.clone(),
                since: p.now(),
                password_hash: account.password_hash.clone(),
            },
        );
        return p.see_other_with("/signin/otp", &s);
    }
    let s = p.inner.sessions.sign_in(&post.session.id, &account, None);
    p.signin_event(
        EventKind::PortalSignin,
        &account.address,
        post.ip,
        "password",
    );
    p.see_other_with("/my-account", &s)
}
