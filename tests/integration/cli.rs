//! The CLI against a running server (admin API) and a stopped one (store).

use crate::common::client::Client;
use crate::common::{PASSWORD, TestServer, run_cli};

async fn can_log_in(server: &TestServer, user: &str, password: &str) -> bool {
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    c.auth_plain(user, password).await.code == 235
}

#[tokio::test(flavor = "multi_thread")]
async fn account_add_goes_through_the_admin_api_while_serving() {
    let server = TestServer::start().await;
    let config = server.config_path();
    let config = config.to_str().unwrap();
    let cli = tokio::task::spawn_blocking({
        let config = config.to_string();
        move || {
            run_cli(
                &[
                    "--config",
                    &config,
                    "account",
                    "add",
                    "dave@example.com",
                    "--password-stdin",
                ],
                &format!("{PASSWORD}\n"),
            )
        }
    });
    let (ok, stdout, stderr) = cli.await.unwrap();
    assert!(ok, "stdout={stdout} stderr={stderr}");
    assert_eq!(stdout.trim(), "created dave@example.com");
    // The running server did the work (not a second process on its store).
    let created: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "account.created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].reason.as_deref(), Some("admin"));
    assert!(can_log_in(&server, "dave@example.com", PASSWORD).await);

    // A duplicate and a weak password are refused in one line.
    let dup = tokio::task::spawn_blocking({
        let config = config.to_string();
        move || {
            run_cli(
                &[
                    "--config",
                    &config,
                    "account",
                    "add",
                    "DAVE@example.com",
                    "--password-stdin",
                ],
                &format!("{PASSWORD}\n"),
            )
        }
    });
    let (ok, _, stderr) = dup.await.unwrap();
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "mailwarden: account dave@example.com already exists"
    );
    let weak = tokio::task::spawn_blocking({
        let config = config.to_string();
        move || {
            run_cli(
                &["--config", &config, "account", "add", "erin@example.com"],
                "short\n",
            )
        }
    });
    let (ok, _, stderr) = weak.await.unwrap();
    assert!(!ok);
    assert!(stderr.contains("at least 12 characters"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn account_add_opens_the_store_when_no_server_runs() {
    let mut server = TestServer::start().await;
    server.stop().await;
    let config = server.config_path();
    let config = config.to_str().unwrap().to_string();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "--config",
                &config,
                "account",
                "add",
                "frank@example.com",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        )
    })
    .await
    .unwrap();
    assert!(ok, "stdout={stdout} stderr={stderr}");
    server.restart().await;
    assert!(can_log_in(&server, "frank@example.com", PASSWORD).await);
    assert!(!can_log_in(&server, "frank@example.com", "not the password").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_never_creates_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailwarden.toml");
    std::fs::write(&path, crate::common::test_config_text("")).unwrap();
    let config = path.to_str().unwrap().to_string();
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "--config",
                &config,
                "account",
                "add",
                "gina@example.com",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        )
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        stderr.starts_with("mailwarden: no server answers at"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "the CLI created a data folder"
    );
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        crate::common::test_config_text("[smtp]\nmax_recipientz = 5\n"),
    )
    .unwrap();
    let (ok, _, stderr) = run_cli(&["config", "check", "--config", path.to_str().unwrap()], "");
    assert!(!ok);
    assert!(stderr.contains("max_recipientz"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    std::fs::write(&path, crate::common::test_config_text("")).unwrap();
    let (ok, stdout, stderr) =
        run_cli(&["config", "check", "--config", path.to_str().unwrap()], "");
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "configuration is valid");
}

