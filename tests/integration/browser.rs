//! The help page (seed/upgraded-email-2fa-help.txt), end to end: a
//! policy-blocked user follows it in headless Chromium (driven by
//! tests/browser/help_page.mjs), then a real SMTP client sends with the
//! new device password. `scripts/test` installs Chromium and
//! playwright-core; a missing one fails this test rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::client::Client;
use crate::common::web::{Web, act, sign_in};
use crate::common::{
    PASSWORD, TestServer, policy_block_on, send_from_home_for_a_week, server_with_clock,
};

const SAFETY: &str = "For your safety, this change needs a network you have sent mail from before";

/// A thief with the password, in the portal from `source`: signs in, and
/// every credential change is refused with the reason.
async fn thief_is_refused_every_step(server: &TestServer, source: &str) {
    let mut w = Web::from(server.running().portal, source);
    let r = sign_in(&mut w, ALICE, PASSWORD).await;
    assert_eq!(r.location(), "/my-account", "{source}");
    assert!(w.get("/my-account").await.body.contains(SAFETY));
    // (A device password needs 2FA first; `security::changes_that_do_not_count`
    // tries that one directly.)
    let steps: [(&str, &[(&str, &str)]); 2] = [
        (
            "/my-account/password",
            &[
                ("current", PASSWORD),
                ("new", "the thief's own password"),
                ("repeat", "the thief's own password"),
            ],
        ),
        ("/my-account/2fa/enable", &[]),
    ];
    for (path, fields) in steps {
        act(&mut w, path, fields).await;
        let page = w.get("/my-account").await.body;
        let refused = page.contains(&format!("<p class=\"notice-title\">{SAFETY}</p>"));
        assert!(refused, "{source} {path}:\n{page}");
    }
}

const ALICE: &str = "alice@example.com";
const POLICY_554: &str = "554 5.7.1 Account <alice@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked";
const AUTH_535: &str =
    "535 5.7.8 Authentication credentials invalid (with 2FA enabled, use a device password)";

/// Where the screenshots go: target/browser-screenshots/NN-step.png.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-screenshots")
}

/// Runs the browser script; (success, stdout, stderr). Killed after 3 min.
/// `now` is the server's clock, for the TOTP code the script types.
fn run_browser(url: &str, outdir: &Path, now: u64) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/help_page.mjs");
    let mut child = Command::new("node")
        .env("TOTP_NOW", now.to_string())
        .arg(&script)
        .args([url, ALICE, PASSWORD])
        .arg(outdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("node output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn printed(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the browser test printed no {key}:\n{stdout}"))
        .to_string()
}

async fn auth_reply(server: &TestServer, password: &str) -> (Client, String) {
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    let r = c.auth_plain(ALICE, password).await;
    (c, r.line())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_user_follows_the_help_page_in_a_real_browser() {
    // Alice has sent mail from home (127.0.0.1) for a week; then a thief
    // with her password sends from 127.0.1.9 and the scorer blocks her.
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    policy_block_on(&server, ALICE, &["127.0.1.0/24"]).await;
    // The thief, from the abuse network and from a fresh one, tries every
    // step of the help page, and each is refused.
    for thief in ["127.0.1.9", "127.0.2.9"] {
        thief_is_refused_every_step(&server, thief).await;
    }
    let account = server.accounts().get(ALICE).await.unwrap();
    assert!(account.block.is_some() && account.totp.pending.is_none());
    // What brought the user to the help page.
    let (mut c, reply) = auth_reply(&server, PASSWORD).await;
    assert_eq!(reply, "235 2.7.0 Authentication successful");
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{ALICE}>")).await.line(),
        POLICY_554
    );

    let outdir = screenshot_dir();
    if let Ok(entries) = std::fs::read_dir(&outdir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let url = format!("http://{}/", server.running().portal);
    let dir = outdir.clone();
    let now = mailwarden::clock::Clock::unix(&*clock);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || run_browser(&url, &dir, now))
        .await
        .unwrap();
    println!("{stdout}");
    assert!(ok, "the browser test failed:\n{stdout}\n{stderr}");
    let steps = stdout.lines().filter(|l| l.starts_with("step ")).count();
    assert_eq!(steps, 13, "{stdout}");
    for n in 1..=steps {
        let found = std::fs::read_dir(&outdir).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{n:02}-"))
        });
        assert!(found, "no screenshot {n:02}-*.png in {}", outdir.display());
    }
    // A second browser signed in before the password change was signed out.
    assert_eq!(printed(&stdout, "OTHER_BROWSER"), "signed_out");
    let device = printed(&stdout, "DEVICE_PASSWORD");
    let new_password = printed(&stdout, "NEW_PASSWORD");

    // The account as the browser left it.
    let account = server.accounts().get(ALICE).await.unwrap();
    assert!(account.block.is_none(), "the help page lifted the block");
    assert_eq!(account.totp_status(), "on");
    assert_eq!(account.device_passwords.len(), 1);
    assert_eq!(account.device_passwords[0].name, "Outlook");
    let portal_changes: Vec<&str> = account
        .history
        .iter()
        .filter(|h| h.via == "portal")
        .map(|h| h.change.as_str())
        .collect();
    assert_eq!(
        portal_changes,
        [
            "password_changed",
            "totp_enrolment_started",
            "totp_enabled",
            "device_password_created"
        ]
    );
    server.wait_event("portal.signin").await;

    // Outlook, reconfigured with the device password: AUTH and a message.
    let (mut c, reply) = auth_reply(&server, &device).await;
    assert_eq!(reply, "235 2.7.0 Authentication successful");
    let r = c
        .send_message(
            ALICE,
            &["bob@example.org"],
            b"From: <alice@example.com>\r\nTo: <bob@example.org>\r\nSubject: sent again\r\n\r\nHello Bob.\r\n",
        )
        .await;
    assert!(r.line().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    // The same with swaks over STARTTLS, as a third-party client would.
    let port = server.submission().port().to_string();
    let swaks = tokio::task::spawn_blocking(move || {
        Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &port,
                "--tls",
                "--auth",
                "LOGIN",
                "--auth-user",
                ALICE,
                "--auth-password",
                &device,
                "--from",
                ALICE,
                "--to",
                "carol@example.net",
                "--header",
                "Subject: from swaks",
                "--timeout",
                "20",
            ])
            .output()
            .expect("swaks is installed (scripts/test installs it)")
    })
    .await
    .unwrap();
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    assert!(swaks.status.success(), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );

    // The old password is refused; with 2FA on, so is the new one.
    assert_eq!(auth_reply(&server, PASSWORD).await.1, AUTH_535);
    assert_eq!(auth_reply(&server, &new_password).await.1, AUTH_535);
    for subject in ["Subject: sent again", "Subject: from swaks"] {
        let mut delivered = false;
        for _ in 0..500 {
            delivered = crate::common::read_outbox(&server.outbox())
                .iter()
                .any(|(_, m)| String::from_utf8_lossy(m).contains(subject));
            if delivered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(delivered, "{subject} never reached the outbox");
    }
}
