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
        .filter(|e| e.name == "account.created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].reason.as_deref(), Some("admin-api"));
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
