//! Every `mailwarden` command in the docs' shell blocks still parses: each
//! is run, offline, against a real store (the order the guide gives them
//! in; placeholders such as ID stay as written). A renamed command or flag
//! makes clap refuse it with a usage error (exit code 2), and this fails.

use std::path::Path;
use std::process::Command;

use crate::common::serve::ServeProcess;
use crate::common::{output_with_stdin, test_config_text};

/// The commands of every ```sh block in README.md and docs/*.md, with
/// continuation lines joined and comments dropped.
fn documented_commands(root: &Path) -> Vec<(String, String)> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut in_block = false;
        let mut pending = String::new();
        for line in text.lines() {
            if line.starts_with("```") {
                in_block = line.trim() == "```sh";
                continue;
            }
            if !in_block {
                continue;
            }
            let line = match line.find("  #") {
                Some(at) => &line[..at],
                None => line,
            };
            pending.push_str(line.trim_end().trim_end_matches('\\'));
            if line.trim_end().ends_with('\\') {
                pending.push(' ');
                continue;
            }
            let command = std::mem::take(&mut pending);
            if command.contains("mailwarden ") && !command.trim_start().starts_with('#') {
                out.push((name.clone(), command.trim().to_string()));
            }
        }
    }
    out
}

/// Splits a command line like a shell would for these simple lines.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_command_still_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailwarden.toml");
    std::fs::write(&config, test_config_text("")).unwrap();
    // A store to run against: the first start makes it.
    let server = tokio::task::block_in_place(|| ServeProcess::start(&config));
    tokio::task::block_in_place(|| server.kill());

    let commands = documented_commands(root);
    assert!(commands.len() > 30, "{commands:#?}");
    let mut checked = 0;
    let mut refused = Vec::new();
    for (file, line) in &commands {
        // What `echo "$PW" |` feeds, and the rest of the line.
        let (stdin, line) = match line.split_once("| ") {
            Some((feed, rest)) if feed.contains("echo") => ("a documented passphrase\n", rest),
            _ => ("", line.as_str()),
        };
        // Only lines that run the CLI itself (`install … mailwarden` or
        // `docker exec … mailwarden …` wrap commands listed elsewhere).
        let line = line.trim_start();
        if !line.starts_with("mailwarden ") {
            continue;
        }
        let line = line
            .replace("$(date +%F)", "2026-01-01")
            .replace("/var/backups/", &format!("{}/", dir.path().display()))
            .replace("/etc/mailwarden/mailwarden.toml", config.to_str().unwrap())
            .replace("certs/", &format!("{}/certs/", dir.path().display()));
        let args = words(&line);
        // Not offline.
        if args.get(1).is_some_and(|a| a == "serve" || a == "restore") || line.contains('…') {
            continue;
        }
        let out = tokio::task::block_in_place(|| {
            output_with_stdin(
                Command::new(env!("CARGO_BIN_EXE_mailwarden"))
                    .args(&args[1..])
                    .env("MAILWARDEN_CONFIG", &config),
                stdin,
            )
        });
        checked += 1;
        if out.status.code() == Some(2) {
            refused.push(format!(
                "{file}: {line}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(checked > 30, "only {checked} commands ran");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
