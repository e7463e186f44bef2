//! The stored record encoding does not change: a store written by the
//! previous release (tests/fixtures/store-0.1, made by its make.py with
//! commit bd48c1d) is read back table by table through the CLI, then served.
//!
//! The values below are what make.py wrote; the ones only its run decided
//! (queue ids, times, the device password, the 2FA key) it printed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::client::Client;
use crate::common::serve::ServeProcess;
use crate::common::web::{Web, otp_step, sign_in};
use crate::common::{base32_decode, run_cli};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-0.1");
/// While make.py ran: every time in the store is in here.
const MADE: std::ops::RangeInclusive<u64> = 1_796_603_322..=1_796_603_325;
/// The Date of the notices and of the Received lines.
const DATE: &str = "Mon, 07 Dec 2026 00:28:44 +0000";
/// meta's `key_id`: the id of the fixture's secret.key.
const KEY_ID: &str = "51114cfc4986835f";
const DEVICE_PASSWORD: &str = "hcre-ppbx-yijw-nhxu";
const TOTP_KEY: &str = "32MY H7DH A4OT CIFP S5BY RFSY D2BZ UWCY";
/// Why every delivery attempt failed (the relay port was closed).
const REFUSED: &str = "connection to the relay failed: Connection refused (os error 111)";
const POSTMASTER: &str = "postmaster@mail.test.example";
const BLOCK_NOTICE: &str = "Your account has been blocked from sending";

const PLAIN: (&str, &str) = ("plain@example.com", "plain fixture password 1");
const SECURE: (&str, &str) = ("secure@example.com", "secure fixture password 2");
const SUSPECT: (&str, &str) = ("suspect@example.com", "suspect fixture password 3");
const BANNED: (&str, &str) = ("banned@example.com", "banned fixture password 4");
const RETIRED: (&str, &str) = ("retired@example.com", "retired fixture password 6");

/// A copy of the fixture in a temporary folder, private as the server
/// keeps its data; returns it and its config file.
fn fixture() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    for name in ["mailwarden.redb", "secret.key"] {
        let to = data.join(name);
        std::fs::copy(Path::new(FIXTURE).join("data").join(name), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.path().join("mailwarden.toml");
    std::fs::copy(Path::new(FIXTURE).join("mailwarden.toml"), &config).unwrap();
    (dir, config)
}

/// `mailwarden --config CONFIG ARGS...`, which must succeed.
fn cli(config: &Path, args: &[&str]) -> String {
    let mut full = vec!["--config", config.to_str().unwrap()];
    full.extend_from_slice(args);
    let (ok, out, err) = run_cli(&full, "");
    assert!(ok, "mailwarden {args:?}: {err}");
    out
}

/// `cli` with `--json`, parsed.
fn cli_json(config: &Path, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = cli(config, &full);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn made(v: &Value) {
    let t = v.as_u64().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(MADE.contains(&t), "{t} is not a time of the fixture");
}

struct Account {
    address: &'static str,
    aliases: &'static [&'static str],
    disabled: bool,
    totp: &'static str,
    /// Names of the device passwords (each used once, from 127.0.0.1).
    devices: &'static [&'static str],
    /// The block, without its time.
    block: Value,
    overrides: Value,
    /// (seq, change, via) of each history entry.
    history: &'static [(u64, &'static str, &'static str)],
    /// The scorer saved state for it (it sent mail).
    scored: bool,
}

const CREATED: (u64, &str, &str) = (1, "created", "admin");

