//! The routes. GET pages render; every form POST checks the session's CSRF
//! token, does one thing through `Accounts`, puts its notice (or one-time
//! value) in the web session, and answers `303 See Other` to a GET page.
//! A POST without a live session goes back to sign-in (303); one with a
//! session but a wrong or missing token changes nothing and gets 403.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, RequestExt};
use serde::Deserialize;

use super::Portal;
use super::html::{self, AccountView, Ctx};
use super::session::{Auth, Notice, OTP_STEP_TIME, Session};
use crate::accounts::{Account, AccountError, BlockKind, Origin, check_password_rule};
use crate::address;
use crate::events::Event;

const STYLE: &str = include_str!("style.css");
/// Device passwords need an OTP passed in this web session this recently.
const OTP_FRESH_SECS: u64 = 15 * 60;

/// Every form's fields; each form sends the ones it has.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Fields {
    csrf: String,
    email: String,
    password: String,
    current: String,
    new: String,
    repeat: String,
    otp: String,
    name: String,
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
    fn now(&self) -> u64 {
        self.inner.clock.unix()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.settings.prefix, path)
    }

    fn ctx<'a>(&'a self, csrf: &'a str) -> Ctx<'a> {
        Ctx {
            prefix: &self.inner.settings.prefix,
            csrf,
            brand: &self.inner.brand,
        }
    }

    fn set_cookie(&self, id: &str) -> HeaderValue {
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

    /// The live session named by the request's cookie.
    fn current(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, self.inner.settings.cookie_name())?;
        self.inner.sessions.get(&id)
    }

    fn see_other(&self, path: &str) -> Response {
        let location = HeaderValue::from_str(&self.url(path)).expect("ASCII path");
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
    }

    /// 303 that also sets the cookie of a new session.
    fn see_other_with(&self, path: &str, session: &Session) -> Response {
        let mut r = self.see_other(path);
        r.headers_mut()
            .insert(header::SET_COOKIE, self.set_cookie(&session.id));
        r
    }

    fn page(&self, status: StatusCode, body: String) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }

    fn forbidden(&self) -> Response {
        self.page(StatusCode::FORBIDDEN, html::forbidden_page(&self.ctx("")))
    }

    /// A new anonymous session carrying `notice`, and a 303 to sign-in.
    fn to_signin(&self, notice: Notice) -> Response {
        let s = self.inner.sessions.create(Auth::Anonymous);
        self.inner.sessions.notice(&s.id, notice);
        self.see_other_with("/", &s)
    }

    /// The checks every POST starts with: a live session and its CSRF token.
    fn gate(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        if cross_site {
            return Err(self.forbidden());
        }
        let Some(session) = self.current(headers) else {
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
    /// A session ends when the account is gone or disabled, or when the
    /// password changed since it signed in (elsewhere, or by the operator).
    async fn signed_in(&self, session: Session) -> Result<(Session, Account), Response> {
        let (address, hash) = match &session.auth {
            Auth::SignedIn {
                address,
                password_hash,
                ..
            } => (address.clone(), password_hash.clone()),
            Auth::OtpPending { .. } => return Err(self.see_other("/signin/otp")),
            Auth::Anonymous => return Err(self.see_other("/")),
        };
        match self.inner.accounts.get(&address).await {
            Ok(a) if !a.disabled && a.password_hash == hash => Ok((session, a)),
            Ok(_) | Err(AccountError::NotFound(_)) => {
                self.inner.sessions.remove(&session.id);
                Err(self.to_signin(
                    Notice::info("You were signed out")
                        .detail("The password or the account was changed. Please sign in again."),
                ))
            }
            Err(e) => Err(self.internal(e)),
        }
    }

    fn internal(&self, e: AccountError) -> Response {
        tracing::error!(event = "portal.error", error = %e);
        self.page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error_page(&self.ctx("")),
        )
    }

    fn notice(&self, session: &Session, notice: Notice) {
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
    fn back_to(&self, at: &str) -> Response {
        self.see_other(&format!("/my-account#{at}"))
    }

    /// The end of a plain account change in section `at`: on success the
    /// web session's own changes (`then`) and the `done` notice, on failure
    /// the error's notice; either way back to the section.
    fn changed<T>(
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

    /// Notices for a refused account change, by error.
    fn account_error(&self, session: &Session, e: AccountError, at: &'static str) {
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
            AccountError::OtpLocked(left) => {
                let minutes = left.div_ceil(60).max(1);
                Notice::error("Too many wrong codes").detail(format!(
                    "For your security, codes for this account are not accepted for the next {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                ))
            }
            e @ (AccountError::Store(_) | AccountError::Internal(_)) => {
                tracing::error!(event = "portal.error", error = %e);
                Notice::error("Something went wrong on our side")
                    .detail("Please try again in a minute.")
            }
        };
        self.notice(session, notice.at(at));
    }

    fn signin_event(&self, name: &'static str, account: &str, ip: IpAddr, reason: &str) {
        let mut event = Event::new(name).account(account).reason(reason);
        event.ip = Some(ip);
        self.inner.events.emit(event);
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

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Whether a change from `ip` comes from a network the policy block marks
/// as abusive (it is recorded but does not count towards the unblock rule).
fn from_abuse_network(a: &Account, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    a.block.as_ref().is_some_and(|b| {
        b.kind == BlockKind::Policy && b.abuse_networks.iter().any(|n| n.contains(&ip))
    })
}

fn abuse_network_notice(at: &'static str) -> Notice {
    Notice::info("This change does not lift the block").detail(
        "It was saved, but it was made from a network that was used in the abuse of your account. \
         Please make it again from another connection, for example your phone's mobile data or your home internet.",
    )
    .at(at)
}

fn client(p: &Portal, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    p.inner.settings.client_ip(peer.ip(), headers)
}

/// When a signed-in session last passed an OTP (`None`: not since 2FA
/// went off).
fn set_otp_at(s: &mut Session, at: Option<u64>) {
    if let Auth::SignedIn { otp_at, .. } = &mut s.auth {
        *otp_at = at;
    }
}

// ---- pages -------------------------------------------------------------

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

/// GET /: the sign-in page, or a redirect for a signed-in session.
pub async fn signin_page(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let (session, new) = match p.current(&headers) {
        Some(s) => (s, false),
        None => (p.inner.sessions.create(Auth::Anonymous), true),
    };
    match session.auth {
        Auth::SignedIn { .. } => return p.see_other("/my-account"),
        Auth::OtpPending { .. } => return p.see_other("/signin/otp"),
        Auth::Anonymous => {}
    }
    let mut notices = Vec::new();
    p.inner
        .sessions
        .update(&session.id, |s| notices = std::mem::take(&mut s.notices));
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

/// GET /signin/otp: the second sign-in step.
pub async fn otp_page(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let Some(session) = p.current(&headers) else {
        return p.see_other("/");
    };
    match &session.auth {
        Auth::OtpPending { since, .. } => {
            if p.now() >= since + OTP_STEP_TIME.as_secs() {
                p.inner.sessions.update(&session.id, |s| {
                    s.auth = Auth::Anonymous;
                    s.notices.push(
                        Notice::error("The sign-in took too long")
                            .detail("Please enter your email and password again."),
                    );
                });
                return p.see_other("/");
            }
        }
        Auth::SignedIn { .. } => return p.see_other("/my-account"),
        Auth::Anonymous => return p.see_other("/"),
    }
    let mut notices = Vec::new();
    p.inner
        .sessions
        .update(&session.id, |s| notices = std::mem::take(&mut s.notices));
    p.page(
        StatusCode::OK,
        html::otp_page(&p.ctx(&session.csrf), &notices),
    )
}

/// GET /my-account.
pub async fn account_page(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let Some(session) = p.current(&headers) else {
        return p.see_other("/");
    };
    let (session, account) = match p.signed_in(session).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut notices = Vec::new();
    let mut new_device = None;
    p.inner.sessions.update(&session.id, |s| {
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
        notices = std::mem::take(&mut s.notices);
        new_device = s.new_device.take();
        s.last_section = None;
    });
    let enrolment = if session.show_qr && account.totp.pending.is_some() {
        match p.inner.accounts.totp_pending(&account.address).await {
            Ok(e) => e,
            Err(e) => return p.internal(e),
        }
    } else {
        None
    };
    let otp_fresh = matches!(session.auth, Auth::SignedIn { otp_at: Some(t), .. }
        if p.now() < t + OTP_FRESH_SECS);
    let view = AccountView {
        account: &account,
        notices: &notices,
        new_device: new_device.as_ref(),
        enrolment: enrolment.as_ref(),
        otp_fresh,
        support_contact: p.inner.support_contact.as_deref(),
    };
    p.page(
        StatusCode::OK,
        html::account_page(&p.ctx(&session.csrf), &view),
    )
}

// ---- sign-in and sign-out ----------------------------------------------

/// POST /signin: email and password. Unknown and known addresses take the
/// same path: one store read, one argon2id verify, the same notice.
pub async fn signin(
    State(p): State<Portal>,
    Post {
        ip,
        session,
        form: f,
    }: Post,
) -> Response {
    if let Auth::SignedIn { .. } = session.auth {
        return p.see_other("/my-account");
    }
    let normalized = address::normalize(&f.email).ok();
    // What the failure counts and events use: the address as normalised,
    // or (not an address) what was typed, bounded.
    let key = normalized
        .clone()
        .unwrap_or_else(|| f.email.trim().to_lowercase().chars().take(254).collect());
    // The portal's own window, and the lockouts SMTP AUTH shares.
    let shared_lockout = p.inner.accounts.lockouts().check(ip, &key).is_err();
    if p.inner.signin.check(ip, &key).is_err() || shared_lockout {
        p.signin_event("portal.signin_failure", &key, ip, "locked_out");
        p.inner.sessions.update(&session.id, |s| {
            s.auth = Auth::Anonymous;
            s.notices.push(
                Notice::error("Too many failed sign-ins")
                    .detail("Please wait 15 minutes, then try again."),
            );
        });
        return p.see_other("/");
    }
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
    let usable = account.filter(|a| !a.disabled);
    let verified = p
        .inner
        .passwords
        .verify_from(
            ip,
            &f.password,
            usable.as_ref().map(|a| a.password_hash.as_str()),
        )
        .await;
    let ok = match verified {
        Ok(ok) => ok,
        Err(_busy) => {
            p.notice(
                &session,
                Notice::error("The service is busy").detail("Please try again in a minute."),
            );
            return p.see_other("/");
        }
    };
    let Some(account) = usable.filter(|_| ok) else {
        p.inner.signin.failure(ip, &key);
        let started = p.inner.accounts.lockouts().failure(ip, &key, &f.password);
        p.inner.accounts.report_lockouts(&key, started);
        p.signin_event("portal.signin_failure", &key, ip, "bad_credentials");
        p.inner.sessions.update(&session.id, |s| {
            s.auth = Auth::Anonymous;
            s.notices
                .push(Notice::error("The email or password is not right").detail(
                "Check both and try again. Use your account password here, not a device password.",
            ));
        });
        return p.see_other("/");
    };
    p.inner.signin.success(&key);
    p.inner.accounts.lockouts().success(ip, &key);
    if account.totp.active.is_some() {
        let s = p.inner.sessions.rotate(
            &session.id,
            Auth::OtpPending {
                address: account.address.clone(),
                since: p.now(),
                password_hash: account.password_hash.clone(),
            },
        );
        return p.see_other_with("/signin/otp", &s);
    }
    let s = p.inner.sessions.rotate(
        &session.id,
        Auth::SignedIn {
            address: account.address.clone(),
            otp_at: None,
            password_hash: account.password_hash.clone(),
        },
    );
    p.signin_event("portal.signin", &account.address, ip, "password");
    p.see_other_with("/my-account", &s)
}

/// POST /signin/otp: the code from the authenticator app.
pub async fn otp(
    State(p): State<Portal>,
    Post {
        ip,
        session,
        form: f,
    }: Post,
) -> Response {
    let Auth::OtpPending {
        address,
        since,
        password_hash,
    } = session.auth.clone()
    else {
        return p.see_other("/");
    };
    if p.now() >= since + OTP_STEP_TIME.as_secs() {
        return p.see_other("/signin/otp");
    }
    match p.inner.accounts.totp_check(&address, &f.otp).await {
        Ok(()) => {
            let current = p.inner.accounts.get(&address).await;
            if !matches!(&current, Ok(a) if !a.disabled && a.password_hash == password_hash) {
                p.inner.sessions.remove(&session.id);
                return p.to_signin(Notice::error("Please sign in again"));
            }
            let s = p.inner.sessions.rotate(
                &session.id,
                Auth::SignedIn {
                    address: address.clone(),
                    otp_at: Some(p.now()),
                    password_hash,
                },
            );
            p.signin_event("portal.signin", &address, ip, "otp");
            p.see_other_with("/my-account", &s)
        }
        Err(e @ (AccountError::BadCode | AccountError::OtpLocked(_))) => {
            let reason = if matches!(e, AccountError::BadCode) {
                "bad_otp"
            } else {
                "otp_locked"
            };
            p.signin_event("portal.signin_failure", &address, ip, reason);
            p.account_error(&session, e, "otp");
            p.see_other("/signin/otp")
        }
        Err(e) => {
            p.account_error(&session, e, "otp");
            p.see_other("/signin/otp")
        }
    }
}

/// POST /signout (also "Cancel" on the OTP step).
pub async fn signout(State(p): State<Portal>, Post { session, .. }: Post) -> Response {
    p.inner.sessions.remove(&session.id);
    p.to_signin(Notice::success("You have signed out"))
}

// ---- My account actions --------------------------------------------------

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
    if p.inner
        .signin
        .check(post.ip, &post.account.address)
        .is_err()
    {
        p.notice(
            &post.session,
            Notice::error("Too many wrong passwords")
                .detail("Please wait 15 minutes, then try again.")
                .at(AT),
        );
        return p.back_to(AT);
    }
    match p
        .inner
        .passwords
        .verify(&post.form.current, Some(&post.account.password_hash))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            p.inner.signin.failure(post.ip, &post.account.address);
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
    if post.form.new == post.form.current {
        p.notice(
            &post.session,
            Notice::error("The new password must be different from your current password").at(AT),
        );
        return p.back_to(AT);
    }
    match p
        .inner
        .accounts
        .set_password(
            &post.account.address,
            &post.form.new,
            &Origin::portal(post.ip),
        )
        .await
    {
        Ok(updated) => {
            p.inner.sessions.update(&post.session.id, |s| {
                if let Auth::SignedIn { password_hash, .. } = &mut s.auth {
                    *password_hash = updated.password_hash.clone();
                }
            });
            let others = p
                .inner
                .sessions
                .sign_out_others(&post.account.address, &post.session.id);
            let detail = if others > 0 {
                "Use it the next time you sign in. Other browsers signed in to this account were signed out."
            } else {
                "Use it the next time you sign in."
            };
            p.notice(
                &post.session,
                Notice::success("Password changed").detail(detail).at(AT),
            );
            if from_abuse_network(&post.account, post.ip) {
                p.notice(&post.session, abuse_network_notice(AT));
            }
        }
        Err(e) => p.account_error(&post.session, e, AT),
    }
    p.back_to(AT)
}

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
        .totp_enable(&post.account.address, &Origin::portal(post.ip))
        .await;
    p.changed(
        &post.session,
        AT,
        result,
        |s| s.show_qr = false,
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
        .totp_verify(
            &post.account.address,
            &post.form.otp,
            &Origin::portal(post.ip),
        )
        .await
    {
        Ok(_) => {
            let now = p.now();
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
            if from_abuse_network(&post.account, post.ip) {
                p.notice(&post.session, abuse_network_notice(AT));
            }
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

/// POST /my-account/2fa/confirm: a code, so this session may create
/// device passwords for the next 15 minutes.
pub async fn confirm_otp(State(p): State<Portal>, post: SignedIn) -> Response {
    const AT: &str = "devices";
    let result = p
        .inner
        .accounts
        .totp_check(&post.account.address, &post.form.otp)
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
        .totp_disable(
            &post.account.address,
            Some(&post.form.otp),
            &Origin::portal(post.ip),
        )
        .await;
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
        .device_password_add(&post.account.address, &name, &Origin::portal(post.ip))
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
        .device_password_revoke(
            &post.account.address,
            &post.form.name,
            &Origin::portal(post.ip),
        )
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
