//! Dovecot IMAP authenticating against mailwarden (issue 22): a real
//! Dovecot 2.3 with the Lua passdb and dovecot.conf snippet of
//! contrib/dovecot, logins over Python's imaplib from 127.0.0.2 and
//! 127.0.0.3; and `account import` of Dovecot password hashes.

use std::time::Duration;

use mailwarden::accounts::{BlockKind, BlockRequest, Origin, scheme, totp};
use mailwarden::clock::{Clock, ManualClock};

use crate::common::client::Client;
use crate::common::dovecot::{self, Attempt, Dovecot, Passdb};
use crate::common::{ALICE, PASSWORD, TestServer, run_cli, send_from_home_for_a_week};
use crate::common::{base32_decode, server_with_clock};

const NEW_PASSWORD: &str = "a brand new password 2026";

/// A server with `[dovecot]` on, and a Dovecot asking it. `None` (the
/// test is skipped, with the reason printed) without a dovecot binary.
async fn with_dovecot(
    clock: bool,
) -> Option<(
    TestServer,
    Option<std::sync::Arc<ManualClock>>,
    Dovecot,
    tempfile::TempDir,
)> {
    with_dovecot_and(clock, "").await
}

async fn with_dovecot_and(
    clock: bool,
    more: &str,
) -> Option<(
    TestServer,
    Option<std::sync::Arc<ManualClock>>,
    Dovecot,
    tempfile::TempDir,
)> {
    let binary = dovecot::binary()?;
    let keys = tempfile::tempdir().unwrap();
    let extra = dovecot::mailwarden_config(&dovecot::write_token(keys.path())) + more;
    let (server, clock) = match clock {
        true => {
            let (s, c) = server_with_clock(&extra).await;
            (s, Some(c))
        }
        false => (TestServer::with_alice(&extra).await, None),
    };
    let endpoint = server
        .running()
        .dovecot
        .expect("the Dovecot endpoint listens");
    let imap = Dovecot::start(&binary, Passdb::Mailwarden(endpoint));
    Some((server, clock, imap, keys))
}

async fn enable_2fa(server: &TestServer, clock: &ManualClock) {
    let enrolment = server
        .accounts()
        .totp_enable(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    let secret = base32_decode(&enrolment.key.split_whitespace().collect::<String>());
    clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, clock.unix());
    server
        .accounts()
        .totp_verify(ALICE, &code, &Origin::ADMIN)
        .await
        .unwrap();
}