/// Every account, in the store's order.
fn accounts() -> Vec<Account> {
    let none = &[][..];
    vec![
        Account {
            address: BANNED.0,
            aliases: none,
            disabled: false,
            totp: "off",
            devices: none,
            block: json!({"kind": "operator", "reason": "spam complaints", "seq": 2,
                          "abuse_networks": [], "detail": null}),
            overrides: json!({}),
            history: &[CREATED, (2, "blocked_operator", "admin")],
            scored: true,
        },
        Account {
            address: PLAIN.0,
            aliases: none,
            disabled: false,
            totp: "off",
            devices: none,
            block: Value::Null,
            overrides: json!({}),
            history: &[CREATED],
            scored: true,
        },
        Account {
            address: RETIRED.0,
            aliases: none,
            disabled: true,
            totp: "off",
            devices: none,
            block: Value::Null,
            overrides: json!({}),
            history: &[CREATED, (2, "disabled", "admin")],
            scored: false,
        },
        Account {
            address: SECURE.0,
            aliases: &["sales@example.com"],
            disabled: false,
            totp: "on",
            devices: &["laptop"],
            block: Value::Null,
            overrides: json!({"max_messages_per_hour": 2000.0, "max_recipients_per_day": 5000.0}),
            history: &[
                CREATED,
                (2, "alias added: sales@example.com", "admin"),
                (3, "totp_enrolment_started", "admin"),
                (4, "totp_enabled", "admin"),
                (5, "device_password_created", "admin"),
                (6, "policy max_messages_per_hour=2000", "admin"),
                (7, "policy max_recipients_per_day=5000", "admin"),
            ],
            scored: true,
        },
        Account {
            address: SUSPECT.0,
            aliases: none,
            disabled: false,
            totp: "off",
            devices: none,
            block: json!({"kind": "policy", "reason": "sending to many new recipients", "seq": 2,
                          "abuse_networks": ["203.0.113.0/24"], "detail": null}),
            overrides: json!({}),
            history: &[CREATED, (2, "blocked_policy", "admin")],
            scored: true,
        },
        Account {
            address: "tripped@example.com",
            aliases: none,
            disabled: false,
            totp: "off",
            devices: none,
            // Blocked by the scorer itself, at its first message.
            block: json!({"kind": "policy", "reason": "sending to many new recipients", "seq": 3,
                          "abuse_networks": [],
                          "detail": "score 0.2 (block at 10.0): new_recipients=0.2"}),
            overrides: json!({"block_score": 0.05}),
            history: &[
                CREATED,
                (2, "policy block_score=0.05", "admin"),
                (3, "blocked_policy", "policy"),
            ],
            scored: true,
        },
    ]
}

/// An account as `account list` or `account show` prints it.
fn check_account(shown: &Value, a: &Account, show: bool) {
    let who = a.address;
    assert_eq!(shown["address"], who);
    assert_eq!(shown["aliases"], json!(a.aliases), "{who}");
    assert_eq!(shown["disabled"], a.disabled, "{who}");
    assert_eq!(shown["totp"], a.totp, "{who}");
    assert_eq!(shown["totp_pending"], false, "{who}");
    assert_eq!(shown["policy_overrides"], a.overrides, "{who}");
    made(&shown["created"]);
    let history: Vec<(u64, &str, &str)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            made(&h["at"]);
            (
                h["seq"].as_u64().unwrap(),
                h["change"].as_str().unwrap(),
                h["via"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(history, a.history, "{who}");
    let devices = shown["device_passwords"].as_array().unwrap();
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, a.devices, "{who}");
    for d in devices {
        made(&d["created"]);
        made(&d["last_used"]);
        assert_eq!(d["last_ip"], "127.0.0.1", "{who}");
        assert_eq!(d["suspended"], false, "{who}");
    }
    let mut block = shown["block"].clone();
    if let Some(b) = block.as_object_mut() {
        made(&b.remove("at").unwrap());
    }
    assert_eq!(block, a.block, "{who}");
    // The scorer's view: its windows move on with the clock, so only its
    // shape (whether each saved state decoded is checked on the server's
    // log). Offline, as through the server, an account that never sent
    // shows an empty view.
    let policy = shown.get("policy");
    if show {
        let policy = policy.unwrap_or_else(|| panic!("no scorer state for {who}"));
        let mut keys: Vec<&str> = policy
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "block_score",
                "bounced_last_day",
                "delivered_last_day",
                "messages_last_day",
                "messages_last_hour",
                "messages_last_minute",
                "networks_last_hour",
                "recipients_last_day",
                "recipients_last_hour",
                "score"
            ],
            "{who}"
        );
        assert_eq!(policy["block_score"], 10.0, "{who}");
        if !a.scored {
            assert_eq!(policy["messages_last_day"], 0, "{who}");
        }
    } else {
        assert_eq!(policy, None, "{who}");
    }
}

struct Message {
    id: &'static str,
    state: &'static str,
    account: &'static str,
    from: &'static str,
    to: &'static [&'static str],
    size: u64,
    /// The header as stored (`queue show`).
    headers: String,
}

