//! Account security through real SMTP sessions: blocks, the unblock rule,
//! 2FA and device passwords.

use crate::common::server_with_clock;
use std::time::Duration;

use base64::Engine;
use mailwarden::accounts::{AccountError, BlockKind, BlockRequest, Origin, totp};
use mailwarden::clock::ManualClock;

use crate::common::client::Client;
use crate::common::{PASSWORD, TestServer, base32_decode, send_from_home_for_a_week};

const ALICE: &str = "alice@example.com";
const NEW_PASSWORD: &str = "a brand new passphrase";
const POLICY_554: &str = "554 5.7.1 Account <alice@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked";
const AUTH_535: &str =
    "535 5.7.8 Authentication credentials invalid (with 2FA enabled, use a device password)";

/// A server whose clock only moves when told (TOTP steps), with Alice.
fn policy_block(networks: &[&str]) -> BlockRequest {
    BlockRequest {
        kind: BlockKind::Policy,
        reason: "sending to many new recipients".into(),
        detail: Some("score 12.5: new recipients 40/h".into()),
        abuse_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

/// A policy block on alice, from no particular network.
async fn block_alice(server: &TestServer) {
    server
        .accounts()
        .block(ALICE, policy_block(&[]), &Origin::ADMIN)
        .await
        .unwrap();
}

/// Enrols 2FA and verifies it with a code for the current step.
async fn enable_2fa(
    server: &TestServer,
    clock: &ManualClock,
    origin: &Origin,
) -> Result<(), AccountError> {
    let enrolment = server.accounts().totp_enable(ALICE, origin).await?;
    let secret = secret_of(&enrolment.key);
    clock.advance(Duration::from_secs(30));
    let code = totp::code_at(&secret, mailwarden::clock::Clock::unix(clock));
    server
        .accounts()
        .totp_verify(ALICE, &code, origin)
        .await
        .map(|_| ())
}

pub fn secret_of(display_key: &str) -> Vec<u8> {
    let b32: String = display_key.split_whitespace().collect();
    base32_decode(&b32)
}

async fn login(server: &TestServer, user: &str, password: &str) -> Client {
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    let r = c.auth_plain(user, password).await;
    assert_eq!(r.code, 235, "{r:?}");
    c
}

/// The reply to MAIL for Alice, after a fresh login with `password`.
async fn mail_reply(server: &TestServer, password: &str) -> String {
    let mut c = login(server, ALICE, password).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>")).await.line()
}

#[tokio::test]
async fn a_policy_block_answers_554_at_mail_rcpt_and_data() {
    let (server, _) = server_with_clock("").await;
    let mut c = login(&server, ALICE, PASSWORD).await;
    // Blocked in the middle of a transaction: the next RCPT and DATA get it.
    assert_eq!(c.cmd(&format!("MAIL FROM:<{ALICE}>")).await.code, 250);
    block_alice(&server).await;
    assert_eq!(c.cmd("RCPT TO:<bob@example.org>").await.line(), POLICY_554);
    assert_eq!(c.cmd("DATA").await.line(), POLICY_554);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Pipelined: MAIL, RCPT and DATA each get the exact text.
    c.send_raw(format!("MAIL FROM:<{ALICE}>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n").as_bytes())
        .await;
    for _ in 0..3 {
        assert_eq!(c.reply().await.line(), POLICY_554);
    }
    // The session is still in sync.
    assert_eq!(c.cmd("NOOP").await.code, 250);
    let event = server.wait_event("account.blocked").await;
    assert_eq!(event.scope, Some("policy"));
}

#[tokio::test]
async fn the_unblock_rule_needs_a_new_password_and_new_2fa_after_the_block() {
    // Only the password: still blocked. Then 2FA: unblocked.
    let (server, clock) = server_with_clock("").await;
    block_alice(&server).await;
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(mail_reply(&server, NEW_PASSWORD).await, POLICY_554);
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    assert_eq!(
        server
            .accounts()
            .get(ALICE)
            .await
            .unwrap()
            .block
            .map(|b| b.kind),
        None
    );
    let device = server
        .accounts()
        .device_password_add(ALICE, "laptop", &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(mail_reply(&server, &device).await, "250 2.1.0 Ok");
    server.wait_event("account.unblocked").await;

    // The other order: 2FA first (re-enrolment), then the password.
    let (server, clock) = server_with_clock("").await;
    block_alice(&server).await;
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    assert!(
        server.accounts().get(ALICE).await.unwrap().block.is_some(),
        "only 2FA: still blocked"
    );
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());
}

#[tokio::test]
async fn changes_that_do_not_count() {
    // The same password again does not count.
    let (server, clock) = server_with_clock("").await;
    block_alice(&server).await;
    server
        .accounts()
        .set_password(ALICE, PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    assert!(
        server.accounts().get(ALICE).await.unwrap().block.is_some(),
        "same password counted"
    );

    // A password changed before the block does not count.
    let (server, clock) = server_with_clock("").await;
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    block_alice(&server).await;
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    assert!(
        server.accounts().get(ALICE).await.unwrap().block.is_some(),
        "old change counted"
    );

    // During a block, portal changes from a network not trusted for the
    // account are refused (an abuse network, or any other); from the
    // owner's trusted network they lift it.
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .block(ALICE, policy_block(&["203.0.113.0/24"]), &Origin::ADMIN)
        .await
        .unwrap();
    for thief in ["203.0.113.9", "192.0.2.44"] {
        let thief = Origin::portal(thief.parse().unwrap());
        assert!(matches!(
            server
                .accounts()
                .set_password(ALICE, NEW_PASSWORD, &thief)
                .await,
            Err(AccountError::NeedsTrustedNetwork)
        ));
        assert!(matches!(
            enable_2fa(&server, &clock, &thief).await,
            Err(AccountError::NeedsTrustedNetwork)
        ));
        assert!(matches!(
            server
                .accounts()
                .device_password_add(ALICE, "thief phone", &thief)
                .await,
            Err(AccountError::NeedsTrustedNetwork)
        ));
    }
    let a = server.accounts().get(ALICE).await.unwrap();
    assert!(a.block.is_some(), "the thief lifted the block");
    assert!(a.totp.pending.is_none(), "the thief's enrolment was kept");
    let owner = Origin::portal("127.0.0.1".parse().unwrap());
    server
        .accounts()
        .set_password(ALICE, "the owner's own new one", &owner)
        .await
        .unwrap();
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_some());
    enable_2fa(&server, &clock, &owner).await.unwrap();
    assert!(
        server.accounts().get(ALICE).await.unwrap().block.is_none(),
        "the owner could not lift it"
    );
}

#[tokio::test]
async fn an_operator_block_has_its_own_text_and_the_rule_does_not_lift_it() {
    let (server, clock) =
        server_with_clock("[server]\nsupport_contact = \"help@example.com\"\n").await;
    let operator = BlockRequest {
        kind: BlockKind::Operator,
        reason: "reported phishing".into(),
        detail: None,
        abuse_networks: Vec::new(),
    };
    server
        .accounts()
        .block(ALICE, operator, &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(
        mail_reply(&server, PASSWORD).await,
        "554 5.7.1 Account <alice@example.com> has been blocked from sending by the administrator. Please contact support at help@example.com"
    );
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_some());
    // A policy block does not replace it.
    block_alice(&server).await;
    assert_eq!(
        server
            .accounts()
            .get(ALICE)
            .await
            .unwrap()
            .block
            .unwrap()
            .kind,
        BlockKind::Operator
    );
    server
        .accounts()
        .unblock(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    let device = server
        .accounts()
        .device_password_add(ALICE, "phone", &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(mail_reply(&server, &device).await, "250 2.1.0 Ok");
}

#[tokio::test]
async fn device_passwords_are_suspended_by_a_policy_block_and_gone_after_it() {
    let (server, clock) = server_with_clock("").await;
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    let device = server
        .accounts()
        .device_password_add(ALICE, "outlook", &Origin::ADMIN)
        .await
        .unwrap();
    block_alice(&server).await;
    // AUTH still succeeds, so the client shows the 554 at MAIL.
    assert_eq!(mail_reply(&server, &device).await, POLICY_554);
    let shown = server.accounts().get(ALICE).await.unwrap();
    assert!(shown.policy_blocked());
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    assert!(server.accounts().get(ALICE).await.unwrap().block.is_none());
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, &device).await.line(), AUTH_535);
}

#[tokio::test]
async fn with_2fa_only_device_passwords_work_over_smtp() {
    let (server, clock) = server_with_clock("").await;
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.line(), AUTH_535);

    let device = server
        .accounts()
        .device_password_add(ALICE, "thunderbird", &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(device.len(), 19);
    let typed_variants = [
        device.clone(),
        device.to_uppercase(),
        device.replace('-', ""),
        device.replace('-', " "),
    ];
    for (i, typed) in typed_variants.iter().enumerate() {
        let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
        c.ehlo().await;
        let r = if i % 2 == 0 {
            c.auth_plain(ALICE, typed).await
        } else {
            c.auth_login(ALICE, typed).await
        };
        assert_eq!(
            r.line(),
            "235 2.7.0 Authentication successful",
            "typed as {typed:?}"
        );
    }
    let listed = server.accounts().get(ALICE).await.unwrap().device_passwords;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_ip, Some("127.0.0.1".parse().unwrap()));
    assert!(listed[0].last_used.is_some());

    server
        .accounts()
        .device_password_revoke(ALICE, "thunderbird", &Origin::ADMIN)
        .await
        .unwrap();
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, &device).await.line(), AUTH_535);

    // Turning 2FA off revokes every device password, and the password works again.
    let second = server
        .accounts()
        .device_password_add(ALICE, "phone", &Origin::ADMIN)
        .await
        .unwrap();
    server
        .accounts()
        .totp_disable(ALICE, None, &Origin::ADMIN)
        .await
        .unwrap();
    assert!(
        server
            .accounts()
            .get(ALICE)
            .await
            .unwrap()
            .device_passwords
            .is_empty()
    );
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, &second).await.line(), AUTH_535);
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
}

