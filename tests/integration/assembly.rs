//! The offline CLI and the server are one application: a block lifted with
//! the server stopped leaves the same state as one lifted through the
//! admin API, and the server started afterwards agrees with it. All through
//! the real binary.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mailwarden::accounts::totp;
use serde_json::Value;

use crate::common::client::Client;
use crate::common::serve::ServeProcess;
use crate::common::web::{Web, act, enable_2fa_with, sign_in};
use crate::common::{PASSWORD, run_cli, test_config_text_mode};

const ALICE: &str = "alice@example.com";
const NEW_PASSWORD: &str = "a brand new passphrase";
const POLICY_554: &str = "554 5.7.1 Account <alice@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked";
/// The thief's address: another /24 than the owner's 127.0.0.1.
const THIEF: &str = "127.0.1.2";

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    cert: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mailwarden.toml");
        // Delivery to a relay that never answers: mail stays queued, so no
        // delivery result moves the counters `account show` compares.
        let relay = "[delivery.relay]\nhost = \"127.0.0.1\"\nport = 1\ntls = \"none\"\n";
        std::fs::write(&config, test_config_text_mode("relay", relay)).unwrap();
        let cert = dir
            .path()
            .join("data")
            .join(mailwarden::tls::SELF_SIGNED_CERT);
        Self {
            _dir: dir,
            config,
            cert,
        }
    }

    /// Runs the real CLI on this config; panics unless it succeeds.
    fn cli(&self, args: &[&str], stdin: &str) -> String {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let (ok, out, err) = tokio::task::block_in_place(|| run_cli(&all, stdin));
        assert!(ok, "mailwarden {args:?} failed: {err}");
        out
    }

    fn show(&self) -> Value {
        serde_json::from_str(&self.cli(&["account", "show", ALICE, "--json"], "")).unwrap()
    }

    fn serve(&self) -> ServeProcess {
        tokio::task::block_in_place(|| ServeProcess::start(&self.config))
    }

    fn stop(&self, server: ServeProcess) {
        let status = tokio::task::block_in_place(|| server.stop());
        assert!(status.success(), "{status}");
    }

    async fn session(&self, server: &ServeProcess, from: &str, password: &str) -> Client {
        let from: IpAddr = from.parse().unwrap();
        let (mut c, greeting) =
            Client::implicit_tls_from(server.submissions(), Some(from), &self.cert).await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        c.ehlo().await;
        let r = c.auth_plain(ALICE, password).await;
        assert_eq!(r.code, 235, "{r:?}");
        c
    }

    /// A server with alice, blocked by the scorer for a burst from the
    /// thief's network, and stopped.
    async fn blocked_by_the_scorer(&self) {
        let server = self.serve();
        self.cli(&["account", "add", ALICE, "--password-stdin"], PASSWORD);
        // The owner's network, trusted by the operator: the thief's is not.
        let out = self.cli(&["account", "trust", ALICE, "127.0.0.0/24"], "");
        assert_eq!(
            out.trim(),
            format!("{ALICE} now trusts: 127.0.0.0/24 (operator)")
        );
        let mut c = self.session(&server, THIEF, PASSWORD).await;
        let mut blocked = false;
        for i in 0..20 {
            let rcpts: Vec<String> = (0..5)
                .map(|k| format!("target{i}-{k}@victims.example"))
                .collect();
            let reply = send(&mut c, &rcpts, "Cheap watches, best prices, click now.").await;
            if reply.starts_with("554") {
                assert_eq!(reply, POLICY_554);
                blocked = true;
                break;
            }
            assert!(reply.starts_with("250 "), "{reply}");
        }
        assert!(blocked, "the burst was never blocked");
        assert_eq!(self.show()["block"]["kind"], "policy");
        self.stop(server);
    }
}

/// MAIL, RCPTs, DATA as Alice; the first refusal or the final reply.
async fn send(c: &mut Client, rcpts: &[String], body: &str) -> String {
    c.try_send(ALICE, rcpts, "hello", body).await
}

