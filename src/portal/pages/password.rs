//! My account, Password: changing it.

use axum::extract::State;
use axum::response::Response;

use crate::accounts::{check_password_rule, trust};
use crate::portal::Portal;
use crate::portal::extract::SignedIn;
use crate::portal::session::Notice;

/// POST /my-account/password.
pub async fn change_password(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "password";
    if post.form.new != post.form.repeat {
        p.notice(
            &post.session,
            Notice::error("The new passwords do not match")
                .detail("Type the same new password in both fields.")
                .at(AT),
        );
        return p.back_to(AT);
    }
    if let Err(e) = check_password_rule(&post.account.address, &post.form.new) {
        p.account_error(&post.session, e, AT);
        return p.back_to(AT);
    }
    // A session a recovery link opened for this block does not need the
    // current password (a thief may have changed it before the block).
    let recovering = trust::recovering(&post.account, post.session.recovery_for);
    let bucket = p
        .inner
        .accounts
        .lockout_bucket(&post.account, Some(post.ip));
    if p.inner.signin.check(post.ip, &bucket).is_err() {
        p.notice(
            &post.session,
            Notice::error("Too many wrong passwords")
                .detail("Please wait 15 minutes, then try again.")
                .at(AT),
        );
        return p.back_to(AT);
    }
    let verified = if recovering {
        Ok(true)
    } else {
        p.inner
            .passwords
            .verify(&post.form.current, Some(&post.account.password_hash))
            .await
    };
    match verified {
        Ok(true) => {}
        Ok(false) => {
            p.inner.signin.failure(post.ip, &bucket);
            p.notice(
                &post.session,
                Notice::error("The current password is not right").at(AT),
            );
            return p.back_to(AT);
        }
        Err(_busy) => {
            p.notice(
                &post.session,
                Notice::error("The service is busy")
                    .detail("Please try again in a minute.")
                    .at(AT),
            );
            return p.back_to(AT);
        }
    }
    if !recovering && post.form.new == post.form.current {
        p.notice(
            &post.session,
            Notice::error("The new password must be different from your current password").at(AT),
        );
        return p.back_to(AT);
    }
    match p
        .inner
        .accounts
        .set_password(&post.account.address, &post.form.new, &post.origin())
        .await
    {
        Ok(updated) => {
            let others = p.keep_only(&post.session, &updated);
            let detail = if others > 0 {
                "Use it the next time you sign in. Other browsers signed in to this account were signed out."
            } else {
                "Use it the next time you sign in."
            };
            p.notice(
                &post.session,
                Notice::success("Password changed").detail(detail).at(AT),
            );
        }
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.back_to(AT)
}
