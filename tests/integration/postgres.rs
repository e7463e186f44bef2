//! Several nodes on one PostgreSQL database (`[store] backend =
//! "postgres"`): two real `mailwarden serve` processes, each with its own
//! data folder and spool, sharing accounts, blocks and the scorer's state.
//! Each test starts a private PostgreSQL 15 (`common::postgres`) and skips
//! with a printed reason when it is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::balancer::Balancer;
use crate::common::client::Client;
use crate::common::postgres::Postgres;
use crate::common::serve::{ServeProcess, serve_refused};
use crate::common::{ALICE, PASSWORD, output_with_stdin, test_config_text, test_config_text_mode};

/// The lockout's reply (not any 454: an unreadable store is one too).
const LOCKED_OUT: &str = "454 4.7.0 Too many authentication failures";
/// Where test clients connect from when they skip the balancer.
const DIRECT: &str = "127.0.0.5";
const BODY: &str = "Cheap watches, best prices, click now.";

/// One node: its config file, data folder and running server.
struct Node {
    config: PathBuf,
    server: ServeProcess,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.config.parent().unwrap().join("data")
    }

    /// The configured certificate (`tls.cert`), or the self-signed one.
    fn cert(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("cert = \""))
            .map(|rest| PathBuf::from(rest.trim_end_matches('"')))
            .unwrap_or_else(|| self.data().join(mailwarden::tls::SELF_SIGNED_CERT))
    }

    /// The CLI against this node (through its admin API while it runs).
    fn cli(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let out = output_with_stdin(
            Command::new(env!("CARGO_BIN_EXE_mailwarden"))
                .args(["--config", self.config.to_str().unwrap()])
                .args(args),
            stdin,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// A direct connection (not through a balancer: from an address
    /// that may not send PROXY).
    async fn connect(&self) -> (Client, crate::common::client::Reply) {
        Client::implicit_tls_from(
            self.server.submissions(),
            Some(DIRECT.parse().unwrap()),
            &self.cert(),
        )
        .await
    }

    async fn session(&self, user: &str) -> Client {
        let (mut c, _) = self.connect().await;
        c.ehlo().await;
        assert_eq!(c.auth_plain(user, PASSWORD).await.code, 235, "AUTH {user}");
        c
    }
}

/// The config text of a node on `url`; `text` is the rest of it.
fn write_config(dir: &Path, name: &str, text: &str, url: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let config = folder.join("mailwarden.toml");
    std::fs::write(
        &config,
        format!("{text}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    config
}

/// The first node on an empty database (it initialises it).
fn first_node(dir: &Path, name: &str, text: &str, url: &str) -> Node {
    let config = write_config(dir, name, text, url);
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    Node { config, server }
}

/// Another node joining: the first node's server key in its new data
/// folder (docs/operator-guide.md, "Running several nodes").
fn joining_node(dir: &Path, name: &str, text: &str, url: &str, first: &Node) -> Node {
    let config = write_config(dir, name, text, url);
    let data = config.parent().unwrap().join("data");
    mailwarden::files::create_private_dir(&data).unwrap();
    let key = std::fs::read(first.data().join("secret.key")).unwrap();
    mailwarden::files::write_private(&data.join("secret.key"), &key).unwrap();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    Node { config, server }
}

fn add_account(node: &Node, address: &str) {
    let (ok, out) = node.cli(&["account", "add", address, "--password-stdin"], PASSWORD);
    assert!(ok, "{out}");
}

fn rcpts(tag: &str, i: usize) -> Vec<String> {
    (0..5)
        .map(|k| format!("{tag}{i}-{k}@victims.example"))
        .collect()
}

/// Sends the same bulk mail over `sessions` in turn (one message each)
/// until every one is refused; how many were accepted.
async fn spray(sessions: &mut [Client], from: &str, tag: &str) -> usize {
    let mut accepted = 0;
    let mut refused_in_a_row = 0;
    for i in 0..40 {
        let c = &mut sessions[i % sessions.len()];
        let reply = c.try_send(from, &rcpts(tag, i), "offer", BODY).await;
        if reply.starts_with("250") {
            accepted += 1;
            refused_in_a_row = 0;
        } else {
            assert!(reply.starts_with("554"), "{reply}");
            refused_in_a_row += 1;
            if refused_in_a_row >= sessions.len() {
                return accepted;
            }
        }
    }
    panic!("{from}: the spray was never blocked ({accepted} accepted)");
}

/// Waits up to `limit` for `check`.
async fn within(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_over_two_nodes_is_blocked_as_on_one_and_an_unblock_on_a_holds_on_b() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    let (text, cert) = behind_balancer(dir.path());
    let a = first_node(dir.path(), "a", &text, &url);
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    const BOB: &str = "bob@example.com";
    add_account(&a, ALICE);
    add_account(&a, BOB);
    // Both owners send from a network the operator marked as theirs; the
    // spray comes from another (the scorer blocks on evidence of a
    // different sender, docs/policy.md).
    for who in [ALICE, BOB] {
        let (ok, out) = a.cli(&["account", "trust", who, "192.0.2.0/24"], "");
        assert!(ok, "{out}");
    }
    let balancer = Balancer::start(vec![a.server.submissions(), b.server.submissions()]).await;

    // The baseline: Bob's spray on node A alone.
    let mut one = vec![a.session(BOB).await];
    let on_one = spray(&mut one, BOB, "bob").await;
    // Alice's, through the balancer: one session on A, one on B, used in
    // turn (an account created on A logs in on B).
    let mut two = Vec::new();
    for _ in 0..2 {
        let (mut c, _) = Client::implicit_tls(balancer.addr, &cert).await;
        c.ehlo().await;
        assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
        two.push(c);
    }
    let on_two = spray(&mut two, ALICE, "alice").await;
    assert!(on_one >= 1, "the baseline accepted nothing");
    assert!(
        on_two <= on_one,
        "{on_two} messages got out over two nodes, {on_one} on one"
    );
    // Both nodes decided (the balancer alternated), under the client's
    // address (PROXY v2).
    for node in [&a, &b] {
        node.server
            .wait_log("a decision for Alice", |log| {
                log.iter().any(|l| {
                    l["event"] == "policy.decision"
                        && l["account"] == ALICE
                        && l["ip"] == "127.0.0.1"
                })
            })
            .await;
    }
    // Blocked on both, in new sessions too.
    for node in [&a, &b] {
        let mut c = node.session(ALICE).await;
        let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
        assert_eq!(r.code, 554, "{r:?}");
    }

    // An unblock through node A's CLI: node B takes the next MAIL.
    let (ok, out) = a.cli(&["account", "unblock", ALICE], "");
    assert!(ok, "{out}");
    let mut c = b.session(ALICE).await;
    let took = within(
        Duration::from_secs(2),
        "MAIL on B after the unblock on A",
        async || {
            let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
            if r.code == 250 {
                return true;
            }
            c.cmd("RSET").await;
            false
        },
    )
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    c.cmd("RSET").await;
    let reply = c
        .try_send(ALICE, &["friend@example.org".to_string()], "hi", "hello")
        .await;
    assert!(reply.starts_with("250"), "{reply}");

    // A portal session on B...
    let mut web = crate::common::web::Web::new(b.server.addr("Portal"));
    let r = crate::common::web::sign_in(&mut web, ALICE, PASSWORD).await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(web.get("/my-account").await.status, 200);
    // ...and AUTH with the old password on B end with a password change on A.
    let new_password = "a different long passphrase";
    let (ok, out) = a.cli(
        &["account", "passwd", ALICE, "--password-stdin"],
        new_password,
    );
    assert!(ok, "{out}");
    within(
        Duration::from_secs(1),
        "old password refused on B",
        async || {
            let (mut c, _) = b.connect().await;
            c.ehlo().await;
            c.auth_plain(ALICE, PASSWORD).await.code == 535
        },
    )
    .await;
    let (mut c, _) = b.connect().await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, new_password).await.code, 235);
    let r = web.get("/my-account").await;
    assert_eq!(r.status, 303, "the portal session on B survived: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_on_b_is_held_when_a_blocks_the_account_and_released_when_a_lifts_it() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    // A relay nobody listens on, retried in an hour: mail stays queued.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = test_config_text_mode(
        "relay",
        &format!(
            "retry_schedule = [\"1h\"]\n[delivery.relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = \"2s\"\n"
        ),
    );
    let a = first_node(dir.path(), "a", &text, &url);
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    add_account(&a, ALICE);
    let mut c = b.session(ALICE).await;
    let reply = c
        .try_send(ALICE, &["friend@example.org".to_string()], "hi", "hello")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let held = async || {
        let (ok, out) = b.cli(&["--json", "queue", "list", "--held"], "");
        assert!(ok, "{out}");
        out.contains(ALICE)
    };
    assert!(!held().await, "held before any block");

    let (ok, out) = a.cli(&["account", "block", ALICE, "--reason", "abuse report"], "");
    assert!(ok, "{out}");
    let took = within(Duration::from_secs(3), "B holds Alice's mail", held).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let (ok, out) = a.cli(&["account", "unblock", ALICE], "");
    assert!(ok, "{out}");
    within(
        Duration::from_secs(3),
        "B releases Alice's mail",
        async || !held().await,
    )
    .await;

    // B's backup is B's queue; it says where the accounts are.
    let backup = dir.path().join("b.redb");
    let (ok, out) = b.cli(&["backup", "--out", backup.to_str().unwrap()], "");
    assert!(ok, "{out}");
    assert!(out.contains("(1 queued messages)"), "{out}");
    assert!(out.contains("pg_dump"), "{out}");
    assert!(std::fs::metadata(&backup).unwrap().len() > 0);
}

/// One client sending one message after another through `node` until
/// `stop`: every reply, in order.
async fn load(
    addr: std::net::SocketAddr,
    cert: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(Instant, String)> {
    let mut replies = Vec::new();
    let mut c: Option<Client> = None;
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if c.is_none() {
            let (mut s, _) = Client::implicit_tls(addr, &cert).await;
            s.ehlo().await;
            let r = s.auth_plain(ALICE, PASSWORD).await;
            if r.code != 235 {
                replies.push((Instant::now(), r.line()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            c = Some(s);
        }
        let s = c.as_mut().unwrap();
        i += 1;
        let reply = s
            .try_send(
                ALICE,
                &["friend@example.org".to_string()],
                &format!("m{i}"),
                "hello",
            )
            .await;
        if !reply.starts_with("250") {
            s.cmd("RSET").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replies.push((Instant::now(), reply));
    }
    replies
}

fn outbox_files(node: &Node) -> usize {
    std::fs::read_dir(node.data().join("outbox"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_gives_4xx_loses_nothing_acknowledged_and_recovers() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_text(crate::common::BULK_POLICY);
    let a = first_node(dir.path(), "a", &text, &url);
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    add_account(&a, ALICE);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for node in [&a, &b] {
        tasks.push(tokio::spawn(load(
            node.server.submissions(),
            node.cert(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down_at = Instant::now();
    tokio::task::block_in_place(|| pg.stop());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up_at = Instant::now();
    tokio::task::block_in_place(|| pg.restart());
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }

    let mut acknowledged = 0;
    for per_node in &replies {
        let during: Vec<_> = per_node
            .iter()
            .filter(|(t, _)| *t > down_at + Duration::from_millis(200) && *t < up_at)
            .collect();
        assert!(!during.is_empty(), "no attempt during the outage");
        for (_, r) in &during {
            assert!(
                r.starts_with("250") || r.starts_with('4'),
                "a permanent refusal during the outage: {r}"
            );
        }
        assert!(
            during
                .iter()
                .any(|(_, r)| r.starts_with("451 4.3.0") || r.starts_with("454 4.7.0")),
            "never refused while PostgreSQL was down: {during:?}"
        );
        // Back within 5 s of the restart.
        let back = per_node
            .iter()
            .find(|(t, r)| *t > up_at && r.starts_with("250"))
            .map(|(t, _)| *t - up_at)
            .expect("never accepted again");
        assert!(back < Duration::from_secs(5), "back after {back:?}");
        acknowledged += per_node
            .iter()
            .filter(|(_, r)| r.starts_with("250"))
            .count();
    }
    // Every 250 is delivered (into each node's outbox).
    within(
        Duration::from_secs(10),
        "every acknowledged message delivered",
        async || outbox_files(&a) + outbox_files(&b) >= acknowledged,
    )
    .await;
    assert_eq!(outbox_files(&a) + outbox_files(&b), acknowledged);
    a.server
        .wait_log("store.shared_down", |log| {
            log.iter().any(|l| l["event"] == "store.shared_down")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_an_embedded_install_and_its_accounts_log_in_on_the_postgres_nodes() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    const BOB: &str = "bob@example.com";
    // An embedded (redb) install with two accounts, an alias, a block and
    // a scorer state.
    let folder = dir.path().join("a");
    std::fs::create_dir_all(&folder).unwrap();
    let config = folder.join("mailwarden.toml");
    let text = test_config_text("");
    std::fs::write(&config, &text).unwrap();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    let old = Node { config, server };
    add_account(&old, ALICE);
    add_account(&old, BOB);
    let (ok, out) = old.cli(&["account", "alias", "add", ALICE, "al@example.com"], "");
    assert!(ok, "{out}");
    let (ok, out) = old.cli(&["account", "block", BOB, "--reason", "abuse report"], "");
    assert!(ok, "{out}");
    let mut c = old.session(ALICE).await;
    let reply = c
        .try_send(ALICE, &["friend@example.org".to_string()], "hi", "hello")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    drop(c);
    let Node { config, server } = old;
    assert!(server.stop().success());

    // Copied twice: the same database, the same counts.
    let copy = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--json",
                "store",
                "copy",
                "--to",
                &url,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = copy(&config);
    assert_eq!(first["accounts"], 2, "{first}");
    assert_eq!(first["aliases"], 1, "{first}");
    assert!(first["scorer_states"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(copy(&config), first);

    // The same install on the database, and a second node beside it.
    std::fs::write(
        &config,
        format!("{text}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    let a = Node { config, server };
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    for node in [&a, &b] {
        let mut c = node.session(ALICE).await;
        let reply = c
            .try_send(ALICE, &["friend@example.org".to_string()], "hi", "hello")
            .await;
        assert!(reply.starts_with("250"), "{reply}");
        let mut c = node.session(BOB).await;
        let r = c.cmd(&format!("MAIL FROM:<{BOB}>")).await;
        assert_eq!(r.code, 554, "Bob's block came along: {r:?}");
    }
    let (ok, out) = b.cli(&["--json", "account", "show", ALICE], "");
    assert!(ok, "{out}");
    assert!(out.contains("al@example.com"), "{out}");
}

#[test]
fn store_migrate_brings_an_empty_database_to_the_latest_schema() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "a", &test_config_text(""), &url);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--json",
                "store",
                "migrate",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(first["from"], 0);
    assert!(first["to"].as_i64().unwrap() >= 1);
    let again = run();
    assert_eq!(again["from"], first["to"]);
    assert_eq!(again["to"], first["to"]);
}

/// Node config text for behind the balancer: PROXY from loopback, and one
/// certificate for both nodes (clients cannot tell which node answers).
fn behind_balancer(dir: &Path) -> (String, PathBuf) {
    let cert = dir.join("fullchain.pem");
    let key = dir.join("privkey.pem");
    mailwarden::tls::write_self_signed(&cert, &key, "mail.test.example").unwrap();
    let text = test_config_text("[listeners]\nproxy_protocol_from = [\"127.0.0.1/32\"]\n").replace(
        "self_signed = true",
        &format!("cert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
    );
    (text, cert)
}

/// One AUTH PLAIN through the balancer from `source`: the reply line.
async fn auth_via(balancer: &Balancer, cert: &Path, source: &str, password: &str) -> String {
    let (mut c, _) =
        Client::implicit_tls_from(balancer.addr, Some(source.parse().unwrap()), cert).await;
    c.ehlo().await;
    c.auth_plain(ALICE, password).await.line()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_spread_over_two_nodes_behind_a_proxy_balancer_locks_as_one() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    let (text, cert) = behind_balancer(dir.path());
    let a = first_node(dir.path(), "a", &text, &url);
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    add_account(&a, ALICE);
    let balancer = Balancer::start(vec![a.server.submissions(), b.server.submissions()]).await;

    // The default: 10 distinct wrong passwords per address in 15 minutes.
    // Spread over both nodes, 5 each.
    const GUESSER: &str = "127.0.0.21";
    for i in 0..10 {
        let reply = auth_via(&balancer, &cert, GUESSER, &format!("guess number {i}")).await;
        assert!(reply.starts_with("535"), "guess {i}: {reply}");
    }
    // Both nodes now refuse that address, even the right password.
    for _ in 0..2 {
        within(Duration::from_secs(1), "locked on both nodes", async || {
            auth_via(&balancer, &cert, GUESSER, PASSWORD)
                .await
                .starts_with("454 4.7.0")
        })
        .await;
    }
    // The lockout is per client address (PROXY carried it): another
    // client logs in on both nodes.
    for _ in 0..2 {
        let reply = auth_via(&balancer, &cert, "127.0.0.22", PASSWORD).await;
        assert!(reply.starts_with("235"), "{reply}");
    }
    for node in [&a, &b] {
        node.server
            .wait_log("auth.failure with the client's address", |log| {
                log.iter()
                    .any(|l| l["event"] == "auth.failure" && l["ip"] == GUESSER)
            })
            .await;
    }
}

/// The new device password on a My account page.
fn shown_device_password(page: &str) -> Option<String> {
    let marker = r#"<code class="secret" id="new-device-password">"#;
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find("</code>")? + start;
    Some(page[start..end].to_string())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_session_works_on_every_node_and_its_one_time_values_are_sealed_and_shown_once() {
    use crate::common::web::{Web, account_page, act, key_on, sign_in};
    use mailwarden::accounts::totp;

    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_text("");
    let a = first_node(dir.path(), "a", &text, &url);
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    add_account(&a, ALICE);

    // A balancer without sticky sessions: the same browser (one cookie)
    // talks to A, then B, then A.
    let mut on_a = Web::new(a.server.addr("Portal"));
    let mut on_b = Web::new(b.server.addr("Portal"));
    let r = sign_in(&mut on_a, ALICE, PASSWORD).await;
    assert_eq!((r.status, r.location()), (303, "/my-account"), "{r:?}");
    on_b.cookie = on_a.cookie.clone();
    assert!(account_page(&mut on_b).await.body.contains(ALICE));

    // 2FA set up across both: Enable on A, QR Code on B, the key shown on
    // A, the code verified on B.
    act(&mut on_a, "/my-account/2fa/enable", &[]).await;
    act(&mut on_b, "/my-account/2fa/qr", &[]).await;
    let key = key_on(&account_page(&mut on_a).await.body).expect("the key is shown on A");
    let secret = crate::common::base32_decode(&key);
    let code = totp::code_at(&secret, unix_now());
    act(&mut on_b, "/my-account/2fa/verify", &[("otp", &code)]).await;
    let page = account_page(&mut on_a).await.body;
    assert!(
        page.contains("2FA enabled"),
        "the notice set on B shows on A"
    );

    // A device password created on B is in the database, sealed, until a
    // page shows it: then it is gone, on every node.
    act(
        &mut on_b,
        "/my-account/devices/create",
        &[("name", "Phone")],
    )
    .await;
    let rows = pg.query(
        "mw",
        "SELECT id::text, coalesce(address, ''), data FROM portal_sessions",
    );
    // Two pages at once, one on each node: exactly one shows it.
    let (page_a, page_b) = tokio::join!(on_a.get("/my-account"), on_b.get("/my-account"));
    assert_eq!((page_a.status, page_b.status), (200, 200));
    let shown: Vec<String> = [&page_a.body, &page_b.body]
        .into_iter()
        .filter_map(|page| shown_device_password(page))
        .collect();
    assert_eq!(shown.len(), 1, "shown {} times", shown.len());
    let device = shown[0].clone();
    for on in [&mut on_a, &mut on_b] {
        let page = account_page(on).await.body;
        assert_eq!(shown_device_password(&page), None);
    }

    // The rows open with the server key only: no cookie (as text or as
    // bytes), CSRF token, device password or TOTP key, nor the session's
    // JSON, is in them.
    assert!(rows.contains(ALICE), "{rows}");
    let csrf = account_page(&mut on_a).await.csrf();
    let cookie = on_a.cookie.clone().unwrap();
    let cookie_hex: String = cookie.bytes().map(|b| format!("{b:02x}")).collect();
    for secret in [
        &cookie,
        &cookie_hex,
        &csrf,
        &device,
        &key,
        &"csrf".to_string(),
    ] {
        assert!(
            !rows.contains(secret.as_str()),
            "{secret} is in the table: {rows}"
        );
    }

    // The device password works for AUTH on the other node.
    let (mut c, _) = b.connect().await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, &device).await.code, 235);

    // With the database away the portal says so (503) and leaves the
    // browser's cookie alone; the session is there again when it is back.
    pg.stop();
    let r = on_a.get("/my-account").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("set-cookie"), None, "{r:?}");
    assert_eq!(on_a.cookie.as_deref(), Some(cookie.as_str()));
    pg.restart();
    within(
        Duration::from_secs(10),
        "the session back on A",
        async || on_a.get("/my-account").await.status == 200,
    )
    .await;

    // Signing out on B ends the session on A.
    let r = act(&mut on_b, "/signout", &[]).await;
    assert_eq!(r.location(), "/");
    let r = on_a.get("/my-account").await;
    assert_eq!(r.status, 303, "the session survived on A: {r:?}");
    assert_eq!(
        pg.query(
            "mw",
            "SELECT count(*) FROM portal_sessions WHERE address IS NOT NULL"
        )
        .trim(),
        "0"
    );
    // Every statement ran (the purge of old rows too, at the first new
    // session on each node): nothing was logged as failing but what the
    // outage above failed (and said so).
    for node in [&a, &b] {
        let errors: Vec<_> = node
            .server
            .log()
            .into_iter()
            .filter(|l| l["event"] == "store.error")
            .filter(|l| {
                !l["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("PostgreSQL unavailable")
            })
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_database_sealed_with_another_key_or_holding_another_store() {
    let Some(pg) = Postgres::start() else { return };
    let one = pg.database("one");
    let two = pg.database("two");
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_text("");
    let identity = |db: &str| {
        pg.query(
            db,
            "SELECT convert_from(value, 'UTF8') FROM meta WHERE key = 'store_id'",
        )
    };

    // A initialises database one; C, with A's key, database two.
    let a = first_node(dir.path(), "a", &text, &one);
    add_account(&a, ALICE);
    let c = joining_node(dir.path(), "c", &text, &two, &a);
    let (id_one, id_two) = (identity("one"), identity("two"));
    assert!(
        !id_one.trim().is_empty() && id_one != id_two,
        "{id_one} {id_two}"
    );
    let a_data = a.data();
    a.server.stop();
    c.server.stop();

    // B has a key of its own: refused, and database one is as it was.
    let b = write_config(dir.path(), "b", &text, &one);
    let err = serve_refused(&b);
    assert!(err.contains("initialised with another server key"), "{err}");
    assert!(err.contains("secret.key"), "{err}");
    assert_eq!(identity("one"), id_one);
    assert!(
        !b.parent().unwrap().join("data/postgres.id").exists(),
        "B marked itself as a node of database one"
    );
    assert_eq!(
        pg.query("one", "SELECT address FROM accounts").trim(),
        ALICE
    );

    // A pointed at database two (another store): refused, naming both.
    let a_two = write_config(dir.path(), "a", &text, &two);
    let err = serve_refused(&a_two);
    assert!(err.contains("is not the one this node belongs to"), "{err}");
    assert!(
        err.contains(id_one.trim()) && err.contains(id_two.trim()),
        "{err}"
    );
    // As the message says: without its marker, A joins database two (the
    // key is the same), where Alice does not exist.
    std::fs::remove_file(a_data.join("postgres.id")).unwrap();
    let a = first_node(dir.path(), "a", &text, &two);
    let (ok, out) = a.cli(&["account", "list"], "");
    assert!(ok, "{out}");
    assert!(!out.contains(ALICE), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_after_a_brute_force_counts_it_from_the_database() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_text("");
    let a = first_node(dir.path(), "a", &text, &url);
    add_account(&a, ALICE);
    // Ten distinct wrong passwords from one address, all on A.
    for i in 0..10 {
        let (mut c, _) = a.connect().await;
        c.ehlo().await;
        let r = c.auth_plain(ALICE, &format!("guess number {i}")).await;
        assert_eq!(r.code, 535, "{r:?}");
    }
    let (mut c, _) = a.connect().await;
    c.ehlo().await;
    assert!(
        c.auth_plain(ALICE, PASSWORD)
            .await
            .line()
            .starts_with(LOCKED_OUT)
    );
    // A saves its counters within seconds.
    within(Duration::from_secs(10), "A's counters saved", async || {
        pg.query("mw", "SELECT count(*) FROM lockout_counters")
            .trim()
            == "1"
    })
    .await;

    // B starts now: it heard none of it, yet refuses that address...
    let b = joining_node(dir.path(), "b", &text, &url, &a);
    let (mut c, _) = b.connect().await;
    c.ehlo().await;
    let r = c.auth_plain(ALICE, PASSWORD).await.line();
    assert!(r.starts_with(LOCKED_OUT), "{r}");
    // (Only that address: another logs in on B.)
    let (mut c, _) = Client::implicit_tls_from(
        b.server.submissions(),
        Some("127.0.0.6".parse().unwrap()),
        &b.cert(),
    )
    .await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    // ...and so does A after a restart with B stopped.
    b.server.stop();
    a.server.stop();
    let a = first_node(dir.path(), "a", &text, &url);
    let (mut c, _) = a.connect().await;
    c.ehlo().await;
    let r = c.auth_plain(ALICE, PASSWORD).await.line();
    assert!(r.starts_with(LOCKED_OUT), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_trusts_the_store_ca_file_and_refuses_an_unknown_certificate() {
    let Some(pg) = Postgres::start() else { return };
    pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    // The database's certificate: its own CA, not one the system trusts.
    let (cert, key) = (
        dir.path().join("pg-cert.pem"),
        dir.path().join("pg-key.pem"),
    );
    mailwarden::tls::write_self_signed(&cert, &key, "db.test.example").unwrap();
    pg.enable_tls(&cert, &key);
    let url = format!(
        "postgres://postgres@localhost:{}/mw?sslmode=require",
        pg.port
    );
    let config = |name: &str, ca: Option<&Path>| {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let config = folder.join("mailwarden.toml");
        let ca = ca.map_or(String::new(), |p| {
            format!("ca_file = \"{}\"\n", p.display())
        });
        std::fs::write(
            &config,
            format!(
                "{}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n{ca}",
                test_config_text("")
            ),
        )
        .unwrap();
        config
    };

    // Without `ca_file` the certificate is unknown: no start, and why.
    let err = serve_refused(&config("a", None));
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert_eq!(
        pg.query(
            "mw",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'"
        )
        .trim(),
        "0",
        "the node wrote to a database it could not trust"
    );
    // A CA file without certificates is refused as such.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = serve_refused(&config("b", Some(&empty)));
    assert!(err.contains("no certificate in it"), "{err}");

    // With it the node starts, over TLS.
    let node = Node {
        config: config("c", Some(&cert)),
        server: tokio::task::block_in_place(|| {
            ServeProcess::start(&dir.path().join("c/mailwarden.toml"))
        }),
    };
    add_account(&node, ALICE);
    let mut c = node.session(ALICE).await;
    c.cmd("QUIT").await;
    let tls = pg.query(
        "mw",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE application_name = 'mailwarden' AND ssl",
    );
    let plain = pg.query(
        "mw",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE application_name = 'mailwarden' AND NOT ssl",
    );
    assert!(tls.trim().parse::<u32>().unwrap() >= 1, "{tls}");
    assert_eq!(plain.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_accounts_sending_at_once_on_a_small_pool_are_all_accepted() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("mw");
    let dir = tempfile::tempdir().unwrap();
    // Two connections for many sessions: each account's first use reads
    // its state while other sessions hold their decision's turn.
    let folder = dir.path().join("a");
    std::fs::create_dir_all(&folder).unwrap();
    let config = folder.join("mailwarden.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 2\n",
            test_config_text("")
        ),
    )
    .unwrap();
    let node = Node {
        server: tokio::task::block_in_place(|| ServeProcess::start(&config)),
        config,
    };
    // Device passwords (as mail programs use them): no argon2 queue
    // between the sessions, so they really run at once.
    const N: usize = 24;
    let mut users = Vec::new();
    for k in 0..N {
        let user = format!("user{k}@example.com");
        add_account(&node, &user);
        let (ok, out) = node.cli(&["account", "device-password", "add", &user, "bench"], "");
        assert!(ok, "{out}");
        users.push((user, out.lines().next().unwrap().trim().to_string()));
    }
    let (addr, cert) = (node.server.submissions(), node.cert());
    let mut sessions = tokio::task::JoinSet::new();
    for (k, (user, device)) in users.into_iter().enumerate() {
        let cert = cert.clone();
        let source = format!("127.0.2.{}", k + 1).parse().unwrap();
        sessions.spawn(async move {
            let (mut c, _) = Client::implicit_tls_from(addr, Some(source), &cert).await;
            c.ehlo().await;
            let auth = c.auth_plain(&user, &device).await.line();
            let mut replies = vec![auth];
            for i in 0..5 {
                let to = vec![format!("friend{i}@example.org")];
                replies.push(c.try_send(&user, &to, "hi", "hello").await);
            }
            replies
        });
    }
    while let Some(replies) = sessions.join_next().await {
        let replies = replies.unwrap();
        assert!(replies[0].starts_with("235"), "{replies:?}");
        for r in &replies[1..] {
            assert!(r.starts_with("250"), "{replies:?}");
        }
    }
    let stalls: Vec<_> = node
        .server
        .log()
        .into_iter()
        .filter(|l| {
            [
                "store.shared_down",
                "policy.state_unavailable",
                "policy.state_unreadable",
            ]
            .contains(&l["event"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(stalls.is_empty(), "{stalls:?}");
}
