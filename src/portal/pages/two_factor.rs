//! My account, Two-factor authentication: enrolment (enable, QR code,
//! first code) and turning it off.

use axum::extract::State;
use axum::response::Response;

use super::set_otp_at;
use crate::accounts::AccountError;
use crate::portal::Portal;
use crate::portal::extract::SignedIn;
use crate::portal::session::Notice;

/// POST /my-account/2fa/enable: a new pending secret (also re-enrolment
/// while a policy block is on).
pub async fn enable_2fa(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "two-factor";
    if post.account.totp.active.is_some() && !post.account.policy_blocked() {
        p.notice(&post.session, Notice::info("2FA is already on").at(AT));
        return p.back_to(AT);
    }
    let result = p
        .inner
        .accounts
        .totp_enable(&post.account.address, &post.origin())
        .await;
    let seq = result.as_ref().ok().map(|e| e.seq);
    p.changed(
        &post.session,
        AT,
        result,
        |s| {
            s.show_qr = false;
            s.enrolment = seq;
        },
        Notice::success("2FA setup started")
            .detail("Now click QR Code and scan it with your authenticator app."),
    )
}

/// POST /my-account/2fa/qr: show the QR code while enrolment is pending.
pub async fn show_qr(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "two-factor";
    if post.account.totp.pending.is_none() {
        let notice = if post.account.totp.active.is_some() {
            Notice::info("2FA is already on")
                .detail("The QR code is shown only while 2FA is being set up.")
        } else {
            Notice::error("Click Enable 2FA first")
        };
        p.notice(&post.session, notice.at(AT));
        return p.back_to(AT);
    }
    p.inner.sessions.update(&post.session.id, |s| {
        s.show_qr = true;
        s.last_section = Some(AT);
    });
    p.see_other("/my-account#qr")
}

/// POST /my-account/2fa/verify: the first code of the pending secret.
pub async fn verify_2fa(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "two-factor";
    match p
        .inner
        .accounts
        .totp_verify(&post.account.address, &post.form.otp, &post.origin())
        .await
    {
        Ok(updated) => {
            let now = p.now();
            // A new authenticator (and perhaps a lifted block): other
            // browsers signed in to the account must sign in again.
            p.keep_only(&post.session, &updated);
            p.inner.sessions.update(&post.session.id, |s| {
                s.show_qr = false;
                set_otp_at(s, Some(now));
            });
            p.notice(
                &post.session,
                Notice::success("2FA enabled").detail(
                    "Signing in here now also asks for a code from your app. Desktop email programs need a device password (below).",
                ).at(AT),
            );
        }
        Err(AccountError::State(_)) => {
            p.notice(
                &post.session,
                Notice::error("Click Enable 2FA first").at(AT),
            );
        }
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.back_to(AT)
}

/// POST /my-account/2fa/disable: needs a current code.
pub async fn disable_2fa(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "two-factor";
    if post.account.totp.active.is_none() {
        p.notice(&post.session, Notice::info("2FA is not on").at(AT));
        return p.back_to(AT);
    }
    let result = p
        .inner
        .accounts
        .totp_disable(&post.account.address, Some(&post.form.otp), &post.origin())
        .await;
    if let Ok(updated) = &result {
        p.keep_only(&post.session, updated);
    }
    p.changed(
        &post.session,
        AT,
        result,
        |s| {
            s.show_qr = false;
            set_otp_at(s, None);
        },
        Notice::success("2FA disabled").detail(
            "Every device password was deleted. Your password works in email programs again.",
        ),
    )
}
