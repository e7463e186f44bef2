//! The "My account" web portal over real HTTP: routes, Post/Redirect/Get,
//! CSRF, sessions, the OTP step, 2FA enrolment, device passwords, blocks.

use crate::common::server_with_clock;
use std::time::{Duration, Instant};

use mailwarden::accounts::{BlockKind, BlockRequest, Origin, totp};
use mailwarden::clock::{Clock, ManualClock};
use mailwarden::config::{Config, ConfigSource};

use crate::common::web::{
    Resp, Web, account_page, act, enable_2fa_with, key_on, otp_step, sign_in,
};
use crate::common::{PASSWORD, TestServer, base32_decode, send_from_home_for_a_week};

const ALICE: &str = "alice@example.com";
const NEW_PASSWORD: &str = "a brand new passphrase";

fn web(server: &TestServer) -> Web {
    Web::new(server.running().portal)
}

async fn signed_in(server: &TestServer, password: &str) -> Web {
    let mut w = web(server);
    let r = sign_in(&mut w, ALICE, password).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
    w
}

/// Changes the password from `PASSWORD` to `NEW_PASSWORD` on My account.
async fn change_password(w: &mut Web) -> Resp {
    act(
        w,
        "/my-account/password",
        &[
            ("current", PASSWORD),
            ("new", NEW_PASSWORD),
            ("repeat", NEW_PASSWORD),
        ],
    )
    .await
}

/// Enable 2FA, QR Code, Verify, all through the portal; returns the secret
/// and the page shown after Verify (with its one-time notices).
async fn enable_2fa(w: &mut Web, clock: &ManualClock) -> (Vec<u8>, String) {
    enable_2fa_with(w, |secret| next_code(clock, secret)).await
}

/// A code for the next TOTP step (each step is accepted once).
fn next_code(clock: &ManualClock, secret: &[u8]) -> String {
    clock.advance(Duration::from_secs(30));
    totp::code_at(secret, clock.unix())
}

