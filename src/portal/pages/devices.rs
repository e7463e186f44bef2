//! My account, Device passwords: a fresh code to unlock creating them,
//! creating one, the new one once as an Apple `.mobileconfig`, revoking
//! one.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{OTP_FRESH_SECS, set_otp_at};
use crate::accounts::AccountError;
use crate::portal::Portal;
use crate::portal::extract::SignedIn;
use crate::portal::session::{Auth, Notice};

/// POST /my-account/2fa/confirm: a code, so this session may create
/// device passwords for the next 15 minutes.
pub async fn confirm_otp(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "devices";
    let result = p
        .inner
        .accounts
        .totp_check(&post.account.address, &post.form.otp, Some(post.ip))
        .await;
    let now = p.now();
    p.changed(
        &post.session,
        AT,
        result,
        |s| set_otp_at(s, Some(now)),
        Notice::success("Code confirmed")
            .detail("You can create device passwords for the next 15 minutes."),
    )
}

/// POST /my-account/devices/create: only with 2FA on and an OTP passed in
/// this web session in the last 15 minutes. The password rides in the
/// session and is shown once.
pub async fn create_device(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "devices";
    if post.account.totp.active.is_none() {
        p.notice(
            &post.session,
            Notice::error("Device passwords need 2FA")
                .detail("Enable 2FA first.")
                .at(AT),
        );
        return p.back_to(AT);
    }
    let fresh = matches!(post.session.auth, Auth::SignedIn { otp_at: Some(t), .. }
        if p.now() < t + OTP_FRESH_SECS);
    if !fresh {
        p.notice(
            &post.session,
            Notice::error("Confirm a code first")
                .detail("Enter a code from your authenticator app, then create the device password within 15 minutes.")
                .at(AT),
        );
        return p.back_to(AT);
    }
    let name = post.form.name.trim().to_string();
    match p
        .inner
        .accounts
        .device_password_add(&post.account.address, &name, &post.origin())
        .await
    {
        Ok(password) => {
            p.inner.sessions.update(&post.session.id, |s| {
                s.new_device = Some((name, password));
                s.last_section = Some(AT);
            });
        }
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.back_to(AT)
}

/// POST /my-account/devices/revoke.
pub async fn revoke_device(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "devices";
    match p
        .inner
        .accounts
        .device_password_revoke(&post.account.address, &post.form.name, &post.origin())
        .await
    {
        Ok(_) => p.notice(
            &post.session,
            Notice::success("Device password revoked")
                .detail(format!(
                    "\u{201c}{}\u{201d} no longer works.",
                    post.form.name
                ))
                .at(AT),
        ),
        Err(AccountError::NotFound(_)) => p.notice(
            &post.session,
            Notice::error("There is no device password with that name").at(AT),
        ),
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.back_to(AT)
}

/// POST /my-account/devices/profile: the device password the page just
/// showed, as an Apple configuration profile. Downloadable once: it takes
/// the session's one-time value, so a second download (or one from
/// another session) gets 410 Gone. Signed with the configured TLS
/// certificate (docs/operator-guide.md, "Mail program set-up").
pub async fn apple_profile(State(p): State<Portal>, post: SignedIn) -> Response {
    let taken = p
        .inner
        .sessions
        .take(&post.session.id, |s| s.device_profile.take())
        .flatten();
    let address = &post.account.address;
    // A device password revoked since it was shown is not handed out.
    let profile = taken
        .filter(|(name, _)| {
            post.account
                .device_passwords
                .iter()
                .any(|d| &d.name == name)
        })
        .and_then(|(name, password)| p.inner.setup.apple_profile(address, &name, &password));
    let Some(body) = profile else {
        return (
            StatusCode::GONE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This profile was already downloaded, or there is none. Create a new device password to get another.\n",
        )
            .into_response();
    };
    let file = format!("{}.mobileconfig", attachment_name(address));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment; filename=\"mail.mobileconfig\""));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-apple-aspen-config"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        p.inner.setup.seal(body),
    )
        .into_response()
}

/// The address as a file name: ASCII letters, digits and `@._+-` kept,
/// anything else `_` (no quote, slash or control character reaches the
/// header).
fn attachment_name(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