async fn smtp_auth(server: &TestServer, from: &str, user: &str, password: &str) -> u16 {
    let (mut c, _) = Client::implicit_tls_from(
        server.submissions(),
        Some(from.parse().unwrap()),
        &server.cert_path(),
    )
    .await;
    c.ehlo().await;
    c.auth_plain(user, password).await.code
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_imap_logins_follow_the_smtp_rules() {
    let Some((server, clock, imap, _keys)) = with_dovecot(true).await else {
        return;
    };
    let clock = clock.unwrap();
    // The main password reads mail; nothing else does.
    assert_eq!(
        imap.login("127.0.0.2", ALICE, PASSWORD).await,
        "OK",
        "{}",
        imap.log()
    );
    assert_eq!(
        imap.login("127.0.0.2", ALICE, "not the password").await,
        "FAILED"
    );
    assert_eq!(
        imap.login("127.0.0.2", "nobody@example.com", PASSWORD)
            .await,
        "FAILED"
    );
    let ok = server.wait_event("auth.success").await;
    assert_eq!(ok.mechanism, Some("imap"));
    assert_eq!(ok.ip, Some("127.0.0.2".parse().unwrap()));

    // A password change refuses the old one at once (no cache).
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(imap.login("127.0.0.3", ALICE, PASSWORD).await, "FAILED");
    assert_eq!(imap.login("127.0.0.3", ALICE, NEW_PASSWORD).await, "OK");

    // With 2FA on, only device passwords; their last use is recorded.
    enable_2fa(&server, &clock).await;
    assert_eq!(imap.login("127.0.0.3", ALICE, NEW_PASSWORD).await, "FAILED");
    let device = server
        .accounts()
        .device_password_add(ALICE, "phone", &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(imap.login("127.0.0.2", ALICE, &device).await, "OK");
    let phone = server.accounts().get(ALICE).await.unwrap().device_passwords[0].clone();
    assert_eq!(phone.last_ip, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(phone.last_used, Some(clock.unix()));
    // The same device password over SMTP, and a revoked one nowhere.
    assert_eq!(smtp_auth(&server, "127.0.0.2", ALICE, &device).await, 235);
    server
        .accounts()
        .device_password_revoke(ALICE, "phone", &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(imap.login("127.0.0.2", ALICE, &device).await, "FAILED");
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_wrong_imap_passwords_count_towards_the_smtp_lockout() {
    let Some((server, _, imap, _keys)) = with_dovecot(false).await else {
        return;
    };
    let wrong: Vec<String> = (0..10).map(|i| format!("wrong password {i}")).collect();
    let attempts: Vec<Attempt> = wrong
        .iter()
        .map(|p| Attempt {
            from: "127.0.0.2",
            user: ALICE,
            password: p,
        })
        .collect();
    let results = imap.logins(&attempts, true).await;
    assert!(results.iter().all(|(r, _)| r == "FAILED"), "{results:?}");
    // 127.0.0.2 is locked out for SMTP AUTH and IMAP alike, even with the
    // right password: a temporary failure, not a wrong password.
    assert_eq!(smtp_auth(&server, "127.0.0.2", ALICE, PASSWORD).await, 454);
    assert_eq!(imap.login("127.0.0.2", ALICE, PASSWORD).await, "TEMPFAIL");
    // The other address is not.
    assert_eq!(imap.login("127.0.0.3", ALICE, PASSWORD).await, "OK");
    assert_eq!(smtp_auth(&server, "127.0.0.3", ALICE, PASSWORD).await, 235);
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_a_full_argon2_queue_is_a_temporary_failure() {
    // As small as the queue gets (one place per core).
    let Some((_server, _, imap, _keys)) =
        with_dovecot_and(false, "[lockout]\nauth_queue = 1\n").await
    else {
        return;
    };
    let sources: Vec<String> = (10..26).map(|i| format!("127.0.0.{i}")).collect();
    let attempts: Vec<Attempt> = sources
        .iter()
        .map(|from| Attempt {
            from,
            user: ALICE,
            password: PASSWORD,
        })
        .collect();
    let results: Vec<String> = imap
        .logins(&attempts, true)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(
        results.iter().all(|r| r == "OK" || r == "TEMPFAIL"),
        "{results:?}"
    );
    assert!(results.iter().any(|r| r == "TEMPFAIL"), "{results:?}");
    assert!(results.iter().any(|r| r == "OK"), "{results:?}");
    // A busy answer is not a failure: nobody is locked out.
    assert_eq!(imap.login("127.0.0.10", ALICE, PASSWORD).await, "OK");
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_during_a_policy_block_only_networks_that_may_lift_it_read_mail() {
    let Some((server, clock, imap, _keys)) = with_dovecot(true).await else {
        return;
    };
    let clock = clock.unwrap();
    // Before any block, any network reads mail.
    assert_eq!(imap.login("127.0.1.5", ALICE, PASSWORD).await, "OK");
    // The owner's network: 127.0.0.0/24.
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.3").await;
    server
        .accounts()
        .block(
            ALICE,
            BlockRequest {
                kind: BlockKind::Policy,
                reason: "sending to many new recipients".into(),
                detail: None,
                // Another /24 than the owner's: logins are kept by /24, so
                // an abuse network inside the owner's own /24 would date
                // the abuse start back to the owner's first login.
                abuse_networks: vec!["127.0.2.0/24".parse().unwrap()],
            },
            &Origin::ADMIN,
        )
        .await
        .unwrap();
    // The abuse network and a network not trusted at the abuse start fail
    // like a wrong password; the owner at home still reads mail.
    assert_eq!(imap.login("127.0.2.2", ALICE, PASSWORD).await, "FAILED");
    assert_eq!(imap.login("127.0.1.5", ALICE, PASSWORD).await, "FAILED");
    assert_eq!(imap.login("127.0.0.3", ALICE, PASSWORD).await, "OK");
    let refused = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "auth.failure" && e.reason.as_deref() == Some("blocked_network"))
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_an_operator_block_refuses_imap_only_when_configured() {
    let operator = || BlockRequest {
        kind: BlockKind::Operator,
        reason: "reported phishing".into(),
        detail: None,
        abuse_networks: Vec::new(),
    };
    // By default an operator block stops sending, not reading mail.
    let Some((server, _, imap, _keys)) = with_dovecot(false).await else {
        return;
    };
    server
        .accounts()
        .block(ALICE, operator(), &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(imap.login("127.0.0.2", ALICE, PASSWORD).await, "OK");
    drop((server, imap));

    let Some((server, _, imap, _keys)) =
        with_dovecot_and(false, "refuse_during_operator_block = true\n").await
    else {
        return;
    };
    server
        .accounts()
        .block(ALICE, operator(), &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(imap.login("127.0.0.2", ALICE, PASSWORD).await, "FAILED");
    server
        .accounts()
        .unblock(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(imap.login("127.0.0.2", ALICE, PASSWORD).await, "OK");
}

/// `doveadm pw` output for `secret123`, one per supported scheme
/// (../shared/notes/dovecot.md).
const FIXTURES: &[&str] = &[
    "{SHA512-CRYPT}$6$l2I5dbT1.Az0WJtI$UU3JevIH7789VF3EuJRqI9uz9QjeW62fCc.ShhfM0ExcWjqXer9BN3StDQ/qeYqGgNP2YbAqJTvKN8Bp1C5N7/",
    "{SHA512-CRYPT}$6$rounds=10000$Agfnv3WFlmzl1Pc.$AZzA/r0eol2ILbcQh0UCexI0kDORLPHv34Xg8cZlFXxPC7/o9cIIOiongoFM/q0gsQHJWL/eQWOiAG7X4EiFJ0",
    "{SHA256-CRYPT}$5$uojFf9CKlItfs93F$L3nAHc1ICvNGoeXXFfBvu/4sr.vMcQmfWHlAXY2EUmA",
    "{BLF-CRYPT}$2y$05$toaRqEjZ/NmeXMBSk2JCwuhxcRtzvGohTzuTxHOPh0tXGeqvPS2HW",
    "{BLF-CRYPT}$2y$10$KkACu2QIU/o4GgTwce539eOsY2Qj6BXleyauIeyFfjAxHN3xnguyu",
    "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$Z7pePsmvF+tTIyzS/K7OYg$DFZOgE0G47HJuoyzn8bf/F2py1WT/Z/T87cNkyMTCdA",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$KnTh0lBfYbDrAYkJac5W4w$5kuwCyQuBWSyaTF61wKKmKC3YaNTB/wM/2RwEp1FQy8",
];

fn import(server: &TestServer, file: &std::path::Path, dry_run: bool) -> (bool, String, String) {
    let config = server.config_path();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "account",
        "import",
        file.to_str().unwrap(),
    ];
    if dry_run {
        args.push("--dry-run");
    }
    run_cli(&args, "")
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_passwd_file_import_logs_in_with_each_scheme_then_rehashes() {
    let server = TestServer::start().await;
    let users: Vec<String> = (0..FIXTURES.len())
        .map(|i| format!("user{i}@example.com"))
        .collect();
    let passwd: String = users
        .iter()
        .zip(FIXTURES)
        .map(|(u, h)| format!("{u}:{h}:1000:1000::/var/vmail/{u}::\n"))
        .collect();
    let file = server.dir.path().join("users.passwd");

    // One bad line imports nothing, and is named.
    let broken = format!("{passwd}late@example.com:{{PLAIN}}secret123\n");
    std::fs::write(&file, &broken).unwrap();
    let (ok, _, stderr) = tokio::task::block_in_place(|| import(&server, &file, false));
    assert!(!ok);
    assert!(
        stderr.contains("line 8: scheme PLAIN not supported"),
        "{stderr}"
    );
    assert!(server.accounts().list().await.unwrap().is_empty());

    // A dry run says what it would do and does nothing.
    std::fs::write(&file, &passwd).unwrap();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| import(&server, &file, true));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("would create 7, unchanged 0, skipped 0"),
        "{stdout}"
    );
    assert!(server.accounts().list().await.unwrap().is_empty());

    let (ok, stdout, stderr) = tokio::task::block_in_place(|| import(&server, &file, false));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("created 7, unchanged 0, skipped 0"),
        "{stdout}"
    );
    // A re-run changes nothing.
    let (_, stdout, _) = tokio::task::block_in_place(|| import(&server, &file, false));
    assert!(
        stdout.contains("created 0, unchanged 7, skipped 0"),
        "{stdout}"
    );

    for (user, fixture) in users.iter().zip(FIXTURES) {
        let stored = server.accounts().get(user).await.unwrap().password_hash;
        assert!(fixture.ends_with(&stored), "{user}: stored {stored}");
        assert_eq!(
            smtp_auth(&server, "127.0.0.2", user, "secret12").await,
            535,
            "{user}"
        );
        assert_eq!(
            smtp_auth(&server, "127.0.0.3", user, "secret123").await,
            235,
            "{user}"
        );
        let account = server.accounts().get(user).await.unwrap();
        assert!(
            scheme::is_native(&account.password_hash),
            "{user}: {}",
            account.password_hash
        );
        assert!(
            account
                .history
                .iter()
                .any(|h| h.change.starts_with("password_rehashed")),
            "{user}"
        );
        // The rehashed password still works.
        assert_eq!(
            smtp_auth(&server, "127.0.0.3", user, "secret123").await,
            235,
            "{user}"
        );
    }
    // Changed since the import: never overwritten.
    let (_, stdout, _) = tokio::task::block_in_place(|| import(&server, &file, false));
    assert!(
        stdout.contains("created 0, unchanged 0, skipped 7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped user0@example.com: its credentials changed after the import"),
        "{stdout}"
    );
}

fn run(password: &str, count: usize) -> Vec<Attempt<'_>> {
    (0..count)
        .map(|_| Attempt {
            from: "127.0.0.2",
            user: ALICE,
            password,
        })
        .collect()
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_device_password_login_costs_at_most_5ms_over_a_passwd_file() {
    let Some((server, _, imap, _keys)) = with_dovecot(false).await else {
        return;
    };
    let binary = dovecot::binary().unwrap();
    let baseline = Dovecot::start(
        &binary,
        Passdb::PasswdFile(format!("{ALICE}:{{PLAIN}}{PASSWORD}\n")),
    );
    let device = server
        .accounts()
        .device_password_add(ALICE, "phone", &Origin::ADMIN)
        .await
        .unwrap();
    let n = 200;
    let timed = |results: Vec<(String, f64)>| {
        assert!(results.iter().all(|(r, _)| r == "OK"), "{results:?}");
        median(results.into_iter().map(|(_, ms)| ms).collect())
    };
    // Warm both up, then alternate the two runs.
    imap.logins(&run(&device, 5), false).await;
    baseline.logins(&run(PASSWORD, 5), false).await;
    let own = timed(baseline.logins(&run(PASSWORD, n), false).await);
    let through = timed(imap.logins(&run(&device, n), false).await);
    let argon = timed(imap.logins(&run(PASSWORD, 20), false).await);
    println!(
        "IMAP login medians: passwd-file {own:.2} ms, mailwarden device password {through:.2} ms \
         (+{:.2} ms, {n} logins each), mailwarden main password (argon2id) {argon:.2} ms (20 logins)",
        through - own
    );
    assert!(
        through <= own + 5.0,
        "device-password login {through:.2} ms vs passwd-file {own:.2} ms"
    );
}

#[test]
fn dovecot_conf_in_the_operator_guide_is_the_tested_one() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/operator-guide.md"
    ))
    .unwrap();
    assert!(guide.contains(&format!("```\n{}```", dovecot::CONF_SNIPPET)));
    // The script's two settings, as the guide names them.
    for line in [
        "http://127.0.0.1:8091/dovecot/auth",
        "/etc/dovecot/mailwarden.token",
    ] {
        assert!(dovecot::LUA_SCRIPT.contains(line) && guide.contains(line));
    }
}
