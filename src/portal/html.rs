//! Server-rendered pages. No JavaScript, no inline styles or scripts (the
//! CSP forbids them): one stylesheet, `/style.css`. Every visible label is
//! a real `<label for>`, every action a `<button>`; the help page's words
//! (My account, Two-factor Authentication, Enable 2FA, QR Code, Verify 2FA,
//! OTP, Verify, Device passwords, Name, Create) appear exactly so.

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::session::{Notice, NoticeKind};
use crate::accounts::{Account, BlockKind, TotpEnrolment};

/// What every page needs.
pub struct Ctx<'a> {
    /// The path prefix of `public_url` ("" or "/account").
    pub prefix: &'a str,
    pub csrf: &'a str,
    /// Shown in the header: the name users also see in their authenticator app.
    pub brand: &'a str,
}

impl Ctx<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }

    fn csrf_field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            esc(self.csrf)
        )
    }

    /// `<form method="post">` with the CSRF field.
    fn form(&self, action: &str, class: &str) -> String {
        let class = if class.is_empty() {
            String::new()
        } else {
            format!(r#" class="{class}""#)
        };
        format!(
            r#"<form method="post" action="{}"{class}>{}"#,
            esc(&self.url(action)),
            self.csrf_field()
        )
    }
}

/// HTML-escapes text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(ctx: &Ctx, title: &str, signed_in: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · {brand}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{css}">
</head>
<body>
<header class="top"><span class="brand">{brand}</span>"#,
        title = esc(title),
        brand = esc(ctx.brand),
        css = esc(&ctx.url("/style.css")),
    );
    if let Some(address) = signed_in {
        let _ = write!(
            out,
            r#"<span class="who">Signed in as <strong>{}</strong></span>"#,
            esc(address)
        );
    }
    out.push_str("</header>\n");
    match signed_in {
        Some(_) => {
            let _ = write!(
                out,
                r#"<div class="layout">
<nav aria-label="Menu">
<ul>
<li><a href="{account}" aria-current="page">My account</a></li>
</ul>
{signout}<button type="submit" class="link">Sign out</button></form>
</nav>
<main>
{body}
</main>
</div>
"#,
                account = esc(&ctx.url("/my-account")),
                signout = ctx.form("/signout", "signout"),
            );
        }
        None => {
            let _ = write!(out, "<main class=\"narrow\">\n{body}\n</main>\n");
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Every notice (the sign-in pages have no sections).
fn notices(list: &[Notice]) -> String {
    list.iter()
        .map(|n| notices_at(std::slice::from_ref(n), n.at))
        .collect()
}

/// The notices that belong to one section (`None`: the top of the page).
fn notices_at(list: &[Notice], at: Option<&str>) -> String {
    let mut out = String::new();
    for n in list.iter().filter(|n| n.at == at) {
        let (class, role) = match n.kind {
            NoticeKind::Success => ("success", "status"),
            NoticeKind::Info => ("info", "status"),
            NoticeKind::Error => ("error", "alert"),
        };
        let _ = write!(
            out,
            r#"<div class="notice {class}" role="{role}"><p class="notice-title">{}</p>"#,
            esc(&n.title)
        );
        if let Some(detail) = &n.detail {
            let _ = write!(out, "<p>{}</p>", esc(detail));
        }
        out.push_str("</div>\n");
    }
    out
}

pub fn signin_page(ctx: &Ctx, list: &[Notice]) -> String {
    let body = format!(
        r#"<h1>Sign in</h1>
<p class="lead">Sign in with your email address and password to manage your account.</p>
{notices}{form}
<label for="email">Email</label>
<input type="text" id="email" name="email" inputmode="email" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<details class="card" id="recovery-request">
<summary>Blocked, and the password no longer works?</summary>
<p>If your account is blocked from sending and has a confirmed recovery address, we email a recovery link to it. Open it in this browser to change your password and enable 2FA.</p>
{recovery}
<label for="recovery-email">Your email address</label>
<input type="text" id="recovery-email" name="email" inputmode="email" autocomplete="username" autocapitalize="none" spellcheck="false" required>
<button type="submit">Email me a recovery link</button>
</form>
</details>
"#,
        notices = notices(list),
        form = ctx.form("/signin", "card"),
        recovery = ctx.form("/recovery/request", ""),
    );
    layout(ctx, "Sign in", None, &body)
}

pub fn otp_page(ctx: &Ctx, list: &[Notice]) -> String {
    let body = format!(
        r#"<h1>Two-factor Authentication</h1>
<p class="lead">Open your authenticator app and enter the 6-digit code it shows for this account.</p>
{notices}{form}
<label for="otp">OTP</label>
<input type="text" id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code" maxlength="10" required autofocus>
<button type="submit">Verify</button>
</form>
{cancel}<button type="submit" class="link">Cancel</button></form>
"#,
        notices = notices(list),
        form = ctx.form("/signin/otp", "card"),
        cancel = ctx.form("/signout", "cancel"),
    );
    layout(ctx, "Two-factor Authentication", None, &body)
}

pub fn forbidden_page(ctx: &Ctx) -> String {
    let body = format!(
        r#"<h1>This form was not accepted</h1>
<p>It was out of date or was sent from another site. Nothing was changed.</p>
<p><a href="{}">Go back and try again</a></p>
"#,
        esc(&ctx.url("/"))
    );
    layout(ctx, "Not accepted", None, &body)
}

pub fn not_found_page(ctx: &Ctx) -> String {
    let body = format!(
        r#"<h1>Page not found</h1>
<p><a href="{}">Go to the sign-in page</a></p>
"#,
        esc(&ctx.url("/"))
    );
    layout(ctx, "Not found", None, &body)
}

pub fn error_page(ctx: &Ctx) -> String {
    let body = format!(
        r#"<h1>Something went wrong</h1>
<p>Please try again in a minute.</p>
<p><a href="{}">Go to the sign-in page</a></p>
"#,
        esc(&ctx.url("/"))
    );
    layout(ctx, "Error", None, &body)
}

/// Everything the My account page shows.
pub struct AccountView<'a> {
    pub account: &'a Account,
    pub notices: &'a [Notice],
    pub new_device: Option<&'a (String, String)>,
    /// With `new_device`: offer it as a `.mobileconfig` download.
    pub apple_profile: bool,
    /// Present while enrolment is pending and the QR Code button was pressed.
    pub enrolment: Option<&'a TotpEnrolment>,
    /// An OTP was passed in this web session in the last 15 minutes.
    pub otp_fresh: bool,
    pub support_contact: Option<&'a str>,
    /// Changes from this browser's network may lift the block (`trust`).
    pub network_qualifies: bool,
    /// The recovery address may receive a recovery link for this block.
    pub recovery_link: bool,
}

pub fn account_page(ctx: &Ctx, v: &AccountView) -> String {
    let a = v.account;
    let mut body = String::with_capacity(8 * 1024);
    body.push_str("<h1>My account</h1>\n");
    body.push_str(&notices_at(v.notices, None));
    body.push_str(&block_banner(ctx, v));
    body.push_str(&password_section(ctx, v));
    body.push_str(&two_factor_section(ctx, v));
    body.push_str(&devices_section(ctx, v));
    body.push_str(&recovery_section(ctx, v));
    layout(ctx, "My account", Some(&a.address), &body)
}

/// Whether a change of `change` after the block earned unblock credit.
fn step_done(a: &Account, change: &str) -> bool {
    let Some(block) = &a.block else { return false };
    a.history
        .iter()
        .any(|h| h.seq > block.seq && h.unblock_credit && h.change == change)
}

fn block_banner(ctx: &Ctx, v: &AccountView) -> String {
    let a = v.account;
    let Some(block) = &a.block else {
        return String::new();
    };
    match block.kind {
        BlockKind::Policy => {
            let step = |done: bool, text: &str| {
                let badge = if done {
                    r#" <span class="badge done">Done</span>"#
                } else {
                    r#" <span class="badge">To do</span>"#
                };
                format!("<li>{text}{badge}</li>")
            };
            format!(
                r#"<div class="banner" role="alert">
<p class="banner-title">Your account has been blocked from sending: {reason}.</p>
<p>Either your password was stolen, or the email sent from your account did not follow our outbound email policy. To send again, do both of these here:</p>
<ol>
{s1}
{s2}
</ol>
<p>The block lifts as soon as both are done. Your mail that was waiting is sent then.</p>
{elsewhere}</div>
"#,
                reason = esc(&block.reason),
                elsewhere = if v.network_qualifies {
                    String::new()
                } else {
                    let contact = match v.support_contact {
                        Some(c) => format!(" at <strong>{}</strong>", esc(c)),
                        None => String::new(),
                    };
                    let link = if v.recovery_link {
                        format!(
                            r#"{}<p>Or we send a recovery link to your recovery address; open it in this browser and do both steps here.</p>
<button type="submit">Email me a recovery link</button>
</form>
"#,
                            ctx.form("/my-account/recovery/link", "")
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        r#"<p class="safety"><strong>For your safety, this change needs a network you have sent mail from before.</strong> Sign in from a computer or phone on a network you usually send mail from (your home or office) and do both steps there, or contact support{contact}.</p>
{link}"#
                    )
                },
                s1 = step(
                    step_done(a, "password_changed"),
                    r##"<a href="#password">Change your password</a>"##
                ),
                s2 = step(
                    step_done(a, "totp_enabled"),
                    r##"<a href="#two-factor">Enable Two-factor Authentication (2FA)</a>"##
                ),
            )
        }
        BlockKind::Operator => {
            let contact = match v.support_contact {
                Some(c) => format!(" at <strong>{}</strong>", esc(c)),
                None => String::new(),
            };
            format!(
                r#"<div class="banner" role="alert">
<p class="banner-title">Your account has been blocked from sending by the administrator: {reason}.</p>
<p>Please contact support{contact}.</p>
</div>
"#,
                reason = esc(&block.reason),
            )
        }
    }
}

fn password_section(ctx: &Ctx, v: &AccountView) -> String {
    format!(
        r#"<section class="card" id="password" aria-labelledby="password-title">
<h2 id="password-title">Change password</h2>
{notices}{form}
<label for="current-password">Current password</label>
<input type="password" id="current-password" name="current" autocomplete="current-password" required>
<label for="new-password">New password</label>
<input type="password" id="new-password" name="new" autocomplete="new-password" aria-describedby="password-rule" required>
<p class="hint" id="password-rule">12 to 1024 characters, not your email address, and different from your current password. A few unrelated words make a strong password that is easy to remember.</p>
<label for="repeat-password">Repeat new password</label>
<input type="password" id="repeat-password" name="repeat" autocomplete="new-password" required>
<button type="submit">Change password</button>
</form>
</section>
"#,
        notices = notices_at(v.notices, Some("password")),
        form = ctx.form("/my-account/password", ""),
    )
}

fn two_factor_section(ctx: &Ctx, v: &AccountView) -> String {
    let a = v.account;
    let on = a.totp.active.is_some();
    let pending = a.totp.pending.is_some();
    let mut out = String::from(
        r#"<section class="card" id="two-factor" aria-labelledby="two-factor-title">
<h2 id="two-factor-title">Two-factor Authentication</h2>
"#,
    );
    out.push_str(&notices_at(v.notices, Some("two-factor")));
    let status = match (on, pending) {
        (false, false) => {
            "<p><strong>2FA is off.</strong> With 2FA on, signing in here also needs a 6-digit code from an authenticator app on your phone (such as Google Authenticator or Authy), and desktop email programs use device passwords.</p>"
        }
        (false, true) => {
            "<p><strong>Setup started.</strong> Click <em>QR Code</em> and scan it with your authenticator app, then enter the 6-digit code the app shows under <em>Verify 2FA</em>. (<em>Enable 2FA</em> starts again with a new key.)</p>"
        }
        (true, false) => "<p><strong>2FA is on.</strong></p>",
        (true, true) => {
            "<p><strong>2FA is on, and a new key is waiting.</strong> Click <em>QR Code</em>, scan it, and verify a code from it. Your current key keeps working until then.</p>"
        }
    };
    out.push_str(status);
    out.push('\n');
    // Enable 2FA: when off (while pending it starts again with a new key,
    // so the help page's "Click 'Enable 2FA'" always works), and to re-enrol
    // while a policy block is on.
    if !on || a.policy_blocked() {
        // While pending, QR Code is the next step: Enable 2FA steps back.
        let class = if pending { r#" class="secondary""# } else { "" };
        let _ = writeln!(
            out,
            "{}<button type=\"submit\"{class}>Enable 2FA</button></form>",
            ctx.form("/my-account/2fa/enable", "inline")
        );
    }
    if pending {
        let _ = writeln!(
            out,
            "{}<button type=\"submit\">QR Code</button></form>",
            ctx.form("/my-account/2fa/qr", "inline")
        );
        if let Some(e) = v.enrolment {
            out.push_str(&qr_block(e));
        }
        let _ = write!(
            out,
            r#"<h3 id="verify-title">Verify 2FA</h3>
{form}
<label for="otp">OTP</label>
<input type="text" id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code" maxlength="10" aria-describedby="otp-hint" required>
<p class="hint" id="otp-hint">The 6-digit code your authenticator app shows now.</p>
<button type="submit">Verify</button>
</form>
"#,
            form = ctx.form("/my-account/2fa/verify", ""),
        );
    }
    if on {
        let _ = write!(
            out,
            r#"<details class="disable">
<summary>Turn off 2FA</summary>
<p>Turning 2FA off also deletes every device password.</p>
{form}
<label for="disable-code">Code from your authenticator app</label>
<input type="text" id="disable-code" name="otp" inputmode="numeric" autocomplete="one-time-code" maxlength="10" required>
<button type="submit" class="danger">Disable 2FA</button>
</form>
</details>
"#,
            form = ctx.form("/my-account/2fa/disable", ""),
        );
    }
    out.push_str("</section>\n");
    out
}

fn qr_block(e: &TotpEnrolment) -> String {
    let img = match &e.qr_png {
        Some(png) => format!(
            r#"<img src="data:image/png;base64,{}" alt="QR code" width="220" height="220">"#,
            STANDARD.encode(png)
        ),
        None => String::new(),
    };
    format!(
        r#"<div class="qr" id="qr">
{img}
<div>
<p>Scan this with your authenticator app: tap <strong>+</strong>, then <strong>Scan a QR code</strong>. If you cannot scan it, choose <strong>Enter a setup key</strong> and type this key:</p>
<dl>
<dt>Key</dt>
<dd><code class="key">{key}</code></dd>
</dl>
</div>
</div>
"#,
        key = esc(&e.key),
    )
}

fn recovery_section(ctx: &Ctx, v: &AccountView) -> String {
    let state = match &v.account.recovery {
        None => "You have no recovery address.".to_string(),
        Some(r) if r.confirmed_at.is_some() => format!(
            "Your recovery address is <strong>{}</strong>.",
            esc(&r.address)
        ),
        Some(r) => format!(
            "Your recovery address will be <strong>{}</strong> once you open the link we sent to it.",
            esc(&r.address)
        ),
    };
    format!(
        r#"<section class="card" id="recovery" aria-labelledby="recovery-title">
<h2 id="recovery-title">Recovery address</h2>
<p>Another mailbox of yours. It gets a copy of every security notice, and if your account is ever blocked while you cannot reach your usual network, a recovery link. It counts 7 days after you set it from a network you send mail from.</p>
<p>{state}</p>
{notices}{form}
<label for="recovery-address">Recovery address</label>
<input type="text" id="recovery-address" name="email" inputmode="email" autocomplete="email" autocapitalize="none" spellcheck="false" required>
<button type="submit">Set recovery address</button>
</form>
</section>
"#,
        notices = notices_at(v.notices, Some("recovery")),
        form = ctx.form("/my-account/recovery", ""),
    )
}

/// The page a recovery mail's link opens: one button, so a mail scanner
/// that follows links uses nothing up.
pub fn recovery_page(ctx: &Ctx, address: &str, kind: &str, token: &str) -> String {
    let (title, lead, button) = match kind {
        "confirm" => (
            "Confirm recovery address",
            format!(
                "Confirm that this mailbox is the recovery address of {}.",
                esc(address)
            ),
            "Confirm",
        ),
        _ => (
            "Recover your account",
            format!(
                "Continue to My account for {} in this browser, and do the steps there.",
                esc(address)
            ),
            "Continue",
        ),
    };
    let body = format!(
        r#"<h1>{title}</h1>
<p class="lead">{lead}</p>
{form}
<input type="hidden" name="email" value="{a}">
<input type="hidden" name="kind" value="{k}">
<input type="hidden" name="token" value="{t}">
<button type="submit">{button}</button>
</form>
"#,
        form = ctx.form("/recovery", "card"),
        a = esc(address),
        k = esc(kind),
        t = esc(token),
    );
    layout(ctx, title, None, &body)
}

fn devices_section(ctx: &Ctx, v: &AccountView) -> String {
    let a = v.account;
    let mut out = String::from(
        r#"<section class="card" id="devices" aria-labelledby="devices-title">
<h2 id="devices-title">Device passwords</h2>
<p>Desktop email programs such as Outlook or Thunderbird cannot ask for a 2FA code. Give each one its own device password and use it there instead of your password; your email address stays the user name.</p>
"#,
    );
    out.push_str(&notices_at(v.notices, Some("devices")));
    if let Some((name, password)) = v.new_device {
        let _ = write!(
            out,
            r#"<div class="new-secret" role="status">
<p>Your new device password for <strong>{name}</strong>:</p>
<p><code class="secret" id="new-device-password">{password}</code></p>
<p><strong>It is shown only this once.</strong> Enter it in your email program now, or write it down: it will not be shown again.</p>
</div>
"#,
            name = esc(name),
            password = esc(password),
        );
        if v.apple_profile {
            let _ = write!(
                out,
                r#"{form}
<button type="submit">Download for iPhone, iPad or Mac (.mobileconfig)</button>
<p class="hint">A profile that sets up Mail with this device password. It can be downloaded once, only now. Open it on the device, then install it under Settings, Profile Downloaded (on a Mac: System Settings, Profiles).</p>
</form>
"#,
                form = ctx.form("/my-account/devices/profile", ""),
            );
        }
    }
    let on = a.totp.active.is_some();
    if !on {
        out.push_str("<p class=\"hint\">Device passwords are available once 2FA is on.</p>\n");
    } else if a.policy_blocked() {
        out.push_str(
            "<p class=\"hint\">You can create device passwords as soon as the block is lifted.</p>\n",
        );
    } else if v.otp_fresh {
        let _ = write!(
            out,
            r#"{form}
<label for="device-name">Name</label>
<input type="text" id="device-name" name="name" maxlength="64" aria-describedby="device-name-hint" required>
<p class="hint" id="device-name-hint">For example the program or computer it is for, or your first name.</p>
<button type="submit">Create</button>
</form>
"#,
            form = ctx.form("/my-account/devices/create", ""),
        );
    } else {
        let _ = write!(
            out,
            r#"<p>To create a device password, first confirm a code from your authenticator app.</p>
{form}
<label for="confirm-code">Code from your authenticator app</label>
<input type="text" id="confirm-code" name="otp" inputmode="numeric" autocomplete="one-time-code" maxlength="10" required>
<button type="submit">Confirm</button>
</form>
"#,
            form = ctx.form("/my-account/2fa/confirm", ""),
        );
    }
    if !a.device_passwords.is_empty() {
        let suspended = a.policy_blocked();
        out.push_str("<h3>Your device passwords</h3>\n<ul class=\"devices\">\n");
        for d in &a.device_passwords {
            let last = match (d.last_used, d.last_ip) {
                (Some(t), Some(ip)) => format!("{} from {}", when(t), ip),
                (Some(t), None) => when(t),
                _ => "never".into(),
            };
            let state = if suspended {
                r#" <span class="badge">Suspended</span>"#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<li><div><strong>{name}</strong>{state}<br><span class="hint">Created {created} · Last used {last}</span></div>{form}<input type="hidden" name="name" value="{name}"><button type="submit" class="danger small" aria-label="Revoke {name}">Revoke</button></form></li>"#,
                name = esc(&d.name),
                created = when(d.created),
                last = esc(&last),
                form = ctx.form("/my-account/devices/revoke", "revoke"),
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
    out
}

/// `2026-11-28 08:00 UTC`.
fn when(unix: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_dates() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(when(1_795_852_800), "2026-11-28 08:00 UTC");
    }
}
