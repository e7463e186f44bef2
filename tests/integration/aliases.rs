//! `account alias add|remove|list`, through the admin API and offline, and
//! what an alias lets an account send as.

use crate::common::client::Reply;
use crate::common::{ALICE, PASSWORD, TestServer, queued_id, run_cli, stored};

/// Runs the CLI against the test server's config, off the async runtime.
async fn cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let config = server.config_path().to_str().unwrap().to_string();
    let mut all = vec!["--config".to_string(), config];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run_cli(&args, "")
    })
    .await
    .unwrap()
}

async fn cli_ok(server: &TestServer, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(server, args).await;
    assert!(ok, "{args:?}: stdout={stdout} stderr={stderr}");
    stdout
}

async fn cli_err(server: &TestServer, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(server, args).await;
    assert!(!ok, "{args:?} should fail: stdout={stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr.trim().to_string()
}

/// MAIL FROM `sender` with the same header From, in a new session.
async fn send_as(server: &TestServer, sender: &str) -> Reply {
    let mut c = server.alice().await;
    let r = c.cmd(&format!("MAIL FROM:<{sender}>")).await;
    if r.code != 250 {
        return r;
    }
    c.cmd("RCPT TO:<bob@example.org>").await;
    let message = format!("From: Sales <{sender}>\r\nSubject: alias\r\n\r\nhi\r\n");
    c.data(message.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_through_the_admin_api_while_serving() {
    let server = TestServer::with_alice("").await;
    server.add_account("bob@example.com", PASSWORD).await;
    assert_eq!(
        cli_ok(
            &server,
            &["account", "alias", "add", ALICE, "Sales@Example.COM"]
        )
        .await,
        "alice@example.com may now send as sales@example.com\n"
    );
    assert_eq!(
        cli_ok(&server, &["account", "alias", "list", "ALICE@example.com"]).await,
        "sales@example.com\n"
    );
    let json = cli_ok(&server, &["--json", "account", "alias", "list", ALICE]).await;
    assert_eq!(json.trim(), r#"["sales@example.com"]"#);
    // The running server did it.
    assert!(
        server
            .events
            .snapshot()
            .iter()
            .any(|e| e.name() == "account.alias_added" && e.reason.as_deref() == Some("admin"))
    );

    // The alias, and its +tag forms, count as alice's own addresses.
    let id = queued_id(&send_as(&server, "sales+eu@example.com").await);
    stored(&server, &id).await;

    // No address is owned twice.
    let taken = "mailwarden: sales@example.com is already an account address or an alias";
    assert_eq!(
        cli_err(
            &server,
            &[
                "account",
                "alias",
                "add",
                "bob@example.com",
                "sales@example.com"
            ]
        )
        .await,
        taken
    );
    assert_eq!(
        cli_err(
            &server,
            &[
                "account",
                "alias",
                "add",
                "bob@example.com",
                "SALES+x@example.com"
            ]
        )
        .await,
        "mailwarden: sales+x@example.com is already an account address or an alias"
    );
    assert_eq!(
        cli_err(
            &server,
            &[
                "account",
                "alias",
                "add",
                "bob@example.com",
                "alice@example.com"
            ]
        )
        .await,
        "mailwarden: alice@example.com is already an account address or an alias"
    );
    assert_eq!(
        cli_err(
            &server,
            &["account", "alias", "add", ALICE, "bob@example.com"]
        )
        .await,
        "mailwarden: bob@example.com is already an account address or an alias"
    );
    let (ok, _, stderr) = tokio::task::spawn_blocking({
        let config = server.config_path();
        move || {
            run_cli(
                &[
                    "--config",
                    config.to_str().unwrap(),
                    "account",
                    "add",
                    "sales@example.com",
                    "--password-stdin",
                ],
                &format!("{PASSWORD}\n"),
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok);
    assert_eq!(stderr.trim(), taken);
    assert_eq!(
        cli_err(
            &server,
            &[
                "account",
                "alias",
                "add",
                "nobody@example.com",
                "x@example.com"
            ]
        )
        .await,
        "mailwarden: no account nobody@example.com"
    );

    // Removed: alice can no longer send as it.
    assert_eq!(
        cli_ok(
            &server,
            &["account", "alias", "remove", ALICE, "sales@example.com"]
        )
        .await,
        "alice@example.com no longer sends as sales@example.com\n"
    );
    assert_eq!(
        send_as(&server, "sales@example.com").await.line(),
        "553 5.7.1 Sender address <sales@example.com> not owned by authenticated user"
    );
    assert_eq!(
        cli_err(
            &server,
            &["account", "alias", "remove", ALICE, "sales@example.com"]
        )
        .await,
        "mailwarden: account alice@example.com has no alias sales@example.com"
    );
    assert_eq!(
        cli_ok(&server, &["account", "alias", "list", ALICE]).await,
        ""
    );
    // Freed: another account may take it now.
    cli_ok(
        &server,
        &[
            "account",
            "alias",
            "add",
            "bob@example.com",
            "sales@example.com",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_through_the_store_when_no_server_runs() {
    let mut server = TestServer::with_alice("").await;
    server.stop().await;
    assert_eq!(
        cli_ok(
            &server,
            &["account", "alias", "add", ALICE, "info@example.com"]
        )
        .await,
        "alice@example.com may now send as info@example.com\n"
    );
    assert_eq!(
        cli_ok(&server, &["account", "alias", "list", ALICE]).await,
        "info@example.com\n"
    );
    cli_err(
        &server,
        &["account", "alias", "add", ALICE, "info@example.com"],
    )
    .await;
    server.restart().await;
    let id = queued_id(&send_as(&server, "info@example.com").await);
    stored(&server, &id).await;
    // A header From the alias does not cover is still refused.
    let mut c = server.alice().await;
    c.envelope("info@example.com", &["bob@example.org"]).await;
    assert_eq!(
        c.data(b"From: <sales@example.com>\r\n\r\nhi\r\n")
            .await
            .line(),
        "550 5.7.1 Header From address <sales@example.com> not owned by authenticated user"
    );
}