#[tokio::test]
async fn a_totp_code_works_once_and_reenrolment_keeps_the_old_secret_until_verified() {
    let (server, clock) = server_with_clock("").await;
    let enrolment = server
        .accounts()
        .totp_enable(ALICE, &Origin::ADMIN)
        .await
        .unwrap();
    assert!(
        enrolment
            .otpauth_url
            .starts_with("otpauth://totp/mailwarden:alice%40example.com?"),
        "{}",
        enrolment.otpauth_url
    );
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "pending"
    );
    let first = secret_of(&enrolment.key);
    let now = || mailwarden::clock::Clock::unix(&*clock);
    assert!(
        matches!(
            server
                .accounts()
                .totp_verify(ALICE, "000000", &Origin::ADMIN)
                .await,
            Err(AccountError::BadCode)
        ) || totp::code_at(&first, now()) == "000000"
    );
    let code = totp::code_at(&first, now());
    server
        .accounts()
        .totp_verify(ALICE, &code, &Origin::ADMIN)
        .await
        .unwrap();
    assert_eq!(
        server.accounts().get(ALICE).await.unwrap().totp_status(),
        "on"
    );
    // The same code again (same step): refused.
    assert!(matches!(
        server.accounts().totp_check(ALICE, &code, None).await,
        Err(AccountError::BadCode)
    ));

    // Re-enrol: the old secret still signs in until the new one is verified.
    let second = secret_of(
        &server
            .accounts()
            .totp_enable(ALICE, &Origin::ADMIN)
            .await
            .unwrap()
            .key,
    );
    clock.advance(Duration::from_secs(30));
    server
        .accounts()
        .totp_check(ALICE, &totp::code_at(&first, now()), None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    server
        .accounts()
        .totp_verify(ALICE, &totp::code_at(&second, now()), &Origin::ADMIN)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    assert!(
        server
            .accounts()
            .totp_check(ALICE, &totp::code_at(&first, now()), None)
            .await
            .is_err()
    );
    server
        .accounts()
        .totp_check(ALICE, &totp::code_at(&second, now()), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_user_is_notified_and_the_history_says_what_happened() {
    let (server, clock) = server_with_clock("").await;
    server
        .accounts()
        .block(ALICE, policy_block(&["203.0.113.0/24"]), &Origin::ADMIN)
        .await
        .unwrap();
    server
        .accounts()
        .set_password(ALICE, NEW_PASSWORD, &Origin::ADMIN)
        .await
        .unwrap();
    enable_2fa(&server, &clock, &Origin::ADMIN).await.unwrap();
    let subjects = [
        "Your account has been blocked from sending",
        "Your password was changed",
        "Two-factor authentication is on",
        "Your account has been unblocked",
    ];
    let mut seen = Vec::new();
    for _ in 0..500 {
        seen = crate::common::read_outbox(&server.outbox())
            .into_iter()
            .map(|(_, m)| String::from_utf8_lossy(&m).into_owned())
            .collect();
        if seen.len() >= subjects.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for subject in subjects {
        let notice = seen
            .iter()
            .find(|m| m.contains(&format!("Subject: {subject}\r\n")))
            .unwrap_or_else(|| panic!("no notice {subject:?}"));
        assert!(notice.contains("From: Mail system <postmaster@mail.test.example>\r\n"));
        assert!(notice.contains("To: <alice@example.com>\r\n"));
    }
    let history: Vec<String> = server
        .accounts()
        .get(ALICE)
        .await
        .unwrap()
        .history
        .into_iter()
        .map(|h| h.change)
        .collect();
    assert_eq!(
        history,
        [
            "created",
            "blocked_policy",
            "password_changed",
            "totp_enrolment_started",
            "totp_enabled",
            "unblocked"
        ]
    );
    let _ = base64::engine::general_purpose::STANDARD.encode("");
}

#[tokio::test]
async fn every_refusal_is_one_event() {
    let (server, _) = server_with_clock("").await;
    block_alice(&server).await;
    let mut c = login(&server, ALICE, PASSWORD).await;
    c.send_raw(format!("MAIL FROM:<{ALICE}>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n").as_bytes())
        .await;
    for _ in 0..3 {
        assert_eq!(c.reply().await.line(), POLICY_554);
    }
    assert_eq!(c.cmd("BOGUS").await.code, 500);
    assert_eq!(c.cmd("NOOP").await.code, 250);
    let refusals: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.kind == mailwarden::events::EventKind::Refusal)
        .map(|e| (e.stage, e.code, e.enhanced, e.reason, e.account))
        .collect();
    let alice = Some(ALICE.to_string());
    let blocked = |stage| {
        (
            Some(stage),
            Some(554),
            Some("5.7.1".to_string()),
            Some("blocked".to_string()),
            alice.clone(),
        )
    };
    assert_eq!(
        refusals,
        [
            blocked("mail"),
            blocked("rcpt"),
            blocked("data"),
            (
                Some("other"),
                Some(500),
                Some("5.5.1".into()),
                Some("syntax".into()),
                alice.clone()
            ),
        ]
    );
}

#[tokio::test]
async fn the_block_notice_says_where_my_account_is() {
    for (extra, says) in [
        (
            "[portal]\npublic_url = \"https://mail.example.com/account\"\n",
            "To send again, sign in to My account at https://mail.example.com/account, change your password",
        ),
        (
            "",
            "To send again, sign in to My account, change your password",
        ),
    ] {
        let (server, _) = server_with_clock(extra).await;
        block_alice(&server).await;
        let notice = server.wait_outbox(1).await;
        let text = String::from_utf8_lossy(&notice[0].1).replace("\r\n", " ");
        assert!(
            text.contains("Subject: Your account has been blocked from sending"),
            "{text}"
        );
        assert!(text.contains(says), "{text}");
    }
}

/// One message from `source` as `user`; the final reply line.
async fn send_from(server: &TestServer, source: &str, user: &str, password: &str) -> String {
    let (mut c, _) = Client::implicit_tls_from(
        server.submissions(),
        Some(source.parse().unwrap()),
        &server.cert_path(),
    )
    .await;
    c.ehlo().await;
    let r = c.auth_plain(user, password).await;
    assert_eq!(r.code, 235, "{r:?}");
    c.try_send(ALICE, &["bob@example.org".to_string()], "hi", "hello")
        .await
}

#[tokio::test]
async fn a_password_change_from_an_untrusted_network_blocks_the_mail_that_follows_from_one() {
    use crate::common::web::{Web, act, sign_in};
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    // From a network Alice never sent from, someone with her password
    // changes it in the portal. Before any block, that is allowed...
    let mut w = Web::from(server.running().portal, "127.0.6.9");
    assert_eq!(
        sign_in(&mut w, ALICE, PASSWORD).await.location(),
        "/my-account"
    );
    let changed_at = mailwarden::clock::Clock::unix(&*clock);
    act(
        &mut w,
        "/my-account/password",
        &[
            ("current", PASSWORD),
            ("new", NEW_PASSWORD),
            ("repeat", NEW_PASSWORD),
        ],
    )
    .await;
    let last = server
        .accounts()
        .get(ALICE)
        .await
        .unwrap()
        .history
        .pop()
        .unwrap();
    assert_eq!(
        (last.change.as_str(), last.untrusted),
        ("password_changed", true)
    );
    let event = server.wait_event("account.untrusted_change").await;
    assert_eq!(event.ip, Some("127.0.6.9".parse().unwrap()));
    // ... and notified, saying where from.
    let mut notice = None;
    for _ in 0..500 {
        notice = crate::common::read_outbox(&server.outbox())
            .into_iter()
            .map(|(_, m)| String::from_utf8_lossy(&m).into_owned())
            .find(|m| m.contains("Subject: Your password was changed"));
        if notice.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let notice = notice.expect("a password notice");
    assert!(
        notice.contains("made from a network (127.0.6.9) you have not sent mail from before"),
        "{notice}"
    );
    // Mail from home is still Alice's (she may have changed it at a hotel).
    clock.advance(Duration::from_secs(60));
    let home = send_from(&server, "127.0.0.1", ALICE, NEW_PASSWORD).await;
    assert!(home.starts_with("250 "), "{home}");
    // The first message from an untrusted network blocks the account.
    clock.advance(Duration::from_secs(60));
    let away = send_from(&server, "127.0.7.9", ALICE, NEW_PASSWORD).await;
    assert_eq!(away, POLICY_554);
    let block = server.accounts().get(ALICE).await.unwrap().block.unwrap();
    assert!(block.detail.unwrap().contains("untrusted_change="));
    // The thief arrived with the change: trust earned since does not count.
    assert_eq!(block.abuse_start, Some(changed_at));
}

#[tokio::test]
async fn during_a_block_no_credential_change_from_an_untrusted_network_is_made() {
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    // 2FA on before the block (from home), so turning it off is a target.
    enable_2fa(
        &server,
        &clock,
        &Origin::portal("127.0.0.1".parse().unwrap()),
    )
    .await
    .unwrap();
    server
        .accounts()
        .block(ALICE, policy_block(&["203.0.113.0/24"]), &Origin::ADMIN)
        .await
        .unwrap();
    let before = server.accounts().get(ALICE).await.unwrap();
    let accounts = server.accounts();
    let mut made = Vec::new();
    let mut tried = 0;
    for ip in ["203.0.113.9", "203.0.113.200", "192.0.2.44", "2001:db8::1"] {
        let o = Origin::portal(ip.parse().unwrap());
        let results = [
            (
                "password",
                accounts.set_password(ALICE, NEW_PASSWORD, &o).await.err(),
            ),
            ("2fa enrolment", accounts.totp_enable(ALICE, &o).await.err()),
            (
                "2fa off",
                accounts.totp_disable(ALICE, Some("123456"), &o).await.err(),
            ),
            (
                "device password",
                accounts.device_password_add(ALICE, "x", &o).await.err(),
            ),
            (
                "recovery address",
                accounts
                    .set_recovery(ALICE, "thief@example.net", &o)
                    .await
                    .err(),
            ),
        ];
        for (what, err) in results {
            tried += 1;
            if !matches!(err, Some(AccountError::NeedsTrustedNetwork)) {
                made.push(format!("{what} from {ip}: {err:?}"));
            }
        }
    }
    assert_eq!((tried, made.len()), (20, 0), "{made:#?}");
    let after = server.accounts().get(ALICE).await.unwrap();
    assert_eq!(after.history, before.history);
    assert_eq!(after.password_hash, before.password_hash);
    assert!(after.recovery.is_none() && after.totp.pending.is_none());
    let refused = server
        .events
        .snapshot()
        .iter()
        .filter(|e| e.name() == "account.change_refused")
        .count();
    assert_eq!(refused, 20);
}