/// Twenty ordinary messages from the owner's network, each to one of a
/// few colleagues: every one is accepted.
async fn twenty_ordinary_messages(setup: &Setup, server: &ServeProcess, password: &str) {
    let mut c = setup.session(server, "127.0.0.1", password).await;
    for i in 0..20 {
        let to = [format!("colleague{}@example.org", i % 3)];
        let reply = send(
            &mut c,
            &to,
            &format!("Minutes of meeting {i}, as discussed."),
        )
        .await;
        assert!(
            reply.starts_with("250 2.0.0 Ok: queued as"),
            "message {} after the unblock: {reply}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_unblock_holds_after_a_restart() {
    let setup = Setup::new();
    setup.blocked_by_the_scorer().await;
    let out = setup.cli(&["account", "unblock", ALICE], "");
    assert_eq!(out.trim(), format!("unblocked {ALICE}"));
    let shown = setup.show();
    assert_eq!(shown["block"], Value::Null);
    assert_eq!(shown["policy"]["score"], 0.0, "{shown:#}");

    let server = setup.serve();
    twenty_ordinary_messages(&setup, &server, PASSWORD).await;
    let shown = setup.show();
    assert_eq!(shown["block"], Value::Null, "{shown:#}");
    assert_eq!(shown["policy"]["messages_last_hour"], 20);
    setup.stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_password_change_and_2fa_in_the_portal_lift_the_block() {
    let setup = Setup::new();
    setup.blocked_by_the_scorer().await;
    // The owner's new password, set by the operator with the server down.
    let out = setup.cli(
        &["account", "passwd", ALICE, "--password-stdin"],
        NEW_PASSWORD,
    );
    assert_eq!(out.trim(), format!("password changed for {ALICE}"));
    assert_eq!(setup.show()["block"]["kind"], "policy");
    // The owner has no sending history here: the operator vouched for the
    // owner's network before the theft (the portal refuses 2FA from any
    // other), and the block did not change that.
    assert_eq!(
        setup.show()["trusted_networks"],
        serde_json::json!([{"network": "127.0.0.0/24", "by": "operator"}])
    );

    // After the restart the owner enables 2FA on My account.
    let server = setup.serve();
    let mut w = Web::new(server.addr("Portal"));
    let r = sign_in(&mut w, ALICE, NEW_PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));
    enable_2fa_with(&mut w, |secret| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        totp::code_at(secret, now.as_secs())
    })
    .await;
    let shown = setup.show();
    assert_eq!(shown["block"], Value::Null, "{shown:#}");
    assert_eq!(shown["policy"]["score"], 0.0, "{shown:#}");
    // With 2FA on, the mail program needs a device password.
    act(
        &mut w,
        "/my-account/devices/create",
        &[("name", "Thunderbird")],
    )
    .await;
    let device = device_password(&mut w).await;
    twenty_ordinary_messages(&setup, &server, &device).await;
    assert_eq!(setup.show()["block"], Value::Null);
    setup.stop(server);
}

/// The device password shown once on My account after it was created.
async fn device_password(w: &mut Web) -> String {
    let page = w.get("/my-account").await.body;
    let start = page
        .find(r#"id="new-device-password">"#)
        .expect("the new device password is shown")
        + r#"id="new-device-password">"#.len();
    let end = page[start..].find("</code>").unwrap() + start;
    page[start..end].split_whitespace().collect()
}

/// `account show --json` without what differs between two runs anyway:
/// timestamps.
fn without_timestamps(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in ["at", "created", "last_used", "first_seen", "last_seen"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_and_an_offline_unblock_leave_the_same_account() {
    let online = Setup::new();
    online.blocked_by_the_scorer().await;
    let server = online.serve();
    online.cli(&["account", "unblock", ALICE], "");
    let through_the_server = online.show();
    online.stop(server);

    let offline = Setup::new();
    offline.blocked_by_the_scorer().await;
    offline.cli(&["account", "unblock", ALICE], "");
    let on_the_store = offline.show();

    assert_eq!(through_the_server["block"], Value::Null);
    assert_eq!(
        without_timestamps(through_the_server.clone()),
        without_timestamps(on_the_store.clone()),
        "online:\n{through_the_server:#}\noffline:\n{on_the_store:#}"
    );
    // After a restart the server reads the same windows back.
    let server = offline.serve();
    let restarted = offline.show();
    offline.stop(server);
    assert_eq!(restarted["policy"], on_the_store["policy"]);
}
