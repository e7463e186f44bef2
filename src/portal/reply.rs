//! How the portal answers: 303s to its pages, HTML pages with a status,
//! the notices a POST leaves in the web session, and its events.

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Portal;
use super::html::{self, Ctx};
use super::session::{Auth, Notice, Session};
use crate::accounts::{Account, AccountError};
use crate::events::{Event, EventKind};

impl Portal {
    pub(super) fn now(&self) -> u64 {
        self.inner.clock.unix()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.settings.prefix, path)
    }

    pub(super) fn ctx<'a>(&'a self, csrf: &'a str) -> Ctx<'a> {
        Ctx {
            prefix: &self.inner.settings.prefix,
            csrf,
            brand: &self.inner.brand,
        }
    }

    pub(super) fn set_cookie(&self, id: &str) -> HeaderValue {
        let secure = if self.inner.settings.secure {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}",
            self.inner.settings.cookie_name()
        ))
        .expect("cookie is ASCII")
    }

    pub(super) fn see_other(&self, path: &str) -> Response {
        let location = HeaderValue::from_str(&self.url(path)).expect("ASCII path");
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
    }

    /// 303 that also sets the cookie of a new session.
    pub(super) fn see_other_with(&self, path: &str, session: &Session) -> Response {
        let mut r = self.see_other(path);
        r.headers_mut()
            .insert(header::SET_COOKIE, self.set_cookie(&session.id));
        r
    }

    pub(super) fn page(&self, status: StatusCode, body: String) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }

    pub(super) fn forbidden(&self) -> Response {
        self.page(StatusCode::FORBIDDEN, html::forbidden_page(&self.ctx("")))
    }

    /// A new anonymous session carrying `notice`, and a 303 to sign-in.
    pub(super) fn to_signin(&self, notice: Notice) -> Response {
        let s = self
            .inner
            .sessions
            .create_with(Auth::Anonymous, vec![notice]);
        self.see_other_with("/", &s)
    }

    /// This session back to the start of sign-in (any half-done sign-in
    /// dropped) with `notice`, and a 303 to sign-in.
    pub(super) fn restart_signin(&self, session: &Session, notice: Notice) -> Response {
        self.inner.sessions.update(&session.id, |s| {
            s.auth = Auth::Anonymous;
            s.notices.push(notice);
        });
        self.see_other("/")
    }

    /// The sessions cannot be read or changed now (logged where it
    /// happened): 503, "try again in a minute".
    pub(super) fn unavailable(&self) -> Response {
        self.page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error_page(&self.ctx("")),
        )
    }

    pub(super) fn internal(&self, e: AccountError) -> Response {
        tracing::error!(event = "portal.error", error = %e);
        self.page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error_page(&self.ctx("")),
        )
    }

    pub(super) fn notice(&self, session: &Session, notice: Notice) {
        let at = notice.at;
        self.inner.sessions.update(&session.id, |s| {
            s.notices.push(notice);
            if at.is_some() {
                s.last_section = at;
            }
        });
    }

    /// 303 back to the My account section `at` (the section's id is also
    /// what its notices are filed under).
    pub(super) fn back_to(&self, at: &str) -> Response {
        self.see_other(&format!("/my-account#{at}"))
    }

    /// The end of a plain account change in section `at`: on success the
    /// web session's own changes (`then`) and the `done` notice, on failure
    /// the error's notice; either way back to the section.
    pub(super) fn changed<T>(
        &self,
        session: &Session,
        at: &'static str,
        result: Result<T, AccountError>,
        then: impl FnOnce(&mut Session),
        done: Notice,
    ) -> Response {
        match result {
            Ok(_) => {
                self.inner.sessions.update(&session.id, then);
                self.notice(session, done.at(at));
            }
            Err(e) => self.account_error(session, e, at),
        }
        self.back_to(at)
    }

    /// This session changed the account's credentials: it stays signed in
    /// (with the new ones) and every other session of the account ends.
    /// Returns how many others ended.
    pub(super) fn keep_only(&self, session: &Session, updated: &Account) -> usize {
        self.inner.sessions.update(&session.id, |s| {
            if let Auth::SignedIn {
                password_hash,
                credentials,
                ..
            } = &mut s.auth
            {
                *password_hash = updated.password_hash.clone();
                *credentials = updated.credentials_seq();
            }
        });
        self.inner
            .sessions
            .sign_out_others(&updated.address, &session.id)
    }

    /// Notices for a refused account change, by error.
    pub(super) fn account_error(&self, session: &Session, e: AccountError, at: &'static str) {
        let notice = match e {
            AccountError::Password(why) => {
                Notice::error("The new password was not accepted").detail(format!("{}.", cap(why)))
            }
            AccountError::BadCode => Notice::error("That code is not right").detail(
                "Enter the 6-digit code your authenticator app shows now. Codes change every 30 seconds, and each one works once.",
            ),
            AccountError::Exists(_) => Notice::error("That name is taken")
                .detail("You already have a device password with that name. Choose another name."),
            AccountError::NotFound(_) => Notice::error("Not found"),
            AccountError::State(why) => Notice::error(&format!("{}.", cap(&why))),
            AccountError::Address(_) | AccountError::AddressTaken(_) | AccountError::NoAlias { .. } => {
                Notice::error("That address is not valid")
            }
            AccountError::NeedsTrustedNetwork => {
                Notice::error("For your safety, this change needs a network you have sent mail from before")
                    .detail(self.elsewhere_words())
            }
            AccountError::OtpLocked(left) => {
                let minutes = left.div_ceil(60).max(1);
                Notice::error("Too many wrong codes").detail(format!(
                    "For your security, codes for this account are not accepted for the next {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                ))
            }
            e @ (AccountError::Store(_)
            | AccountError::Hash(_)
            | AccountError::Task(_)
            | AccountError::SecretUnreadable) => {
                tracing::error!(event = "portal.error", error = %e);
                Notice::error("Something went wrong on our side")
                    .detail("Please try again in a minute.")
            }
        };
        self.notice(session, notice.at(at));
    }

    /// What to do when this network may not lift the block: the network
    /// the owner sends from, or support.
    pub(super) fn elsewhere_words(&self) -> String {
        let contact = match &self.inner.support_contact {
            Some(c) => format!(" at {c}"),
            None => String::new(),
        };
        format!(
            "Sign in from a computer or phone on a network you usually send mail from (your home or office) and do it there, or contact support{contact}."
        )
    }

    pub(super) fn signin_event(&self, kind: EventKind, account: &str, ip: IpAddr, reason: &str) {
        let mut event = Event::new(kind).account(account).reason(reason);
        event.ip = Some(ip);
        self.inner.events.emit(event);
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
