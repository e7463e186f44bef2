//! Files on disk (docs/security.md, "Files on disk"): whatever the umask,
//! the real binary leaves its files 0600 and its folders 0700, and a data
//! folder others can read is reported at start and tightened.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::client::Client;
use crate::common::serve::ServeProcess;
use crate::common::{ALICE, PASSWORD, output_with_stdin, read_outbox, test_config_text};

/// A config file in a fresh folder; its data folder is `<dir>/data`.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    (dir, config)
}

/// The CLI with umask 000; panics unless it succeeds.
fn cli_with_umask_000(config: &Path, args: &[&str], stdin: &str) -> String {
    let out = output_with_stdin(
        Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_mailwarden"))
            .args(["--config", config.to_str().unwrap()])
            .args(args),
        stdin,
    );
    assert!(
        out.status.success(),
        "mailwarden {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every folder and file under `root` (itself included) with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((
            path.clone(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn too_open_warnings(server: &ServeProcess) -> Vec<Value> {
    server
        .log()
        .into_iter()
        .filter(|v| v["event"] == "files.too_open")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_umask_000_every_file_is_0600_and_every_folder_0700() {
    let (dir, config) = setup();
    let data = dir.path().join("data");
    let server = tokio::task::block_in_place(|| ServeProcess::start_with_umask(&config, "000"));
    tokio::task::block_in_place(|| {
        cli_with_umask_000(
            &config,
            &["account", "add", ALICE, "--password-stdin"],
            PASSWORD,
        )
    });

    // A message, written to the outbox by the server.
    let cert = data.join(mailwarden::tls::SELF_SIGNED_CERT);
    let (mut c, greeting) = Client::implicit_tls(server.submissions(), &cert).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, PASSWORD).await.code, 235);
    let body = b"From: <alice@example.com>\r\nSubject: modes\r\n\r\nprivate\r\n";
    assert_eq!(
        c.send_message(ALICE, &["bob@example.org"], body).await.code,
        250
    );
    for _ in 0..1000 {
        if !read_outbox(&data.join("outbox")).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(read_outbox(&data.join("outbox")).len(), 1);

    // A backup through the running server, and one offline.
    let online = dir.path().join("online.redb");
    let offline = dir.path().join("offline.redb");
    tokio::task::block_in_place(|| {
        cli_with_umask_000(&config, &["backup", "--out", online.to_str().unwrap()], "")
    });
    assert!(too_open_warnings(&server).is_empty(), "{:#?}", server.log());
    tokio::task::block_in_place(|| server.stop());
    tokio::task::block_in_place(|| {
        cli_with_umask_000(&config, &["backup", "--out", offline.to_str().unwrap()], "")
    });

    let seen = modes(&data);
    let names: Vec<String> = seen
        .iter()
        .map(|(p, _, _)| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    // What the server keeps, so the check below looks at all of it.
    for expected in [
        "data",
        "data/mailwarden.redb",
        "data/secret.key",
        "data/admin.token",
        "data/admin.addr",
        "data/tls",
        "data/tls/self-signed-key.pem",
        "data/tls/self-signed-cert.pem",
        "data/outbox",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with(".eml")), "{names:?}");
    for (path, is_dir, mode) in &seen {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:04o}", path.display());
    }
    for backup in [&online, &offline] {
        let mode = std::fs::metadata(backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:04o}", backup.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_folder_others_can_read_is_reported_at_start_and_tightened() {
    let (dir, config) = setup();
    // As the server resolves it: next to the config file, links resolved.
    let data = dir.path().canonicalize().unwrap().join("data");
    // A first start makes the store and the key; then someone loosens them.
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    tokio::task::block_in_place(|| server.stop());
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = data.join("mailwarden.redb");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    let warnings = too_open_warnings(&server);
    let about = |path: &Path| {
        warnings
            .iter()
            .filter(|w| w["path"] == path.to_str().unwrap())
            .collect::<Vec<_>>()
    };
    let on_dir = about(&data);
    assert_eq!(on_dir.len(), 1, "{warnings:#?}");
    assert_eq!(on_dir[0]["mode"], "0755");
    assert_eq!(on_dir[0]["level"], "WARN");
    let on_store = about(&store);
    assert_eq!(on_store.len(), 1, "{warnings:#?}");
    assert_eq!(on_store[0]["mode"], "0644");
    assert_eq!(warnings.len(), 2, "only what was loosened: {warnings:#?}");
    for (path, want) in [(&data, 0o700), (&store, 0o600)] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{}", path.display());
    }
    tokio::task::block_in_place(|| server.stop());

    // Tightened, so the next start says nothing.
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    assert!(too_open_warnings(&server).is_empty());
    tokio::task::block_in_place(|| server.stop());
}