/// Puts a held message straight into the store (held mail is never
/// delivered until released, so the queue commands have something to see).
fn put_held(store: &mailwarden::store::Store, id: u64) -> String {
    use mailwarden::spool::{Envelope, QueueEntry, QueueId, QueueState, QueueWrite, Recipient};
    let entry = QueueEntry {
        id: QueueId(id),
        envelope: Envelope {
            from: "alice@example.com".into(),
            recipients: vec![Recipient {
                address: "bob@example.org".into(),
                orcpt: None,
                notify: 0,
            }],
            account: "alice@example.com".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            received_at: 1,
            size: 40,
            mail_flags: 0,
            envid: None,
        },
        state: QueueState::Held,
        attempts: 0,
        next_attempt: 0,
        last_error: None,
        rcpts: Vec::new(),
    };
    let body = b"Subject: held\r\nFrom: <alice@example.com>\r\n\r\nheld body\r\n".to_vec();
    store
        .queue_apply(&[QueueWrite::Insert { entry, body }])
        .unwrap();
    QueueId(id).to_string()
}

async fn cli(config: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut full = vec!["--config".to_string(), config.to_string()];
    full.extend(args.iter().map(|a| a.to_string()));
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        run_cli(&args, &stdin)
    })
    .await
    .unwrap()
}

async fn ok(config: &str, args: &[&str], stdin: &str) -> String {
    let (ok, out, err) = cli(config, args, stdin).await;
    assert!(ok, "mailwarden {args:?} failed: {err}");
    out.trim().to_string()
}