/// The header of a message a client sent: the Received line, then the
/// header make.py wrote. `received_id` is the id the session gave it.
fn sent(received_id: &str, from: &str, to: &[&str], subject: &str) -> String {
    let only = match to {
        [one] => format!(" for <{one}>"),
        _ => String::new(),
    };
    let to: Vec<String> = to.iter().map(|t| format!("<{t}>")).collect();
    format!(
        "Received: from client.fixture.example ([127.0.0.1]) by mail.test.example (mailwarden) \
         with ESMTPSA id {received_id}{only}; {DATE}\r\nFrom: <{from}>\r\nTo: {}\r\n\
         Subject: {subject}\r\nDate: Mon, 01 Dec 2025 10:00:00 +0000\r\n\
         Message-ID: <{}@fixture.example>\r\n",
        to.join(", "),
        subject.replace(' ', "-")
    )
}

/// The header of a notice to an account.
fn notice(id: &str, to: &str, subject: &str) -> String {
    format!(
        "From: Mail system <{POSTMASTER}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {DATE}\r\n\
         Message-ID: <{id}.notice@mail.test.example>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    )
}

/// The queued messages, in id order.
fn queued() -> Vec<Message> {
    let notice_to = |id, to: &'static [&'static str; 1], size, subject| Message {
        id,
        state: "queued",
        account: POSTMASTER,
        from: "",
        to,
        size,
        headers: notice(id, to[0], subject),
    };
    vec![
        notice_to(
            "01A24DE727190000",
            &[SECURE.0],
            449,
            "Two-factor authentication is on",
        ),
        notice_to(
            "01A24DE727440000",
            &[SECURE.0],
            439,
            "A device password was created",
        ),
        Message {
            id: "01A24DE727CD0000",
            state: "queued",
            account: PLAIN.0,
            from: PLAIN.0,
            to: &["bob@example.org"],
            size: 353,
            headers: sent(
                "01A24DE727CD0000",
                PLAIN.0,
                &["bob@example.org"],
                "fixture plain",
            ),
        },
        Message {
            id: "01A24DE728000000",
            state: "queued",
            account: SECURE.0,
            from: "sales@example.com",
            to: &["carol@example.org", "dave@example.net"],
            size: 355,
            headers: sent(
                "01A24DE728000000",
                "sales@example.com",
                &["carol@example.org", "dave@example.net"],
                "fixture alias",
            ),
        },
        notice_to(
            "01A24DE729570000",
            &["tripped@example.com"],
            556,
            BLOCK_NOTICE,
        ),
        notice_to("01A24DE729910000", &[SUSPECT.0], 556, BLOCK_NOTICE),
        notice_to("01A24DE729B10000", &[BANNED.0], 428, BLOCK_NOTICE),
    ]
}

/// Held mail and policy evidence, in id order.
fn held() -> Vec<Message> {
    vec![
        Message {
            id: "01A24DE728790000",
            state: "held",
            account: SUSPECT.0,
            from: SUSPECT.0,
            to: &["erin@example.org"],
            size: 368,
            headers: sent(
                "01A24DE728790000",
                SUSPECT.0,
                &["erin@example.org"],
                "fixture suspect",
            ),
        },
        Message {
            id: "01A24DE728D00000",
            state: "held",
            account: BANNED.0,
            from: BANNED.0,
            to: &["frank@example.org"],
            size: 370,
            headers: sent(
                "01A24DE728D00000",
                BANNED.0,
                &["frank@example.org"],
                "fixture banned",
            ),
        },
        Message {
            // Kept under an id of its own; the Received line has the
            // session's.
            id: "01A24DE729520001",
            state: "evidence",
            account: "tripped@example.com",
            from: "tripped@example.com",
            to: &["gina@example.org", "hank@example.net", "ivan@example.com"],
            size: 379,
            headers: sent(
                "01A24DE729520000",
                "tripped@example.com",
                &["gina@example.org", "hank@example.net", "ivan@example.com"],
                "fixture tripped",
            ),
        },
    ]
}

