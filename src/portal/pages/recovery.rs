//! The recovery address on My account, recovery links, and the page a
//! recovery mail's link opens (docs/security.md, "Recovery links").

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use crate::accounts::recovery::LinkKind;
use crate::portal::Portal;
use crate::portal::extract::{Post, SignedIn};
use crate::portal::html;
use crate::portal::session::{Auth, Notice};

/// POST /my-account/recovery: sets the recovery address and sends it a
/// confirmation link.
pub async fn set_recovery(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "recovery";
    match p
        .inner
        .accounts
        .set_recovery(&post.account.address, &post.form.email, &post.origin())
        .await
    {
        Ok(_) => p.notice(
            &post.session,
            Notice::success("Recovery address saved")
                .detail("We sent it a link: open it there and press Confirm within 7 days.")
                .at(AT),
        ),
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.back_to(AT)
}

/// POST /my-account/recovery/link: during a block, mails a recovery link
/// to the recovery address.
pub async fn send_link(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "recovery";
    match p
        .inner
        .accounts
        .send_recovery_link(&post.account.address)
        .await
    {
        Ok(_) => p.notice(
            &post.session,
            Notice::success("We sent a recovery link to your recovery address").detail(
                "Open it within 24 hours in the browser you want to use, then do both steps there.",
            ),
        ),
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.see_other("/my-account")
}

/// POST /recovery/request (the sign-in page): for an owner who cannot
/// sign in any more (a thief changed the password before the block). The
/// same answer whatever the address, so it tells nobody anything; the
/// link only ever goes to a qualifying recovery address.
pub async fn request_link(State(p): State<Portal>, post: Post) -> Response {
    if let Err(e) = p.inner.accounts.send_recovery_link(&post.form.email).await
        && !matches!(
            e,
            crate::accounts::AccountError::State(_)
                | crate::accounts::AccountError::NotFound(_)
                | crate::accounts::AccountError::Address(_)
        )
    {
        tracing::error!(event = "portal.error", error = %e);
    }
    p.restart_signin(
        &post.session,
        Notice::success("If that account can get a recovery link, it is on its way").detail(
            "It goes to the account's confirmed recovery address, never anywhere else. Open it within 24 hours in this browser.",
        ),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LinkQuery {
    a: String,
    k: String,
    t: String,
}

/// GET /recovery?a=&k=&t=: the page with one button (a mail scanner that
/// opens links uses nothing up).
pub async fn link_page(
    State(p): State<Portal>,
    headers: HeaderMap,
    Query(q): Query<LinkQuery>,
) -> Response {
    if LinkKind::parse(&q.k).is_none() || q.t.is_empty() || q.t.len() > 128 || q.a.len() > 254 {
        return p.to_signin(Notice::error("That link is not complete").detail(
            "Open the link from the message again, or copy all of it into the address bar.",
        ));
    }
    let (session, new) = match p.current(&headers) {
        Ok(Some(s)) => (s, false),
        Ok(None) => (p.inner.sessions.create(Auth::Anonymous), true),
        Err(unavailable) => return unavailable,
    };
    let mut r = p.page(
        StatusCode::OK,
        html::recovery_page(&p.ctx(&session.csrf), &q.a, &q.k, &q.t),
    );
    if new {
        r.headers_mut()
            .insert(header::SET_COOKIE, p.set_cookie(&session.id));
    }
    r
}

/// POST /recovery: confirms the address, or opens the recovery session.
pub async fn use_link(State(p): State<Portal>, post: Post) -> Response {
    let accounts = &p.inner.accounts;
    let (address, token) = (&post.form.email, &post.form.token);
    match LinkKind::parse(&post.form.kind) {
        Some(LinkKind::Confirm) => match accounts.confirm_recovery(address, token).await {
            Ok(a) => p.to_signin(
                Notice::success("Recovery address confirmed")
                    .detail(format!("It is now the recovery address of {}.", a.address)),
            ),
            Err(_) => p.to_signin(link_failed()),
        },
        Some(LinkKind::Open) => match accounts.open_recovery_link(address, token).await {
            Ok((account, seq)) => {
                let s = p.inner.sessions.sign_in(&post.session.id, &account, None);
                let s = p
                    .inner
                    .sessions
                    .update(&s.id, |s| s.recovery_for = Some(seq))
                    .unwrap_or(s);
                p.see_other_with("/my-account", &s)
            }
            Err(_) => p.to_signin(link_failed()),
        },
        None => p.to_signin(Notice::error("That link is not complete")),
    }
}

/// One answer for every link that does not work (which account exists, or
/// why, is nobody's business here).
fn link_failed() -> Notice {
    Notice::error("That link does not work").detail(
        "It was used already, it expired, or the account changed since it was sent. Ask for a new one on My account.",
    )
}
