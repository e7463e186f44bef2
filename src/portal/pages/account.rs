//! The My account page, and signing out.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::OTP_FRESH_SECS;
use crate::accounts::trust;
use crate::portal::Portal;
use crate::portal::extract::Post;
use crate::portal::html::{self, AccountView};
use crate::portal::session::{Auth, Notice};

/// GET /my-account.
pub async fn account_page(
    State(p): State<Portal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ip = p.inner.settings.client_ip(peer.ip(), &headers);
    let session = match p.current(&headers) {
        Ok(Some(s)) => s,
        Ok(None) => return p.see_other("/"),
        Err(unavailable) => return unavailable,
    };
    let (session, account) = match p.signed_in(session).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // One-time values are shown only once they are gone from the session
    // (`take`): if that change is not saved, they show next time instead.
    let (notices, new_device) = p
        .inner
        .sessions
        .take(&session.id, |s| {
            match (&account.block, s.seen_block) {
                (None, Some(_)) => {
                    let mut n = Notice::success("Your account has been unblocked")
                        .detail("You can send email again. Desktop email programs need a device password (see Device passwords).");
                    n.at = s.last_section;
                    s.notices.push(n);
                    s.seen_block = None;
                }
                (Some(b), _) => s.seen_block = Some(b.seq),
                (None, None) => {}
            }
            let new_device = s.new_device.take();
            s.device_profile = new_device.clone();
            s.last_section = None;
            (std::mem::take(&mut s.notices), new_device)
        })
        .unwrap_or_default();
    let enrolment = if session.show_qr && account.totp.pending.is_some() {
        match p.inner.accounts.totp_pending(&account.address).await {
            Ok(e) => e,
            Err(e) => return p.internal(e),
        }
    } else {
        None
    };
    // A session a recovery link opened for this block may do the steps.
    let recovering = trust::recovering(&account, session.recovery_for);
    let otp_fresh = matches!(session.auth, Auth::SignedIn { otp_at: Some(t), .. }
        if p.now() < t + OTP_FRESH_SECS);
    let view = AccountView {
        account: &account,
        notices: &notices,
        new_device: new_device.as_ref(),
        apple_profile: p.inner.setup.offers_apple_profile(),
        enrolment: enrolment.as_ref(),
        otp_fresh,
        support_contact: p.inner.support_contact.as_deref(),
        network_qualifies: account.block.is_none()
            || recovering
            || p.inner.accounts.qualifies_from(&account, ip),
        recovery_link: account.policy_blocked() && p.inner.accounts.recovery_qualifies(&account),
    };
    p.page(
        StatusCode::OK,
        html::account_page(&p.ctx(&session.csrf), &view),
    )
}

/// POST /signout (also "Cancel" on the OTP step).
pub async fn signout(State(p): State<Portal>, post: Post) -> Response {
    if p.inner.sessions.remove(&post.session.id).is_err() {
        // Not signed out: say so rather than pretend.
        return p.unavailable();
    }
    p.to_signin(Notice::success("You have signed out"))
}