fn policy_block(networks: &[&str]) -> BlockRequest {
    BlockRequest {
        kind: BlockKind::Policy,
        reason: "sending to many new recipients".into(),
        detail: Some("score 12.5: new recipients 40/h over threshold 25".into()),
        abuse_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

/// 2FA turned on by the operator; returns the secret.
async fn two_factor_by_admin(server: &TestServer, clock: &ManualClock) -> Vec<u8> {
    let enrolment = server
        .accounts()
        .totp_enable(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    let secret = base32_decode(&enrolment.key);
    let code = next_code(clock, &secret);
    server
        .accounts()
        .totp_verify(ALICE, &code, &Origin::ADMIN)
        .await
        .unwrap();
    secret
}

async fn history_len(server: &TestServer) -> usize {
    server.accounts().get(ALICE).await.unwrap().history.len()
}

#[tokio::test]
async fn each_route_answers_with_security_headers() {
    let (server, _) = server_with_clock("").await;
    let mut w = web(&server);

    // GET /: the sign-in page, a session cookie, the security headers.
    let page = w.get("/").await;
    assert_eq!(page.status, 200);
    for label in [
        r#"<label for="email">Email</label>"#,
        r#"<label for="password">Password</label>"#,
        r#"<button type="submit">Sign in</button>"#,
    ] {
        assert!(page.body.contains(label), "{label} missing");
    }
    let cookie = page.header("set-cookie").unwrap();
    assert!(cookie.starts_with("mw_session="), "{cookie}");
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("img-src 'self' data:"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(!page.body.contains("<script"), "no JavaScript");
    assert!(!page.body.contains("style="), "no inline styles");

    let css = w.get("/style.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.body.contains("@media (max-width"), "phone layout");

    assert_eq!(w.get("/no-such-page").await.status, 404);
    // Signed out: the account pages send you to sign-in.
    for path in ["/my-account", "/signin/otp"] {
        let r = w.get(path).await;
        assert_eq!((r.status, r.location()), (303, "/"), "{path}");
    }

    // Sign in: 303 to My account, which has the left menu.
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
    let event = server.wait_event("portal.signin").await;
    assert_eq!(event.account.as_deref(), Some(ALICE));
    assert_eq!(event.ip, Some("127.0.0.1".parse().unwrap()));
    let me = account_page(&mut w).await;
    let nav = &me.body[me.body.find("<nav").unwrap()..me.body.find("</nav>").unwrap()];
    assert!(
        nav.contains(r#"<a href="/my-account" aria-current="page">My account</a>"#),
        "{nav}"
    );
    for text in [
        "<h2 id=\"password-title\">Change password</h2>",
        r#"<label for="current-password">Current password</label>"#,
        r#"<label for="new-password">New password</label>"#,
        r#"<label for="repeat-password">Repeat new password</label>"#,
        r#"<button type="submit">Change password</button>"#,
        "<h2 id=\"two-factor-title\">Two-factor Authentication</h2>",
        r#"<button type="submit">Enable 2FA</button>"#,
        "<h2 id=\"devices-title\">Device passwords</h2>",
    ] {
        assert!(me.body.contains(text), "{text} missing");
    }
    assert_eq!(me.header("cache-control"), Some("no-store"));
    // Signed in: GET / and the OTP page go to My account.
    for path in ["/", "/signin/otp"] {
        let r = w.get(path).await;
        assert_eq!((r.status, r.location()), (303, "/my-account"), "{path}");
    }

    // Sign out: the cookie no longer opens My account.
    let old = w.cookie.clone();
    let r = act(&mut w, "/signout", &[]).await;
    assert_eq!(r.location(), "/");
    assert!(w.get("/").await.body.contains("You have signed out"));
    w.cookie = old;
    assert_eq!(w.get("/my-account").await.location(), "/");
}

#[tokio::test]
async fn every_post_answers_303_see_other() {
    let (server, clock) = server_with_clock("").await;
    let mut w = web(&server);
    // Sign-in, wrong and right.
    let r = sign_in(&mut w, ALICE, "wrong password here").await;
    assert_eq!((r.status, r.location()), (303, "/"));
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));

    // Every My account form, with bad input and with good input.
    let secret;
    {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("/my-account/password", &[]),
            (
                "/my-account/password",
                &[("current", PASSWORD), ("new", "short"), ("repeat", "short")],
            ),
            ("/my-account/2fa/qr", &[]),
            ("/my-account/2fa/verify", &[("otp", "123456")]),
            ("/my-account/2fa/confirm", &[("otp", "x")]),
            ("/my-account/2fa/disable", &[]),
            ("/my-account/devices/create", &[("name", "Outlook")]),
            ("/my-account/devices/revoke", &[("name", "nothing")]),
            ("/my-account/2fa/enable", &[]),
        ];
        for (path, fields) in cases {
            let r = act(&mut w, path, fields).await;
            let target = r.location().split('#').next().unwrap().to_string();
            assert!(target.starts_with('/'), "{path} -> {target}");
            let page = w.get(&target).await;
            assert_eq!(page.status, 200, "{path} -> {target}");
        }
        let key = key_on(&{
            act(&mut w, "/my-account/2fa/qr", &[]).await;
            account_page(&mut w).await.body
        })
        .unwrap();
        secret = base32_decode(&key);
        let code = next_code(&clock, &secret);
        let r = act(&mut w, "/my-account/2fa/verify", &[("otp", &code)]).await;
        assert_eq!(r.location(), "/my-account#two-factor");
        let r = act(&mut w, "/my-account/devices/create", &[("name", "Outlook")]).await;
        assert_eq!(r.location(), "/my-account#devices");
        let r = act(&mut w, "/my-account/devices/revoke", &[("name", "Outlook")]).await;
        assert_eq!(r.location(), "/my-account#devices");
        let code = next_code(&clock, &secret);
        let r = act(&mut w, "/my-account/2fa/confirm", &[("otp", &code)]).await;
        assert_eq!(r.location(), "/my-account#devices");
        let r = change_password(&mut w).await;
        assert_eq!(r.location(), "/my-account#password");
        let code = next_code(&clock, &secret);
        let r = act(&mut w, "/my-account/2fa/disable", &[("otp", &code)]).await;
        assert_eq!(r.location(), "/my-account#two-factor");
        assert_eq!(
            server.accounts().get(ALICE).await.unwrap().totp_status(),
            "off"
        );
    }
    let r = act(&mut w, "/signout", &[]).await;
    assert_eq!(r.location(), "/");

    // The OTP step: wrong code and right code.
    let mut w = web(&server);
    let secret = two_factor_by_admin(&server, &clock).await;
    let r = sign_in(&mut w, ALICE, NEW_PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/signin/otp"));
    let r = otp_step(&mut w, "000000").await;
    assert_eq!((r.status, r.location()), (303, "/signin/otp"));
    // The failure names the client it came from.
    let failure = server.wait_event("auth.otp_failure").await;
    assert_eq!(failure.ip, Some("127.0.0.1".parse().unwrap()));
    let code = next_code(&clock, &secret);
    let r = otp_step(&mut w, &code).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_change_nothing() {
    let (server, _) = server_with_clock("").await;

    // Sign-in needs the token too.
    let mut w = web(&server);
    w.get("/").await;
    let r = w
        .post("/signin", &[("email", ALICE), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status, 403);
    let r = w
        .post(
            "/signin",
            &[("csrf", "forged"), ("email", ALICE), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(w.get("/my-account").await.location(), "/", "not signed in");

    let mut w = signed_in(&server, PASSWORD).await;
    let csrf = account_page(&mut w).await.csrf();
    let before = history_len(&server).await;
    let forms: &[(&str, &[(&str, &str)])] = &[
        (
            "/my-account/password",
            &[
                ("current", PASSWORD),
                ("new", NEW_PASSWORD),
                ("repeat", NEW_PASSWORD),
            ],
        ),
        ("/my-account/2fa/enable", &[]),
        ("/my-account/2fa/qr", &[]),
        ("/my-account/2fa/verify", &[("otp", "123456")]),
        ("/my-account/2fa/confirm", &[("otp", "123456")]),
        ("/my-account/2fa/disable", &[("otp", "123456")]),
        ("/my-account/devices/create", &[("name", "evil")]),
        ("/my-account/devices/revoke", &[("name", "evil")]),
        ("/signout", &[]),
    ];
    for (path, fields) in forms {
        // No token, a wrong token, and the right token sent cross-site.
        let r = w.post(path, fields).await;
        assert_eq!(r.status, 403, "{path} without a token");
        let mut forged = vec![("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
        forged.extend_from_slice(fields);
        let r = w.post(path, &forged).await;
        assert_eq!(r.status, 403, "{path} with a wrong token");
        let mut real = vec![("csrf", csrf.as_str())];
        real.extend_from_slice(fields);
        let r = w
            .post_with(
                path,
                &real,
                &[
                    ("Origin", "https://evil.example"),
                    ("Sec-Fetch-Site", "cross-site"),
                ],
            )
            .await;
        assert_eq!(r.status, 403, "{path} cross-site");
        assert!(r.body.contains("Nothing was changed"));
    }
    // What a browser sends cross-site with SameSite=Strict: no cookie.
    let mut stranger = web(&server);
    let r = stranger
        .post(
            "/my-account/password",
            &[
                ("csrf", &csrf),
                ("current", PASSWORD),
                ("new", NEW_PASSWORD),
                ("repeat", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/"));

    assert_eq!(history_len(&server).await, before, "nothing changed");
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "off"
    );
    // Still signed in, and the real token still works.
    assert_eq!(account_page(&mut w).await.csrf(), csrf);
}

#[tokio::test]
async fn sessions_rotate_at_sign_in_and_expire_when_idle() {
    let (server, clock) = server_with_clock("[portal]\nsession_idle_timeout = \"10m\"\n").await;
    let mut w = web(&server);
    w.get("/").await;
    let anonymous = w.cookie.clone().unwrap();
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!(r.status, 303);
    let signed = w.cookie.clone().unwrap();
    assert_ne!(anonymous, signed, "a new session id at sign-in");
    assert!(r.header("set-cookie").is_some());
    // The pre-sign-in id does not open the account.
    let mut old = web(&server);
    old.cookie = Some(anonymous);
    assert_eq!(old.get("/my-account").await.location(), "/");

    // Used within the idle time: still signed in.
    clock.advance(Duration::from_secs(9 * 60));
    account_page(&mut w).await;
    clock.advance(Duration::from_secs(9 * 60));
    let csrf = account_page(&mut w).await.csrf();
    // Idle for 10 minutes: signed out, and a form posted then changes nothing.
    clock.advance(Duration::from_secs(10 * 60));
    let r = w.post("/my-account/2fa/enable", &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.location()), (303, "/"));
    let page = w.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Your session has ended"));
    assert_eq!(w.get("/my-account").await.location(), "/");
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "off"
    );
}

#[tokio::test]
async fn the_otp_step_cannot_be_skipped_and_guesses_are_limited() {
    let (server, clock) = server_with_clock("").await;
    let secret = two_factor_by_admin(&server, &clock).await;

    let mut w = web(&server);
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/signin/otp"));
    let step = w.get("/signin/otp").await;
    assert!(step.body.contains(r#"<label for="otp">OTP</label>"#));
    let csrf = step.csrf();
    // Past the password but not the code: no account page, no changes.
    assert_eq!(w.get("/my-account").await.location(), "/signin/otp");
    assert_eq!(w.get("/").await.location(), "/signin/otp");
    let before = history_len(&server).await;
    for (path, fields) in [
        (
            "/my-account/password",
            vec![
                ("current", PASSWORD),
                ("new", NEW_PASSWORD),
                ("repeat", NEW_PASSWORD),
            ],
        ),
        ("/my-account/devices/create", vec![("name", "thief")]),
        ("/my-account/2fa/disable", vec![("otp", "123456")]),
    ] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        let r = w.post(path, &all).await;
        assert_eq!((r.status, r.location()), (303, "/signin/otp"), "{path}");
    }
    assert_eq!(history_len(&server).await, before);

    // Five wrong codes lock code entry for this account for 15 minutes.
    let right = next_code(&clock, &secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        let r = w
            .post("/signin/otp", &[("csrf", &csrf), ("otp", wrong)])
            .await;
        assert_eq!(r.location(), "/signin/otp");
    }
    let r = w
        .post("/signin/otp", &[("csrf", &csrf), ("otp", &right)])
        .await;
    assert_eq!(
        r.location(),
        "/signin/otp",
        "the right code is refused while locked"
    );
    let page = w.get("/signin/otp").await;
    assert!(page.body.contains("Too many wrong codes"), "{}", page.body);
    assert_eq!(w.get("/my-account").await.location(), "/signin/otp");

    // 15 minutes later (sign in again: the password step is good for 5).
    clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(w.get("/signin/otp").await.location(), "/");
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!(r.location(), "/signin/otp");
    let before_otp = w.cookie.clone();
    let code = next_code(&clock, &secret);
    let r = otp_step(&mut w, &code).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
    assert_ne!(w.cookie, before_otp, "a new session id after the OTP step");
    let me = account_page(&mut w).await;
    assert!(me.body.contains("2FA is on."));
    // The session passed an OTP just now: device passwords can be created.
    assert!(me.body.contains(r#"<label for="device-name">Name</label>"#));
    let signins: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "portal.signin")
        .collect();
    assert_eq!(signins.len(), 1);
    assert_eq!(signins[0].reason.as_deref(), Some("otp"));
}

#[tokio::test]
async fn the_qr_code_shows_only_while_enrolment_is_pending() {
    let (server, clock) = server_with_clock("").await;
    let mut w = signed_in(&server, PASSWORD).await;
    // Before Enable 2FA: no QR Code button, and pressing it shows nothing.
    let me = account_page(&mut w).await;
    assert!(!me.body.contains(">QR Code</button>"));
    act(&mut w, "/my-account/2fa/qr", &[]).await;
    assert!(!account_page(&mut w).await.body.contains("alt=\"QR code\""));

    act(&mut w, "/my-account/2fa/enable", &[]).await;
    let me = account_page(&mut w).await;
    assert!(
        me.body
            .contains(r#"<button type="submit">QR Code</button>"#)
    );
    assert!(
        !me.body.contains("alt=\"QR code\""),
        "only after QR Code is pressed"
    );
    assert!(me.body.contains(r#"<h3 id="verify-title">Verify 2FA</h3>"#));
    assert!(me.body.contains(r#"<label for="otp">OTP</label>"#));
    assert!(me.body.contains(r#"<button type="submit">Verify</button>"#));

    act(&mut w, "/my-account/2fa/qr", &[]).await;
    let me = account_page(&mut w).await;
    let img_at = me
        .body
        .find(r#"<img src="data:image/png;base64,"#)
        .expect("QR image");
    let img = &me.body[img_at..me.body[img_at..].find('>').unwrap() + img_at];
    assert!(img.contains(r#"alt="QR code""#), "{img}");
    let b64 = img
        .split("base64,")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let key = key_on(&me.body).unwrap();
    let groups: Vec<&str> = key.split(' ').collect();
    assert_eq!(groups.len(), 8, "{key}");
    assert!(groups.iter().all(|g| {
        g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    }));
    assert_eq!(
        server
            .accounts()
            .totp_pending(ALICE)
            .await
            .unwrap()
            .unwrap()
            .key,
        key
    );
    // Reloading keeps it while pending (the user may need a second look).
    assert_eq!(key_on(&account_page(&mut w).await.body), Some(key.clone()));

    // Enable 2FA again while pending starts over with a new key (the help
    // page's first step always works).
    assert!(
        account_page(&mut w)
            .await
            .body
            .contains(r#"<button type="submit" class="secondary">Enable 2FA</button>"#)
    );
    act(&mut w, "/my-account/2fa/enable", &[]).await;
    assert!(!account_page(&mut w).await.body.contains("alt=\"QR code\""));
    act(&mut w, "/my-account/2fa/qr", &[]).await;
    let old_key = key;
    let key = key_on(&account_page(&mut w).await.body).unwrap();
    assert_ne!(key, old_key);

    // A wrong code: still pending, with a notice.
    act(&mut w, "/my-account/2fa/verify", &[("otp", "12345")]).await;
    let me = account_page(&mut w).await;
    assert!(me.body.contains("That code is not right"));
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "pending"
    );

    let code = next_code(&clock, &base32_decode(&key));
    act(&mut w, "/my-account/2fa/verify", &[("otp", &code)]).await;
    let me = account_page(&mut w).await;
    assert!(me.body.contains("2FA enabled"));
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "on"
    );
    // Once 2FA is on, neither the image nor the key can be reached.
    let compact: String = key.split(' ').collect();
    for _ in 0..2 {
        assert!(!me.body.contains("alt=\"QR code\""));
        assert!(!me.body.contains(&key) && !me.body.contains(&compact));
        assert!(!me.body.contains(">QR Code</button>"));
        assert!(
            !me.body.contains(">Enable 2FA</button>"),
            "not blocked: no re-enrolment"
        );
        let r = act(&mut w, "/my-account/2fa/qr", &[]).await;
        assert_eq!(r.location(), "/my-account#two-factor");
        let me2 = account_page(&mut w).await;
        assert!(
            me2.body
                .contains("The QR code is shown only while 2FA is being set up")
        );
        assert!(!me2.body.contains("alt=\"QR code\"") && !me2.body.contains(&key));
    }
}

#[tokio::test]
async fn unknown_and_known_addresses_get_identical_pages_and_similar_timing() {
    let (server, _) = server_with_clock("").await;
    // A wrong password for a real account, an unknown account, a disabled
    // account, and something that is not an address at all.
    server.add_account("dora@example.com", PASSWORD).await;
    server
        .accounts()
        .set_disabled("dora@example.com", true, &Origin::ADMIN)
        .await
        .unwrap();
    let mut pages = Vec::new();
    for (email, password) in [
        (ALICE, "not the right password"),
        ("nobody@example.com", "not the right password"),
        ("dora@example.com", PASSWORD),
        ("not an address", "not the right password"),
    ] {
        let mut w = web(&server);
        let r = sign_in(&mut w, email, password).await;
        assert_eq!((r.status, r.location()), (303, "/"), "{email}");
        assert_eq!(r.header("set-cookie"), None, "{email}");
        let page = w.get("/").await;
        assert!(page.body.contains("The email or password is not right"));
        assert!(!page.body.contains(email), "the address is not echoed");
        pages.push((email, page.status, page.masked()));
    }
    for (email, status, body) in &pages[1..] {
        assert_eq!(*status, pages[0].1);
        assert_eq!(body, &pages[0].2, "{email} differs from a known address");
    }

    // Timing: one argon2id verify either way. Interleaved, medians.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..12 {
        for (email, times) in [(ALICE, &mut known), ("nobody@example.com", &mut unknown)] {
            let mut w = web(&server);
            let csrf = w.get("/").await.csrf();
            let password = format!("wrong password {i}");
            let start = Instant::now();
            let r = w
                .post(
                    "/signin",
                    &[("csrf", &csrf), ("email", email), ("password", &password)],
                )
                .await;
            times.push(start.elapsed());
            assert_eq!(r.status, 303);
        }
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[6], unknown[6]);
    println!("sign-in median: known address {k:?}, unknown address {u:?}");
    let ratio = k.as_secs_f64() / u.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {k:?} vs unknown {u:?}: the timing tells them apart"
    );
}

#[tokio::test]
async fn sign_in_failures_lock_out_per_account() {
    let (server, _) = server_with_clock("").await;
    let mut w = web(&server);
    for _ in 0..10 {
        sign_in(&mut w, ALICE, "not the right password").await;
    }
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!(
        r.location(),
        "/",
        "locked out: the right password is not checked"
    );
    assert!(w.get("/").await.body.contains("Too many failed sign-ins"));
    // Unknown addresses lock the same way (no enumeration through lockouts).
    let mut w = web(&server);
    for _ in 0..10 {
        sign_in(&mut w, "nobody@example.com", "not the right password").await;
    }
    sign_in(&mut w, "nobody@example.com", "not the right password").await;
    assert!(w.get("/").await.body.contains("Too many failed sign-ins"));
    let failures = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "portal.signin_failure")
        .count();
    assert_eq!(failures, 22);
}

#[tokio::test]
async fn changing_the_password_follows_the_rule_and_signs_out_other_sessions() {
    let (server, _) = server_with_clock("").await;
    let mut other = signed_in(&server, PASSWORD).await;
    let mut w = signed_in(&server, PASSWORD).await;
    for ((current, new, repeat), says) in [
        (
            (PASSWORD, NEW_PASSWORD, "something else entirely"),
            "The new passwords do not match",
        ),
        (
            (PASSWORD, "too short", "too short"),
            "at least 12 characters",
        ),
        ((PASSWORD, ALICE, ALICE), "must not be the email address"),
        (
            (PASSWORD, PASSWORD, PASSWORD),
            "must be different from your current password",
        ),
        (
            ("not my password", NEW_PASSWORD, NEW_PASSWORD),
            "The current password is not right",
        ),
    ] {
        let r = act(
            &mut w,
            "/my-account/password",
            &[("current", current), ("new", new), ("repeat", repeat)],
        )
        .await;
        assert_eq!(r.location(), "/my-account#password");
        let page = account_page(&mut w).await;
        assert!(page.body.contains(says), "{says}");
        assert!(
            !page.body.contains(new) || new == ALICE,
            "passwords are never echoed"
        );
    }
    assert_eq!(history_len(&server).await, 1, "nothing changed yet");
    change_password(&mut w).await;
    let page = account_page(&mut w).await;
    assert!(
        page.body
            .contains("<p class=\"notice-title\">Password changed</p>")
    );
    assert!(
        page.body
            .contains("Other browsers signed in to this account were signed out")
    );
    // Shown once.
    assert!(!account_page(&mut w).await.body.contains("Password changed"));
    // The other web session is signed out.
    let r = other.get("/my-account").await;
    assert_eq!((r.status, r.location()), (303, "/"));
    // The new password signs in; the old one does not.
    let mut fresh = web(&server);
    assert_eq!(sign_in(&mut fresh, ALICE, PASSWORD).await.location(), "/");
    assert_eq!(
        sign_in(&mut fresh, ALICE, NEW_PASSWORD).await.location(),
        "/my-account"
    );
    let history = server.accounts().get(ALICE).await.unwrap().history;
    let last = history.last().unwrap();
    assert_eq!(
        (last.change.as_str(), last.via.as_str()),
        ("password_changed", "portal")
    );
    assert_eq!(last.ip, Some("127.0.0.1".parse().unwrap()));
    // A password change by the operator also ends web sessions.
    server
        .accounts()
        .set_password(ALICE, "the operator's choice", &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(w.get("/my-account").await.location(), "/");
}

#[tokio::test]
async fn a_policy_block_shows_its_banner_and_lifts_through_the_portal() {
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .block(ALICE, policy_block(&["203.0.113.0/24"]), &Origin::ADMIN)
        .await
        .unwrap();
    // A blocked account can sign in.
    let mut w = signed_in(&server, PASSWORD).await;
    let me = account_page(&mut w).await;
    let banner_at = me
        .body
        .find(r#"<div class="banner" role="alert">"#)
        .unwrap();
    let banner = &me.body[banner_at..];
    let text = banner.split("<p class=\"banner-title\">").nth(1).unwrap();
    assert!(
        text.starts_with(
            "Your account has been blocked from sending: sending to many new recipients."
        ),
        "{text}"
    );
    assert_eq!(me.body.matches("has been blocked").count(), 1);
    assert!(
        !me.body.contains("score") && !me.body.contains("threshold"),
        "never thresholds"
    );
    assert!(
        me.body
            .contains("Change your password</a> <span class=\"badge\">To do</span>")
    );

    change_password(&mut w).await;
    let me = account_page(&mut w).await;
    assert!(me.body.contains("Password changed"));
    assert!(
        me.body
            .contains("Change your password</a> <span class=\"badge done\">Done</span>")
    );
    assert!(
        !me.body.contains("For your safety"),
        "127.0.0.1 is the owner's network"
    );
    let (_, me) = enable_2fa(&mut w, &clock).await;
    assert!(me.contains("Your account has been unblocked"));
    assert!(!me.contains("class=\"banner\""));
    assert_eq!(me.matches("has been blocked").count(), 0);
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());

    // "Your account has been unblocked" came with "2FA enabled", once.
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .block(ALICE, policy_block(&[]), &Origin::ADMIN)
        .await
        .unwrap();
    let mut w = signed_in(&server, PASSWORD).await;
    change_password(&mut w).await;
    act(&mut w, "/my-account/2fa/enable", &[]).await;
    act(&mut w, "/my-account/2fa/qr", &[]).await;
    let key = key_on(&account_page(&mut w).await.body).unwrap();
    let code = next_code(&clock, &base32_decode(&key));
    let csrf = account_page(&mut w).await.csrf();
    w.post("/my-account/2fa/verify", &[("csrf", &csrf), ("otp", &code)])
        .await;
    let me = w.get("/my-account").await;
    assert!(me.body.contains("2FA enabled"));
    assert!(me.body.contains("Your account has been unblocked"));
    assert!(
        !account_page(&mut w)
            .await
            .body
            .contains("has been unblocked")
    );
}

#[tokio::test]
async fn with_2fa_on_a_policy_block_still_offers_enable_2fa_for_re_enrolment() {
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    let mut w = signed_in(&server, PASSWORD).await;
    enable_2fa(&mut w, &clock).await;
    server
        .accounts()
        .block(ALICE, policy_block(&[]), &Origin::ADMIN)
        .await
        .unwrap();
    let me = account_page(&mut w).await;
    assert!(
        me.body
            .contains("Your account has been blocked from sending")
    );
    assert!(
        me.body
            .contains(r#"<button type="submit">Enable 2FA</button>"#)
    );
    assert!(
        me.body
            .contains("create device passwords as soon as the block is lifted")
    );
    change_password(&mut w).await;
    let (_, page) = enable_2fa(&mut w, &clock).await;
    assert!(page.contains("Your account has been unblocked"));
}

#[tokio::test]
async fn an_operator_block_says_contact_support() {
    let (server, _) = server_with_clock("[server]\nsupport_contact = \"help@example.com\"\n").await;
    server
        .accounts()
        .block(
            ALICE,
            BlockRequest {
                kind: BlockKind::Operator,
                reason: "reported phishing".into(),
                detail: None,
                abuse_networks: Vec::new(),
            },
            &Origin::ADMIN,
        )
        .await
        .unwrap();
    let mut w = signed_in(&server, PASSWORD).await;
    let me = account_page(&mut w).await;
    assert!(me.body.contains(
        "Your account has been blocked from sending by the administrator: reported phishing."
    ));
    assert!(
        me.body
            .contains("Please contact support at <strong>help@example.com</strong>.")
    );
    assert_eq!(me.body.matches("has been blocked").count(), 1);
    server
        .accounts()
        .unblock(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    // A lift ends every web session: whoever kept one open since the
    // block signs in again.
    assert_eq!(w.get("/my-account").await.location(), "/");
    let mut w = signed_in(&server, PASSWORD).await;
    assert!(!account_page(&mut w).await.body.contains("has been blocked"));
}

#[tokio::test]
async fn during_a_block_changes_from_an_untrusted_network_are_refused_with_the_reason() {
    let (server, clock) = server_with_clock("[portal]\ntrusted_proxies = [\"127.0.0.1\"]\n").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .block(ALICE, policy_block(&["203.0.113.0/24"]), &Origin::ADMIN)
        .await
        .unwrap();
    let before = server.accounts().get(ALICE).await.unwrap().history.len();
    // Behind the trusted proxy: the rightmost untrusted X-Forwarded-For
    // hop, an abuse network first, then a network never seen.
    for hop in ["203.0.113.9", "192.0.2.44"] {
        let mut thief = web(&server);
        thief.extra_headers = vec![("X-Forwarded-For".into(), format!("198.51.100.77, {hop}"))];
        let r = sign_in(&mut thief, ALICE, PASSWORD).await;
        assert_eq!(r.location(), "/my-account");
        let me = account_page(&mut thief).await;
        assert!(
            me.body.contains(
                "For your safety, this change needs a network you have sent mail from before."
            ),
            "the banner says so before any step"
        );
        change_password(&mut thief).await;
        let me = account_page(&mut thief).await;
        assert!(!me.body.contains("Password changed"));
        assert!(
            me.body.contains(
                "<p class=\"notice-title\">For your safety, this change needs a network you have sent mail from before</p>"
            ),
            "{}",
            me.body
        );
        act(&mut thief, "/my-account/2fa/enable", &[]).await;
        let me = account_page(&mut thief).await;
        assert!(
            me.body
                .contains("For your safety, this change needs a network")
        );
        assert!(key_on(&me.body).is_none(), "no secret for the thief");
    }
    let account = server.accounts().get(ALICE).await.unwrap();
    assert!(account.block.is_some(), "the thief lifted the block");
    assert_eq!(account.history.len(), before, "nothing was changed");
    assert!(account.totp.pending.is_none());
    // The old password still signs the owner in, at home.
    let mut owner = web(&server);
    assert_eq!(
        sign_in(&mut owner, ALICE, PASSWORD).await.location(),
        "/my-account"
    );

    // Without trusted proxies, X-Forwarded-For is ignored: the peer counts.
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .block(ALICE, policy_block(&["203.0.113.0/24"]), &Origin::ADMIN)
        .await
        .unwrap();
    let mut w = web(&server);
    w.extra_headers = vec![("X-Forwarded-For".into(), "203.0.113.9".into())];
    sign_in(&mut w, ALICE, PASSWORD).await;
    change_password(&mut w).await;
    assert!(account_page(&mut w).await.body.contains("Password changed"));
    let last = server
        .accounts()
        .get(ALICE)
        .await
        .unwrap()
        .history
        .pop()
        .unwrap();
    assert_eq!(last.ip, Some("127.0.0.1".parse().unwrap()));
    assert!(last.unblock_credit);
}

#[tokio::test]
async fn device_passwords_need_a_recent_otp_are_shown_once_and_can_be_revoked() {
    let (server, clock) = server_with_clock("").await;
    let mut w = signed_in(&server, PASSWORD).await;
    // 2FA off: no form, and creating is refused.
    assert!(
        account_page(&mut w)
            .await
            .body
            .contains("available once 2FA is on")
    );
    act(&mut w, "/my-account/devices/create", &[("name", "Outlook")]).await;
    assert!(
        account_page(&mut w)
            .await
            .body
            .contains("Device passwords need 2FA")
    );

    let (secret, _) = enable_2fa(&mut w, &clock).await;
    act(&mut w, "/my-account/devices/create", &[("name", "Outlook")]).await;
    let me = account_page(&mut w).await;
    let start = me
        .body
        .find(r#"<code class="secret" id="new-device-password">"#)
        .unwrap();
    let password = me.body[start..]
        .split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 19, "{password}");
    assert!(me.body.contains("it will not be shown again"));
    assert_eq!(me.header("cache-control"), Some("no-store"));
    // Shown once.
    let again = account_page(&mut w).await;
    assert!(!again.body.contains(&password));
    assert!(again.body.contains("<strong>Outlook</strong>"));
    assert!(
        again.body.contains("Created 2027-01-15 08:"),
        "{}",
        again.body
    );
    assert!(again.body.contains("Last used never"));

    // 15 minutes after the last OTP: a code must be confirmed again.
    clock.advance(Duration::from_secs(15 * 60));
    let me = account_page(&mut w).await;
    assert!(
        me.body
            .contains("first confirm a code from your authenticator app")
    );
    assert!(!me.body.contains(r#"<label for="device-name">Name</label>"#));
    act(&mut w, "/my-account/devices/create", &[("name", "Phone")]).await;
    assert!(
        account_page(&mut w)
            .await
            .body
            .contains("Confirm a code first")
    );
    assert_eq!(
        server
            .accounts()
            .get(ALICE)
            .await
            .unwrap()
            .device_passwords
            .len(),
        1
    );
    let code = next_code(&clock, &secret);
    act(&mut w, "/my-account/2fa/confirm", &[("otp", &code)]).await;
    act(&mut w, "/my-account/devices/create", &[("name", "Outlook")]).await;
    assert!(
        account_page(&mut w)
            .await
            .body
            .contains("That name is taken")
    );
    act(&mut w, "/my-account/devices/create", &[("name", "Phone")]).await;
    assert!(
        account_page(&mut w)
            .await
            .body
            .contains("id=\"new-device-password\"")
    );

    act(&mut w, "/my-account/devices/revoke", &[("name", "Outlook")]).await;
    let me = account_page(&mut w).await;
    assert!(me.body.contains("Device password revoked"));
    assert!(!me.body.contains("<strong>Outlook</strong>"));
    let names: Vec<String> = server
        .accounts()
        .get(ALICE)
        .await
        .unwrap()
        .device_passwords
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["Phone"]);

    // Disabling 2FA needs a right code, and removes the device passwords.
    act(&mut w, "/my-account/2fa/disable", &[("otp", "000000")]).await;
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "on"
    );
    let code = next_code(&clock, &secret);
    act(&mut w, "/my-account/2fa/disable", &[("otp", &code)]).await;
    let account = server.accounts().get(ALICE).await.unwrap();
    assert_eq!(account.totp_status(), "off");
    assert!(account.device_passwords.is_empty());
    assert!(account_page(&mut w).await.body.contains("2FA disabled"));
}

#[tokio::test]
async fn an_https_public_url_gives_a_host_cookie_and_a_path_prefix() {
    let (server, _) =
        server_with_clock("[portal]\npublic_url = \"https://mail.test.example/account\"\n").await;
    let mut w = web(&server);
    w.cookie_name = "__Host-mw_session".into();
    let r = w.get("/").await;
    assert_eq!((r.status, r.location()), (303, "/account/"));
    let page = w.get("/account/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("set-cookie")
            .unwrap()
            .split_once(';')
            .unwrap()
            .1,
        " Path=/; HttpOnly; SameSite=Strict; Secure"
    );
    assert!(
        page.header("set-cookie")
            .unwrap()
            .starts_with("__Host-mw_session=")
    );
    assert!(page.body.contains(r#"action="/account/signin""#));
    assert!(page.body.contains(r#"href="/account/style.css""#));
    let r = w
        .post(
            "/account/signin",
            &[
                ("csrf", &page.csrf()),
                ("email", ALICE),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/account/my-account"));
    let me = w.get("/account/my-account").await;
    assert!(
        me.body
            .contains(r#"<a href="/account/my-account" aria-current="page">My account</a>"#)
    );
}

#[test]
fn a_portal_off_loopback_needs_an_https_public_url() {
    let parse = |portal: &str| {
        Config::from_toml(
            &format!(
                "[delivery]\nmode = \"outbox\"\n[tls]\nself_signed = true\n\
                 [listeners]\nportal = \"0.0.0.0:8080\"\n{portal}"
            ),
            std::path::PathBuf::from("/etc/mw"),
            ConfigSource::EmbeddedDefault,
        )
    };
    let err = parse("").unwrap_err().to_string();
    assert!(
        err.contains("public_url") && err.contains("https://"),
        "{err}"
    );
    assert!(parse("[portal]\npublic_url = \"http://mail.example.com/\"\n").is_err());
    assert!(parse("[portal]\npublic_url = \"https://mail.example.com/\"\n").is_ok());
    let err = parse(
        "[portal]\npublic_url = \"https://mail.example.com/\"\ntrusted_proxies = [\"nope\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("trusted_proxies"), "{err}");
}

#[tokio::test]
async fn enabling_or_disabling_2fa_signs_out_every_other_session() {
    let (server, clock) = server_with_clock("").await;
    let mut other = signed_in(&server, PASSWORD).await;
    let mut w = signed_in(&server, PASSWORD).await;
    // A new authenticator here: this browser stays, the other one goes.
    enable_2fa(&mut w, &clock).await;
    account_page(&mut w).await;
    let r = other.get("/my-account").await;
    assert_eq!((r.status, r.location()), (303, "/"));

    // 2FA turned off by the operator: this session ends too.
    server
        .accounts()
        .totp_disable(ALICE, None, &Origin::ADMIN)
        .await
        .unwrap();
    let r = w.get("/my-account").await;
    assert_eq!((r.status, r.location()), (303, "/"));
}

#[tokio::test]
async fn a_password_change_cancels_an_enrolment_started_elsewhere_but_not_its_own() {
    let (server, _) = server_with_clock("").await;
    let mut elsewhere = signed_in(&server, PASSWORD).await;
    let mut w = signed_in(&server, PASSWORD).await;
    act(&mut elsewhere, "/my-account/2fa/enable", &[]).await;
    let pending = |server: &TestServer| {
        let server = server.accounts().clone();
        async move { server.get(ALICE).await.unwrap().totp.pending.is_some() }
    };
    assert!(pending(&server).await);
    change_password(&mut w).await;
    assert!(
        !pending(&server).await,
        "the other browser's enrolment stays"
    );
    let history = server.accounts().get(ALICE).await.unwrap().history;
    assert!(
        history
            .iter()
            .any(|h| h.change == "totp_enrolment_cancelled" && h.via == "portal")
    );

    // This browser's own enrolment survives its own password change.
    act(&mut w, "/my-account/2fa/enable", &[]).await;
    let r = act(
        &mut w,
        "/my-account/password",
        &[
            ("current", NEW_PASSWORD),
            ("new", "yet another passphrase"),
            ("repeat", "yet another passphrase"),
        ],
    )
    .await;
    assert_eq!(r.location(), "/my-account#password");
    assert!(account_page(&mut w).await.body.contains("Password changed"));
    assert!(pending(&server).await);
}