/// Every account and queue command; the same script whether or not a
/// server runs.
async fn account_and_queue_commands(config: &str, first_held: &str, second_held: &str) {
    let new_password = "another long passphrase";
    assert_eq!(
        ok(
            config,
            &["account", "add", "bob@example.com", "--password-stdin"],
            PASSWORD
        )
        .await,
        "created bob@example.com"
    );
    assert!(
        ok(config, &["account", "list"], "")
            .await
            .lines()
            .any(|l| l == "bob@example.com")
    );
    let shown: serde_json::Value = serde_json::from_str(
        &ok(
            config,
            &["--json", "account", "show", "BOB@example.com"],
            "",
        )
        .await,
    )
    .unwrap();
    assert_eq!(shown["address"], "bob@example.com");
    assert_eq!(shown["disabled"], false);
    assert_eq!(
        ok(
            config,
            &["account", "passwd", "bob@example.com", "--password-stdin"],
            new_password
        )
        .await,
        "password changed for bob@example.com"
    );
    assert_eq!(
        ok(config, &["account", "disable", "bob@example.com"], "").await,
        "disabled bob@example.com"
    );
    assert!(
        ok(config, &["account", "list"], "")
            .await
            .contains("bob@example.com (disabled)")
    );
    assert_eq!(
        ok(config, &["account", "enable", "bob@example.com"], "").await,
        "enabled bob@example.com"
    );

    let listed = ok(config, &["queue", "list", "--held"], "").await;
    assert!(
        listed.contains(first_held) && listed.contains(second_held),
        "{listed}"
    );
    // Only the password-change notice may be waiting, not the held mail.
    let queued = ok(config, &["queue", "list"], "").await;
    assert!(
        !queued.contains(first_held) && !queued.contains(second_held),
        "{queued}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(config, &["--json", "queue", "show", first_held], "").await)
            .unwrap();
    assert_eq!(shown["state"], "held");
    assert_eq!(shown["recipients"][0], "bob@example.org");
    assert!(shown["headers"].as_str().unwrap().contains("Subject: held"));
    assert_eq!(
        ok(config, &["queue", "retry", first_held], "").await,
        format!("{first_held} will be retried now")
    );
    assert_eq!(
        ok(config, &["queue", "delete", second_held], "").await,
        format!("deleted {second_held}")
    );
    assert_eq!(
        ok(config, &["queue", "release", first_held], "").await,
        format!("released {first_held}")
    );

    // Errors: one line, non-zero exit.
    for (args, expected) in [
        (
            vec!["queue", "show", "0000000000000001"],
            "mailwarden: no message 0000000000000001 in the queue",
        ),
        (
            vec!["queue", "delete", "xyz"],
            "mailwarden: \"xyz\" is not a queue id (16 hex digits)",
        ),
        (
            vec!["account", "show", "nobody@example.com"],
            "mailwarden: no account nobody@example.com",
        ),
        (
            vec!["account", "delete", "not an address"],
            "mailwarden: invalid address: the address contains spaces or control characters",
        ),
    ] {
        let (ok, _, err) = cli(config, &args, "").await;
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim(), expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_works_against_a_running_server() {
    let server = TestServer::start().await;
    let config = server.config_path().to_str().unwrap().to_string();
    let first = put_held(&server.running().store, 0xA1);
    let second = put_held(&server.running().store, 0xA2);
    account_and_queue_commands(&config, &first, &second).await;
    assert!(can_log_in(&server, "bob@example.com", "another long passphrase").await);
    // The released message is delivered by the running server.
    server.wait_outbox_id(&first).await;
    assert_eq!(
        ok(&config, &["account", "delete", "bob@example.com"], "").await,
        "deleted bob@example.com"
    );
    assert!(!can_log_in(&server, "bob@example.com", "another long passphrase").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_works_with_the_server_stopped() {
    let mut server = TestServer::start().await;
    server.stop().await;
    let config = server.config_path().to_str().unwrap().to_string();
    let (first, second) = {
        let store = mailwarden::store::Store::open_existing(server.data_dir()).unwrap();
        (put_held(&store, 0xB1), put_held(&store, 0xB2))
    };
    account_and_queue_commands(&config, &first, &second).await;
    server.restart().await;
    assert!(can_log_in(&server, "bob@example.com", "another long passphrase").await);
    server.wait_outbox_id(&first).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_serving_restores_to_a_working_server() {
    let mut server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let held = put_held(&server.running().store, 0xC1);
    let config = server.config_path().to_str().unwrap().to_string();
    let backup = server.dir.path().join("backup.redb");
    let out = ok(&config, &["backup", "--out", backup.to_str().unwrap()], "").await;
    assert_eq!(
        out,
        format!(
            "backup written to {} (1 accounts, 1 queued messages)",
            backup.display()
        )
    );

    // Restore is refused while the server runs.
    let (restored, _, err) = cli(&config, &["restore", backup.to_str().unwrap()], "").await;
    assert!(!restored);
    assert!(err.contains("stop it before restoring"), "{err}");

    // Lose the store, restore the backup, start again.
    server.stop().await;
    std::fs::remove_file(mailwarden::store::Store::path_in(server.data_dir())).unwrap();
    let out = ok(&config, &["restore", backup.to_str().unwrap()], "").await;
    assert!(out.starts_with("restored"), "{out}");
    server.restart().await;
    assert!(can_log_in(&server, "alice@example.com", PASSWORD).await);
    let (ok_list, listed, _) = cli(&config, &["queue", "list", "--held"], "").await;
    assert!(ok_list && listed.contains(&held), "{listed}");

    // A file that is not a backup is refused.
    let junk = server.dir.path().join("junk");
    std::fs::write(&junk, b"not a database").unwrap();
    server.stop().await;
    let (restored, _, err) = cli(&config, &["restore", junk.to_str().unwrap()], "").await;
    assert!(!restored);
    assert!(err.contains("is not a mailwarden backup"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_to_start_with_a_missing_or_wrong_secret_key() {
    let mut server = TestServer::start().await;
    server.stop().await;
    let key = server.config.secret_key_file();
    let original = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let events = std::sync::Arc::new(mailwarden::events::RecordingEvents::default());
    let err = mailwarden::server::start(server.config.clone(), events.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("is missing"), "{err:#}");
    std::fs::write(&key, "00".repeat(32)).unwrap();
    let err = mailwarden::server::start(server.config.clone(), events.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("does not match"), "{err:#}");
    std::fs::write(&key, original).unwrap();
    server.restart().await;
}

async fn admin_post(addr: std::net::SocketAddr, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"op":"account_list"}"#;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/ops HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_admin_api_wants_the_token_and_no_origin() {
    let server = TestServer::start().await;
    let addr = server.running().admin;
    let token = std::fs::read_to_string(server.data_dir().join("admin.token")).unwrap();
    let token = token.trim();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data_dir().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        admin_post(addr, &format!("Authorization: Bearer {token}\r\n")).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(admin_post(addr, "").await, "HTTP/1.1 401 Unauthorized");
    assert_eq!(
        admin_post(addr, "Authorization: Bearer wrong\r\n").await,
        "HTTP/1.1 401 Unauthorized"
    );
    let wrong_same_length = "0".repeat(token.len());
    assert_eq!(
        admin_post(
            addr,
            &format!("Authorization: Bearer {wrong_same_length}\r\n")
        )
        .await,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        admin_post(
            addr,
            &format!("Authorization: Bearer {token}\r\nOrigin: http://evil.example\r\n")
        )
        .await,
        "HTTP/1.1 403 Forbidden"
    );
}

#[tokio::test]
async fn metrics_listener_serves_metrics_and_health_only() {
    let server = TestServer::start().await;
    let addr = server.running().metrics;
    let (status, body) = crate::common::http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("mailwarden_messages_accepted_total"),
        "{body}"
    );
    assert!(body.contains("mailwarden_spool_fsyncs_total"), "{body}");
    assert_eq!(
        crate::common::http_get(addr, "/healthz").await,
        (200, "ok\n".to_string())
    );
    assert_eq!(crate::common::http_get(addr, "/v1/ops").await.0, 404);
}

/// The security commands; the same script with or without a server.
async fn security_commands(config: &str) {
    let json =
        |out: String| -> serde_json::Value { serde_json::from_str(&out).expect("JSON output") };
    ok(
        config,
        &["account", "add", "carol@example.com", "--password-stdin"],
        PASSWORD,
    )
    .await;
    let enrol = json(
        ok(
            config,
            &["--json", "account", "totp", "enable", "carol@example.com"],
            "",
        )
        .await,
    );
    let url = enrol["otpauth_url"].as_str().unwrap();
    assert!(
        url.starts_with("otpauth://totp/mailwarden:carol%40example.com?secret="),
        "{url}"
    );
    assert!(url.contains("issuer=mailwarden"), "{url}");
    // As authenticator libraries (pyotp) take it: base32, no spaces.
    let secret = enrol["secret"].as_str().unwrap().to_string();
    assert!(
        !secret.is_empty() && secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "{secret}"
    );
    let grouped: String = enrol["secret_display"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(grouped, secret);
    let code = mailwarden::accounts::totp::code_at(
        &crate::common::base32_decode(&secret),
        mailwarden::clock::Clock::unix(&mailwarden::clock::SystemClock),
    );
    assert_eq!(
        ok(
            config,
            &["account", "totp", "verify", "carol@example.com", &code],
            ""
        )
        .await,
        "2FA enabled for carol@example.com"
    );
    let (reused, _, err) = cli(
        config,
        &["account", "totp", "verify", "carol@example.com", &code],
        "",
    )
    .await;
    assert!(!reused);
    assert_eq!(err.trim(), "mailwarden: 2FA enrolment was not started");

    let created = ok(
        config,
        &[
            "account",
            "device-password",
            "add",
            "carol@example.com",
            "laptop",
        ],
        "",
    )
    .await;
    let password = created.lines().next().unwrap();
    assert!(
        mailwarden::accounts::device::normalize(password).is_some(),
        "{created}"
    );
    assert!(created.contains("shown only this once"));
    let (dup, _, err) = cli(
        config,
        &[
            "account",
            "device-password",
            "add",
            "carol@example.com",
            "laptop",
        ],
        "",
    )
    .await;
    assert!(!dup && err.contains("already exists"), "{err}");
    assert!(
        ok(
            config,
            &["account", "device-password", "list", "carol@example.com"],
            ""
        )
        .await
        .starts_with("laptop  created ")
    );

    let blocked = ok(
        config,
        &[
            "account",
            "block",
            "carol@example.com",
            "--reason",
            "phishing reported",
            "--self-service",
            "--abuse-network",
            "203.0.113.7/24",
        ],
        "",
    )
    .await;
    assert_eq!(
        blocked,
        "blocked carol@example.com (policy: phishing reported)"
    );
    let shown = json(
        ok(
            config,
            &["--json", "account", "show", "carol@example.com"],
            "",
        )
        .await,
    );
    assert_eq!(shown["totp"], "on");
    assert_eq!(shown["block"]["kind"], "policy");
    assert_eq!(shown["block"]["reason"], "phishing reported");
    assert_eq!(shown["block"]["abuse_networks"][0], "203.0.113.0/24");
    assert!(shown["block"]["seq"].as_u64().unwrap() > 0);
    assert_eq!(shown["device_passwords"][0]["name"], "laptop");
    assert_eq!(shown["device_passwords"][0]["suspended"], true);
    assert!(
        ok(
            config,
            &["account", "device-password", "list", "carol@example.com"],
            ""
        )
        .await
        .ends_with("(suspended)")
    );
    // For a person: one fact a line, dates as dates, no JSON.
    let text = ok(config, &["account", "show", "carol@example.com"], "").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "carol@example.com", "{text}");
    assert!(
        lines.contains(&"  2FA        on")
            && lines
                .iter()
                .any(|l| l.starts_with("  block      policy: phishing reported (since 20"))
            && lines.contains(&"  networks   203.0.113.0/24")
            && lines
                .iter()
                .any(|l| l.starts_with("  device     laptop (created 20")
                    && l.ends_with(", suspended)")),
        "{text}"
    );
    assert!(!text.contains('{') && !text.contains('"'), "{text}");
    let (bad, _, err) = cli(
        config,
        &[
            "account",
            "block",
            "carol@example.com",
            "--reason",
            "x",
            "--abuse-network",
            "nonsense",
        ],
        "",
    )
    .await;
    assert!(!bad && err.contains("is not a network"), "{err}");

    assert_eq!(
        ok(config, &["account", "unblock", "carol@example.com"], "").await,
        "unblocked carol@example.com"
    );
    let shown = json(
        ok(
            config,
            &["--json", "account", "show", "carol@example.com"],
            "",
        )
        .await,
    );
    assert!(shown["block"].is_null());
    assert_eq!(
        shown["device_passwords"].as_array().unwrap().len(),
        0,
        "deleted on unblock"
    );
    let changes: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["change"].as_str().unwrap())
        .collect();
    assert_eq!(
        changes,
        [
            "created",
            "totp_enrolment_started",
            "totp_enabled",
            "device_password_created",
            "blocked_policy",
            "unblocked"
        ]
    );

    ok(
        config,
        &[
            "account",
            "device-password",
            "add",
            "carol@example.com",
            "phone",
        ],
        "",
    )
    .await;
    assert_eq!(
        ok(
            config,
            &[
                "account",
                "device-password",
                "revoke",
                "carol@example.com",
                "phone"
            ],
            ""
        )
        .await,
        "revoked \"phone\" for carol@example.com"
    );
    assert_eq!(
        ok(
            config,
            &["account", "totp", "disable", "carol@example.com"],
            ""
        )
        .await,
        "2FA disabled for carol@example.com; device passwords revoked"
    );
    let reset = ok(
        config,
        &["account", "reset", "carol@example.com", "--password-stdin"],
        "a recovery passphrase",
    )
    .await;
    assert!(reset.starts_with("reset carol@example.com"), "{reset}");
    let shown = json(
        ok(
            config,
            &["--json", "account", "show", "carol@example.com"],
            "",
        )
        .await,
    );
    assert_eq!(shown["block"]["kind"], "operator");
    assert_eq!(shown["totp"], "off");
}

#[tokio::test(flavor = "multi_thread")]
async fn security_commands_work_against_a_running_server() {
    let server = TestServer::start().await;
    security_commands(server.config_path().to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn security_commands_work_with_the_server_stopped_and_blocks_hold_mail() {
    let mut server = TestServer::start().await;
    server.stop().await;
    let config = server.config_path().to_str().unwrap().to_string();
    security_commands(&config).await;

    // Queued mail of a blocked account is held, and released by the unblock.
    ok(
        &config,
        &["account", "add", "dan@example.com", "--password-stdin"],
        PASSWORD,
    )
    .await;
    let id = {
        use mailwarden::spool::{QueueState, QueueWrite};
        let store = mailwarden::store::Store::open_existing(server.data_dir()).unwrap();
        let id = put_held(&store, 0xD1);
        let mut entry = store.queue_get(id.parse().unwrap()).unwrap().unwrap();
        entry.envelope.account = "dan@example.com".into();
        entry.state = QueueState::Queued;
        store.queue_apply(&[QueueWrite::Update(entry)]).unwrap();
        id
    };
    ok(
        &config,
        &["account", "block", "dan@example.com", "--reason", "spam"],
        "",
    )
    .await;
    assert!(
        ok(&config, &["queue", "list", "--held"], "")
            .await
            .contains(&id)
    );
    ok(&config, &["account", "unblock", "dan@example.com"], "").await;
    assert!(
        !ok(&config, &["queue", "list", "--held"], "")
            .await
            .contains(&id)
    );
    server.restart().await;
    server.wait_outbox_id(&id).await;
}

/// Every sample line of Prometheus text: (name with labels, value).
fn prometheus_samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l:?}"));
            assert!(
                name.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_'),
                "bad metric name: {l:?}"
            );
            (name.to_string(), value)
        })
        .collect()
}

fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move() {
    let server = TestServer::start().await;
    server.add_account("alice@example.com", PASSWORD).await;
    let addr = server.running().metrics;
    let before = prometheus_samples(&crate::common::http_get(addr, "/metrics").await.1);
    assert_eq!(sample(&before, "mailwarden_messages_accepted_total"), 0.0);
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    c.ehlo().await;
    c.auth_plain("alice@example.com", "wrong password here")
        .await;
    c.auth_plain("alice@example.com", PASSWORD).await;
    let r = c
        .send_message(
            "alice@example.com",
            &["bob@example.org"],
            b"From: <alice@example.com>\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    c.cmd("QUIT").await;
    server.wait_event("delivery.success").await;
    server.wait_event("session.end").await;
    let after = prometheus_samples(&crate::common::http_get(addr, "/metrics").await.1);
    assert_eq!(sample(&after, "mailwarden_messages_accepted_total"), 1.0);
    assert_eq!(sample(&after, "mailwarden_sessions_total"), 1.0);
    assert_eq!(sample(&after, "mailwarden_connections_current"), 0.0);
    assert_eq!(
        sample(
            &after,
            "mailwarden_auth_total{mechanism=\"PLAIN\",outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "mailwarden_auth_total{mechanism=\"PLAIN\",outcome=\"failure\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "mailwarden_deliveries_total{outcome=\"success\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "mailwarden_data_to_queued_seconds_count"),
        1.0
    );
    assert_eq!(
        sample(&after, "mailwarden_session_duration_seconds_count"),
        1.0
    );
    assert!(sample(&after, "mailwarden_spool_fsyncs_total") >= 2.0);
    assert!(
        sample(
            &after,
            "mailwarden_policy_decisions_total{decision=\"accept\",observed=\"false\"}"
        ) >= 1.0
    );
    // No account names in labels.
    assert!(!after.iter().any(|(n, _)| n.contains("alice")));
    // Latency histograms in seconds, with buckets below a millisecond.
    for family in [
        "mailwarden_message_accept_duration_seconds",
        "mailwarden_smtp_session_duration_seconds",
    ] {
        assert_eq!(sample(&after, &format!("{family}_count")), 1.0, "{family}");
        let sum = sample(&after, &format!("{family}_sum"));
        assert!(sum > 0.0 && sum < 10.0, "{family}_sum {sum}");
        assert!(
            after
                .iter()
                .any(|(n, _)| n == &format!("{family}_bucket{{le=\"0.0001\"}}")),
            "{family} has no sub-millisecond bucket"
        );
    }
    // Every family says what it is.
    let text = crate::common::http_get(addr, "/metrics").await.1;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no # HELP for {family}"
        );
    }
}

#[test]
fn start_up_errors_are_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let serve = |text: String| {
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let base = crate::common::test_config_text("");
    let (ok, err) = serve(base.replace(
        "submission = [\"127.0.0.1:0\"]",
        &format!("submission = [\"127.0.0.1:{port}\"]"),
    ));
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );

    let (ok, err) = serve(base.replace(
        "[tls]\nself_signed = true\n",
        "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n",
    ));
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot read certificate"), "{err}");

    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    mailwarden::tls::write_self_signed(
        &dir.path().join("good.pem"),
        &dir.path().join("unused.key"),
        "localhost",
    )
    .unwrap();
    let (ok, err) = serve(base.replace(
        "[tls]\nself_signed = true\n",
        "[tls]\ncert = \"good.pem\"\nkey = \"bad.key\"\n",
    ));
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("private key"), "{err}");

    // A store that cannot be opened: the message names the file.
    let store = dir.path().join("unopenable").join("mailwarden.redb");
    std::fs::create_dir_all(&store).unwrap();
    let (ok, err) = serve(base.replace("data_dir = \"data\"", "data_dir = \"unopenable\""));
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot open {}", store.display())),
        "{err}"
    );
    drop(busy);
}

#[test]
fn config_errors_name_the_key_and_line_and_check_opens_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        run_cli(&["config", "check", "--config", path.to_str().unwrap()], "")
    };
    let text = crate::common::test_config_text("[smtp]\nmax_connections = \"100\"\n");
    let line = text
        .lines()
        .position(|l| l.starts_with("max_connections"))
        .unwrap()
        + 1;
    let (ok, _, stderr) = check(&text);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "line {line}, `smtp.max_connections`: invalid type: string \"100\", expected usize"
        )),
        "{stderr}"
    );

    // A certificate that is missing, or a key that does not match it.
    let pem = |name: &str| dir.path().join(name).display().to_string();
    let with_cert = |cert: &str, key: &str| {
        crate::common::test_config_text("").replace(
            "self_signed = true",
            &format!("cert = \"{cert}\"\nkey = \"{key}\""),
        )
    };
    let (ok, _, stderr) = check(&with_cert(&pem("none.pem"), &pem("none.key")));
    assert!(!ok);
    assert!(stderr.contains("cannot read certificate"), "{stderr}");
    assert!(stderr.contains("none.pem"), "{stderr}");
    for out in ["a", "b"] {
        let (ok, _, err) = run_cli(&["cert", "generate", "--out", &pem(out)], "");
        assert!(ok, "{err}");
    }
    let (ok, _, stderr) = check(&with_cert(&pem("a/fullchain.pem"), &pem("b/privkey.pem")));
    assert!(!ok);
    assert!(stderr.contains("do not form a usable pair"), "{stderr}");
    let (ok, stdout, stderr) = check(&with_cert(&pem("a/fullchain.pem"), &pem("a/privkey.pem")));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "configuration is valid");
}

/// Run as another user (root can read anything): an unreadable data folder
/// is named, not reported as a missing store or a bare "Permission denied".
#[test]
fn an_unreadable_data_folder_is_named() {
    let bin = env!("CARGO_BIN_EXE_mailwarden");
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", bin])
            .args(args)
            .output()
    };
    let usable = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        && as_nobody(&["--version"]).is_ok_and(|o| o.status.success());
    if !usable {
        println!("skipped: needs root, runuser and a binary the nobody user can run");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mw-perm")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("mailwarden.redb"), b"").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, crate::common::test_config_text("")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = as_nobody(&["--config", config.to_str().unwrap(), "account", "list"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "cannot open {}",
            data.join("mailwarden.redb").display()
        )) && err.contains("Permission denied"),
        "{err}"
    );
}