/// A message as `queue list` or `queue show` prints it. Everything but the
/// evidence was tried once, when the relay refused; held mail keeps its
/// time but is not due.
fn check_message(shown: &Value, m: &Message, show: bool) {
    let id = m.id;
    assert_eq!(shown["id"], id);
    assert_eq!(shown["state"], m.state, "{id}");
    assert_eq!(shown["account"], m.account, "{id}");
    assert_eq!(shown["from"], m.from, "{id}");
    assert_eq!(shown["recipients"], json!(m.to), "{id}");
    assert_eq!(shown["size"], m.size, "{id}");
    made(&shown["received_at"]);
    let tried = m.state != "evidence";
    assert_eq!(shown["attempts"], u32::from(tried), "{id}");
    let next = shown["next_attempt"].as_u64().unwrap();
    let deliveries = shown["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), m.to.len(), "{id}");
    for (d, to) in deliveries.iter().zip(m.to) {
        assert_eq!(d["address"], *to, "{id}");
        assert_eq!(d["status"], "pending", "{id}");
        assert_eq!(d["attempts"], u32::from(tried), "{id}");
        if tried {
            assert_eq!(shown["last_error"], REFUSED, "{id}");
            assert_eq!(d["last_reply"], REFUSED, "{id}");
            // Retried a minute after the attempt (retry_schedule's 1m).
            made(&d["last_attempt"]);
            assert_eq!(next, d["last_attempt"].as_u64().unwrap() + 60, "{id}");
        } else {
            assert_eq!(shown["last_error"], Value::Null, "{id}");
            assert_eq!(d["last_reply"], Value::Null, "{id}");
            assert_eq!(d["last_attempt"], Value::Null, "{id}");
            assert_eq!(next, shown["received_at"], "{id}");
        }
        let due = (m.state == "queued").then_some(next);
        assert_eq!(d["next_attempt"], json!(due), "{id}");
    }
    if show {
        assert_eq!(shown["headers"], m.headers.as_str(), "{id}");
    } else {
        assert_eq!(shown.get("headers"), None, "{id}");
    }
}

#[test]
fn the_cli_reads_every_table_of_the_previous_release_store() {
    let (_dir, config) = fixture();
    let config = config.as_path();

    // accounts (and meta: the CLI checks the key against the store's id).
    let expected = accounts();
    let list = cli_json(config, &["account", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), expected.len());
    for (shown, a) in list.iter().zip(&expected) {
        check_account(shown, a, false);
    }
    // policy: each account's saved scorer state, with its record.
    for a in &expected {
        check_account(&cli_json(config, &["account", "show", a.address]), a, true);
    }
    let devices = cli_json(config, &["account", "device-password", "list", SECURE.0]);
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["name"], "laptop");
    assert_eq!(
        cli(config, &["account", "alias", "list", SECURE.0]),
        "sales@example.com\n"
    );
    // aliases: the index still owns the alias (and its +tag forms).
    for taken in ["sales@example.com", "sales+news@example.com"] {
        let (ok, _, err) = run_cli(
            &[
                "--config",
                config.to_str().unwrap(),
                "account",
                "add",
                taken,
                "--password-stdin",
            ],
            "a long enough password\n",
        );
        assert!(!ok);
        assert_eq!(
            err.trim(),
            format!("mailwarden: {taken} is already an account address or an alias")
        );
    }

    // queue and bodies (the header of each message is read from its body).
    for (held, expected) in [(false, queued()), (true, held())] {
        let args: &[&str] = if held {
            &["queue", "list", "--held"]
        } else {
            &["queue", "list"]
        };
        let list = cli_json(config, args);
        let list = list.as_array().unwrap();
        let ids: Vec<&str> = list.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let want: Vec<&str> = expected.iter().map(|m| m.id).collect();
        assert_eq!(ids, want);
        for (shown, m) in list.iter().zip(&expected) {
            check_message(shown, m, false);
            check_message(&cli_json(config, &["queue", "show", m.id]), m, true);
        }
    }

    // meta: the key id the store recorded, exactly.
    let key = config.parent().unwrap().join("data/secret.key");
    std::fs::write(&key, "a".repeat(64)).unwrap();
    let (ok, _, err) = run_cli(
        &["--config", config.to_str().unwrap(), "account", "list"],
        "",
    );
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "mailwarden: secret key file {} (key 1e16a1dbff3181e1) does not match the store (key {KEY_ID})",
            key.display()
        )
    );
}

const POLICY_554: &str = "554 5.7.1 Account <suspect@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked";
const OPERATOR_554: &str = "554 5.7.1 Account <banned@example.com> has been blocked from sending by the administrator. Please contact support";
const AUTH_535: &str =
    "535 5.7.8 Authentication credentials invalid (with 2FA enabled, use a device password)";

