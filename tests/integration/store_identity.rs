//! A server never starts on the wrong store: an emptied or missing store
//! file next to the old key, or another folder's store, is refused with a
//! message naming the files and `mailwarden restore`; `serve --init` and
//! `restore` are the ways out. All through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::serve::{ServeProcess, serve_refused};
use crate::common::{ALICE, PASSWORD, output_with_stdin, test_config_text};

/// A config file in a fresh folder; its data folder is `<dir>/data`.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    (dir, config)
}

fn cli(config: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let out = output_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .args(["--config", config.to_str().unwrap()])
            .args(args),
        stdin,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A used data folder: one start, Alice, stopped.
fn used(config: &Path) -> PathBuf {
    let server = ServeProcess::start(config);
    server.stop();
    let (ok, _, err) = cli(
        config,
        &["account", "add", ALICE, "--password-stdin"],
        PASSWORD,
    );
    assert!(ok, "{err}");
    config.parent().unwrap().join("data")
}

#[test]
fn an_emptied_or_missing_store_next_to_the_old_key_is_refused_until_restored() {
    let (_dir, config) = setup();
    let data = used(&config);
    let backup = data.parent().unwrap().join("before.redb");
    let (ok, _, err) = cli(&config, &["backup", "--out", backup.to_str().unwrap()], "");
    assert!(ok, "{err}");
    let store = data.join("mailwarden.redb");
    assert!(data.join("store.id").exists(), "the marker is written");

    // Emptied (as a botched copy or a full disk leaves it).
    std::fs::write(&store, b"").unwrap();
    let err = serve_refused(&config);
    assert!(err.contains("is missing or empty"), "{err}");
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(err.contains("mailwarden restore"), "{err}");
    assert_eq!(
        std::fs::metadata(&store).unwrap().len(),
        0,
        "nothing was created"
    );
    // Missing altogether: the same.
    std::fs::remove_file(&store).unwrap();
    let err = serve_refused(&config);
    assert!(err.contains("is missing or empty"), "{err}");
    assert!(!store.exists());

    // The way back: restore, then start; Alice is there.
    let (ok, out, err) = cli(&config, &["restore", backup.to_str().unwrap()], "");
    assert!(ok, "{err}");
    assert!(out.contains("1 accounts"), "{out}");
    let server = ServeProcess::start(&config);
    server.stop();
    let (ok, out, _) = cli(&config, &["account", "list"], "");
    assert!(ok && out.contains(ALICE), "{out}");
}

#[test]
fn another_folders_store_is_refused_and_serve_init_starts_afresh_on_purpose() {
    let (_a, config_a) = setup();
    let (_b, config_b) = setup();
    let data_a = used(&config_a);
    let data_b = used(&config_b);
    // B's store file copied over A's.
    std::fs::copy(
        data_b.join("mailwarden.redb"),
        data_a.join("mailwarden.redb"),
    )
    .unwrap();
    let err = serve_refused(&config_a);
    assert!(
        err.contains("is not the one this data folder belongs to"),
        "{err}"
    );
    assert!(err.contains("store.id"), "{err}");

    // `serve --init` on an emptied store: a new, empty store, on purpose.
    std::fs::write(data_a.join("mailwarden.redb"), b"").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args([
            "--config",
            config_a.to_str().unwrap(),
            "serve",
            "--init",
            "--log-format",
            "json",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let marker = data_a.join("store.id");
    let old = std::fs::read_to_string(&marker).unwrap();
    while std::fs::read_to_string(&marker).unwrap() == old {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve --init did not start a new store"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (ok, out, _) = cli(&config_a, &["account", "list"], "");
    assert!(ok && !out.contains(ALICE), "{out}");
}

#[test]
fn store_check_reads_every_table_and_says_what_is_wrong() {
    let (_dir, config) = setup();
    let data = used(&config);
    let (ok, _, err) = cli(
        &config,
        &["account", "alias", "add", ALICE, "al@example.com"],
        "",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&config, &["store", "check"], "");
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("store ok: accounts 1, aliases 1, queue "),
        "{out}"
    );
    // 8 KiB of garbage in the middle of the file.
    let store = data.join("mailwarden.redb");
    let mut bytes = std::fs::read(&store).unwrap();
    let at = bytes.len() / 2;
    let end = (at + 8192).min(bytes.len());
    bytes[at..end].fill(0xA5);
    std::fs::write(&store, &bytes).unwrap();
    let (ok, out, err) = cli(&config, &["store", "check"], "");
    assert!(!ok, "a corrupted store passed: {out}");
    assert!(
        err.contains("is damaged") && err.contains("mailwarden restore"),
        "{err}"
    );
}
