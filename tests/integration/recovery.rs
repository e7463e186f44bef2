//! Recovery links: an owner away from every trusted network lifts a block
//! from the browser that opens the link sent to the recovery address.

use std::time::Duration;

use mailwarden::accounts::{Origin, totp};
use mailwarden::clock::{Clock, ManualClock};

use crate::common::web::{Web, account_page, act, enable_2fa_with, sign_in};
use crate::common::{
    ALICE, PASSWORD, TestServer, policy_block_on, send_from_home_for_a_week, server_with_clock,
};

const BACKUP: &str = "alice.backup@example.net";
const DAY: u64 = 24 * 3600;

/// The newest message to `to` with `subject`, waiting for it.
async fn mail_to(server: &TestServer, to: &str, subject: &str) -> String {
    for _ in 0..500 {
        let found = crate::common::read_outbox(&server.outbox())
            .into_iter()
            .map(|(_, m)| String::from_utf8_lossy(&m).into_owned())
            .rev()
            .find(|m| {
                m.contains(&format!("<{to}>")) && m.contains(&format!("Subject: {subject}\r\n"))
            });
        if let Some(m) = found {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no mail {subject:?} to {to}");
}

/// The path and query of the portal link in a mail.
fn link_in(mail: &str) -> String {
    let start = mail.find("/recovery?").expect("a recovery link");
    mail[start..].split_whitespace().next().unwrap().to_string()
}

/// Opens a mailed link in a browser at `source` and presses its button;
/// returns where that led.
async fn open_link(server: &TestServer, source: &str, link: &str) -> (Web, String) {
    let mut w = Web::from(server.running().portal, source);
    let page = w.get(link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let field = |name: &str| {
        let marker = format!(r#"name="{name}" value=""#);
        let at = page.body.find(&marker).unwrap() + marker.len();
        page.body[at..].split('"').next().unwrap().to_string()
    };
    let (a, k, t) = (field("email"), field("kind"), field("token"));
    let a = a.replace("&#64;", "@");
    let r = w
        .post(
            "/recovery",
            &[
                ("csrf", &page.csrf()),
                ("email", &a),
                ("kind", &k),
                ("token", &t),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let to = r.location().to_string();
    (w, to)
}

fn code_now(clock: &ManualClock, secret: &[u8]) -> String {
    clock.advance(Duration::from_secs(30));
    totp::code_at(secret, clock.unix())
}

#[tokio::test]
async fn a_recovery_link_lets_the_owner_lift_a_block_from_any_browser() {
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    // At home, Alice sets her recovery address; its confirmation link is
    // opened on her phone, somewhere else.
    let mut home = Web::from(server.running().portal, "127.0.0.1");
    assert_eq!(
        sign_in(&mut home, ALICE, PASSWORD).await.location(),
        "/my-account"
    );
    act(&mut home, "/my-account/recovery", &[("email", BACKUP)]).await;
    assert!(
        account_page(&mut home)
            .await
            .body
            .contains("once you open the link")
    );
    let confirm = mail_to(&server, BACKUP, "Confirm your recovery address").await;
    let (_, to) = open_link(&server, "127.0.9.9", &link_in(&confirm)).await;
    assert_eq!(to, "/");
    let a = server.accounts().get(ALICE).await.unwrap();
    let r = a.recovery.as_ref().unwrap();
    assert!(r.confirmed_at.is_some() && r.set_trusted, "{r:?}");
    // A second use does nothing.
    let (mut again, _) = open_link(&server, "127.0.9.9", &link_in(&confirm)).await;
    assert!(
        again
            .get("/")
            .await
            .body
            .contains("That link does not work")
    );

    // Eight days later a thief sends from 127.0.1.0/24 and is blocked,
    // while Alice is travelling (127.0.8.8, never used for mail).
    clock.advance(Duration::from_secs(8 * DAY));
    policy_block_on(&server, ALICE, &["127.0.1.0/24"]).await;
    // The block notice also reaches the recovery address.
    mail_to(
        &server,
        BACKUP,
        "Your account has been blocked from sending",
    )
    .await;
    let mut thief = Web::from(server.running().portal, "127.0.1.9");
    assert_eq!(
        sign_in(&mut thief, ALICE, PASSWORD).await.location(),
        "/my-account"
    );
    let mut hotel = Web::from(server.running().portal, "127.0.8.8");
    assert_eq!(
        sign_in(&mut hotel, ALICE, PASSWORD).await.location(),
        "/my-account"
    );
    let page = account_page(&mut hotel).await.body;
    assert!(page.contains("For your safety, this change needs a network"));
    assert!(page.contains("Email me a recovery link"));
    act(&mut hotel, "/my-account/recovery/link", &[]).await;
    assert!(
        account_page(&mut hotel)
            .await
            .body
            .contains("We sent a recovery link to your recovery address")
    );
    let mail = mail_to(&server, BACKUP, "Your recovery link").await;
    // Opened in another browser at the hotel: signed in, no password.
    let (mut owner, to) = open_link(&server, "127.0.8.8", &link_in(&mail)).await;
    assert_eq!(to, "/my-account");
    let page = account_page(&mut owner).await.body;
    assert!(!page.contains("For your safety"), "the steps are open here");
    act(
        &mut owner,
        "/my-account/password",
        &[
            ("current", ""),
            ("new", "a new passphrase of hers"),
            ("repeat", "a new passphrase of hers"),
        ],
    )
    .await;
    assert!(
        account_page(&mut owner)
            .await
            .body
            .contains("Password changed")
    );
    let (_, page) = enable_2fa_with(&mut owner, |s| code_now(&clock, s)).await;
    assert!(page.contains("Your account has been unblocked"), "{page}");
    let a = server.accounts().get(ALICE).await.unwrap();
    assert!(a.block.is_none());
    assert!(a.history.iter().any(|h| h.change == "recovery_link_used"));
    // The link worked once; the thief's and the hotel's sessions are over.
    let (mut again, _) = open_link(&server, "127.0.8.8", &link_in(&mail)).await;
    assert!(
        again
            .get("/")
            .await
            .body
            .contains("That link does not work")
    );
    assert_eq!(thief.get("/my-account").await.location(), "/");
    assert_eq!(hotel.get("/my-account").await.location(), "/");
}

#[tokio::test]
async fn a_recovery_address_set_during_the_abuse_or_from_an_untrusted_network_gets_no_link() {
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    // Set from a network Alice never sent from: confirmed, but it does not
    // count (and it is an untrusted change).
    let mut away = Web::from(server.running().portal, "127.0.7.7");
    sign_in(&mut away, ALICE, PASSWORD).await;
    act(&mut away, "/my-account/recovery", &[("email", BACKUP)]).await;
    let confirm = mail_to(&server, BACKUP, "Confirm your recovery address").await;
    open_link(&server, "127.0.7.7", &link_in(&confirm)).await;
    clock.advance(Duration::from_secs(8 * DAY));
    policy_block_on(&server, ALICE, &["127.0.1.0/24"]).await;
    let a = server.accounts().get(ALICE).await.unwrap();
    assert!(a.recovery.as_ref().unwrap().confirmed_at.is_some());
    assert!(!server.accounts().recovery_qualifies(&a));
    let mut away = Web::from(server.running().portal, "127.0.7.7");
    sign_in(&mut away, ALICE, PASSWORD).await;
    let page = account_page(&mut away).await.body;
    assert!(!page.contains("Email me a recovery link"));
    act(&mut away, "/my-account/recovery/link", &[]).await;
    assert!(
        crate::common::read_outbox(&server.outbox())
            .iter()
            .all(|(_, m)| !String::from_utf8_lossy(m).contains("Subject: Your recovery link"))
    );
    // Set at home but only 2 days before the block: not yet.
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .set_recovery(ALICE, BACKUP, &Origin::portal("127.0.0.1".parse().unwrap()))
        .await
        .unwrap();
    let confirm = mail_to(&server, BACKUP, "Confirm your recovery address").await;
    open_link(&server, "127.0.0.1", &link_in(&confirm)).await;
    clock.advance(Duration::from_secs(2 * DAY));
    policy_block_on(&server, ALICE, &[]).await;
    let a = server.accounts().get(ALICE).await.unwrap();
    assert!(!server.accounts().recovery_qualifies(&a));
}

#[tokio::test]
async fn an_owner_whose_password_the_thief_changed_gets_the_account_back_by_recovery_link() {
    let (server, clock) = server_with_clock("").await;
    send_from_home_for_a_week(&server, &clock, ALICE, PASSWORD, "127.0.0.1").await;
    server
        .accounts()
        .set_recovery(ALICE, BACKUP, &Origin::portal("127.0.0.1".parse().unwrap()))
        .await
        .unwrap();
    let confirm = mail_to(&server, BACKUP, "Confirm your recovery address").await;
    open_link(&server, "127.0.0.1", &link_in(&confirm)).await;
    clock.advance(Duration::from_secs(8 * DAY));
    // The thief signs in from his network, changes the password, and
    // mails: the first message blocks the account.
    let mut thief = Web::from(server.running().portal, "127.0.6.6");
    sign_in(&mut thief, ALICE, PASSWORD).await;
    act(
        &mut thief,
        "/my-account/password",
        &[
            ("current", PASSWORD),
            ("new", "the thief's password now"),
            ("repeat", "the thief's password now"),
        ],
    )
    .await;
    let (mut c, _) = crate::common::client::Client::implicit_tls_from(
        server.submissions(),
        Some("127.0.6.6".parse().unwrap()),
        &server.cert_path(),
    )
    .await;
    c.ehlo().await;
    assert_eq!(
        c.auth_plain(ALICE, "the thief's password now").await.code,
        235
    );
    let r = c
        .try_send(ALICE, &["victim@example.org".to_string()], "hi", "hello")
        .await;
    assert!(r.starts_with("554 5.7.1"), "{r}");
    // Alice's password no longer works; from the sign-in page she asks
    // for a recovery link (the answer is the same for any address).
    let mut home = Web::from(server.running().portal, "127.0.0.1");
    assert_eq!(sign_in(&mut home, ALICE, PASSWORD).await.location(), "/");
    for email in [ALICE, "nobody@example.com"] {
        let page = home.get("/").await;
        let r = home
            .post(
                "/recovery/request",
                &[("csrf", &page.csrf()), ("email", email)],
            )
            .await;
        assert_eq!(r.location(), "/");
        assert!(
            home.get("/")
                .await
                .body
                .contains("If that account can get a recovery link, it is on its way")
        );
    }
    let mail = mail_to(&server, BACKUP, "Your recovery link").await;
    let (mut owner, to) = open_link(&server, "127.0.0.1", &link_in(&mail)).await;
    assert_eq!(to, "/my-account");
    act(
        &mut owner,
        "/my-account/password",
        &[
            ("current", "she does not know it"),
            ("new", "alice's own again, longer"),
            ("repeat", "alice's own again, longer"),
        ],
    )
    .await;
    assert!(
        account_page(&mut owner)
            .await
            .body
            .contains("Password changed")
    );
    let (_, page) = enable_2fa_with(&mut owner, |s| code_now(&clock, s)).await;
    assert!(page.contains("Your account has been unblocked"), "{page}");
    // The thief's session is over and his password is gone.
    assert_eq!(thief.get("/my-account").await.location(), "/");
    let mut again = Web::from(server.running().portal, "127.0.6.6");
    assert_eq!(
        sign_in(&mut again, ALICE, "the thief's password now")
            .await
            .location(),
        "/"
    );
}