/// A session on the implicit-TLS port after EHLO; the reply to AUTH PLAIN.
async fn login(server: &ServeProcess, cert: &Path, user: &str, password: &str) -> (Client, String) {
    let (mut c, greeting) = Client::implicit_tls(server.addr("Submissions"), cert).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.ehlo().await;
    let r = c.auth_plain(user, password).await.line();
    (c, r)
}

const AUTH_OK: &str = "235 2.7.0 Authentication successful";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_on_the_previous_release_store() {
    let (dir, config) = fixture();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    let cert = dir
        .path()
        .join("data")
        .join(mailwarden::tls::SELF_SIGNED_CERT);

    // The policy block: AUTH works, MAIL gets the 554; the operator's too.
    let (mut c, r) = login(&server, &cert, SUSPECT.0, SUSPECT.1).await;
    assert_eq!(r, AUTH_OK);
    assert_eq!(
        c.cmd("MAIL FROM:<suspect@example.com>").await.line(),
        POLICY_554
    );
    c.cmd("QUIT").await;
    let (mut c, r) = login(&server, &cert, BANNED.0, BANNED.1).await;
    assert_eq!(r, AUTH_OK);
    assert_eq!(
        c.cmd("MAIL FROM:<banned@example.com>").await.line(),
        OPERATOR_554
    );
    c.cmd("QUIT").await;

    // The plain account sends, over STARTTLS as the fixture's mail came.
    let (mut c, greeting) = Client::plain(server.addr("Submission"), &cert).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(PLAIN.0, PLAIN.1).await.line(), AUTH_OK);
    let body = b"From: <plain@example.com>\r\nSubject: after the upgrade\r\n\r\nStill here.\r\n";
    let r = c.send_message(PLAIN.0, &["bob@example.org"], body).await;
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT").await;

    // 2FA on: the password no longer logs in, the device password (keyed
    // with the fixture's server key) does, and may send as the alias.
    assert_eq!(login(&server, &cert, SECURE.0, SECURE.1).await.1, AUTH_535);
    let (mut c, r) = login(&server, &cert, SECURE.0, DEVICE_PASSWORD).await;
    assert_eq!(r, AUTH_OK);
    let body = b"From: <sales@example.com>\r\nSubject: alias\r\n\r\nAs the alias.\r\n";
    let r = c
        .send_message("sales@example.com", &["carol@example.org"], body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT").await;
    // Disabled stays disabled.
    assert_eq!(
        login(&server, &cert, RETIRED.0, RETIRED.1).await.1,
        AUTH_535
    );

    // The 2FA secret, sealed with the fixture's key, still opens: the
    // portal takes a code for it.
    let mut w = Web::new(server.addr("Portal"));
    let r = sign_in(&mut w, SECURE.0, SECURE.1).await;
    assert_eq!((r.status, r.location()), (303, "/signin/otp"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = mailwarden::accounts::totp::code_at(&base32_decode(TOTP_KEY), now);
    let r = otp_step(&mut w, &code).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"));

    // schedule: the fixture's queued mail is due and tried again; held
    // mail and evidence are not.
    let queued: Vec<&str> = queued().iter().map(|m| m.id).collect();
    let tried = |log: &[Value]| -> Vec<String> {
        log.iter()
            .filter(|v| v["event"] == "delivery.deferred")
            .filter_map(|v| v["message_id"].as_str().map(str::to_string))
            .collect()
    };
    server
        .wait_log("a retry of every queued message", |log| {
            let tried = tried(log);
            queued.iter().all(|id| tried.iter().any(|t| t == id))
        })
        .await;
    let log = server.log();
    for m in held() {
        assert!(
            !tried(&log).contains(&m.id.to_string()),
            "{} was tried",
            m.id
        );
    }
    // The fixture's key was the one: nothing made a new key or complained,
    // and every saved scorer state decoded (an unreadable one is warned
    // about and started afresh).
    for v in &log {
        let event = v["event"].as_str().unwrap_or_default();
        assert!(
            !event.starts_with("secrets.")
                && event != "policy.state_unreadable"
                && v["level"] != "ERROR",
            "{v}"
        );
    }
    let status = tokio::task::block_in_place(|| server.stop());
    assert!(status.success(), "{status:?}");
}
