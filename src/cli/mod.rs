//! Command-line interface. Commands that touch accounts or the queue go
//! through the running server's admin API; with no server they open the
//! existing store directly (never creating one).

mod args;
mod output;
mod shared;
mod target;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::admin::client::{AdminClient, Reach};
use crate::admin::ops::Request;
use crate::config::Config;
use crate::events::TracingEvents;
use crate::store::{Store, StoreError};
use crate::telemetry;

use args::account_request;
pub use args::{
    AccountCommand, AccountPolicyCommand, AliasCommand, CertCommand, Cli, Command, ConfigCommand,
    DevicePasswordCommand, PolicyCommand, QueueCommand, StoreCommand, TotpCommand,
};
use target::run_op;

pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config_path = cli.config.as_ref();
    match cli.command {
        Command::Serve { log_format, init } => {
            telemetry::init(log_format);
            let config = load_config(config_path)?;
            runtime.block_on(async {
                let overrides = crate::app::Overrides {
                    init,
                    ..Default::default()
                };
                let running = crate::server::start_with(
                    config,
                    Arc::new(TracingEvents::default()),
                    overrides,
                )
                .await?;
                running.until_signal().await
            })
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(config_path)?;
            // The certificate and key a start would load: they must read,
            // parse and belong together (a self-signed pair is made at
            // `serve`, not here).
            if config.tls.cert.is_some() {
                crate::tls::server_config(&config)?;
            }
            let (dkim, mut warnings) = dkim_check(&config)?;
            warnings.extend(data_dir_warnings(&config));
            let summary = serde_json::json!({
                "ok": true,
                "hostname": config.server.hostname,
                "data_dir": config.server.data_dir,
                "delivery_mode": format!("{:?}", config.delivery_mode()).to_lowercase(),
                "submission": config.listeners.submission,
                "submissions": config.listeners.submissions,
                "admin": config.listeners.admin,
                "dkim": dkim,
                "warnings": warnings,
            });
            if cli.json {
                println!("{summary}");
            } else {
                println!("configuration is valid");
                for key in dkim.iter() {
                    println!(
                        "DKIM for {}: publish TXT {} \"{}\"",
                        key["domain"].as_str().unwrap_or_default(),
                        key["name"].as_str().unwrap_or_default(),
                        key["record"].as_str().unwrap_or_default()
                    );
                }
                for warning in &warnings {
                    eprintln!("warning: {warning}");
                }
            }
            Ok(())
        }
        Command::Cert {
            command: CertCommand::Generate { out },
        } => {
            let config = load_config(config_path)?;
            let cert = out.join("fullchain.pem");
            let key = out.join("privkey.pem");
            crate::tls::write_self_signed(&cert, &key, &config.server.hostname)?;
            if cli.json {
                println!("{}", serde_json::json!({"cert": cert, "key": key}));
            } else {
                println!("wrote {} and {}", cert.display(), key.display());
            }
            Ok(())
        }
        Command::Account { command } => {
            let config = load_config(config_path)?;
            let request = account_request(command)?;
            runtime.block_on(run_op(&config, request, cli.json))
        }
        Command::Queue { command } => {
            let config = load_config(config_path)?;
            let request = match command {
                QueueCommand::List { held } => Request::QueueList { held },
                QueueCommand::Show { id } => Request::QueueShow { id },
                QueueCommand::Retry { id: Some(id), .. } => Request::QueueRetry { id },
                QueueCommand::Retry {
                    id: None, domain, ..
                } => Request::QueueRetryMany { domain },
                QueueCommand::Release { id } => Request::QueueRelease { id },
                QueueCommand::Delete { id } => Request::QueueDelete { id },
            };
            runtime.block_on(run_op(&config, request, cli.json))
        }
        Command::Policy {
            command: PolicyCommand::Simulate { days, seed },
        } => {
            let config = load_config(config_path)?;
            let report = runtime.block_on(crate::simulate::run(config.policy, days, seed))?;
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Replay { file, report_from },
        } => {
            let config = load_config(config_path)?;
            let report_from = match report_from {
                Some(t) => Some(
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .with_context(|| format!("--report-from {t:?} is not an RFC 3339 time"))?
                        .unix_timestamp() as f64,
                ),
                None => None,
            };
            let options = crate::replay::Options {
                json: cli.json,
                report_from,
            };
            let mut out = std::io::stdout().lock();
            let (summary, bad) = if file.as_os_str() == "-" {
                let input = std::io::stdin().lock();
                runtime.block_on(crate::replay::run(&config, input, &mut out, &options))?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let input = std::io::BufReader::new(f);
                runtime.block_on(crate::replay::run(&config, input, &mut out, &options))?
            };
            use std::io::Write;
            if cli.json {
                let mut line = serde_json::to_value(&summary)?;
                line["type"] = "summary".into();
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{} accounts, {} messages: {} accepted, {} deferred, {} blocked",
                    summary.accounts,
                    summary.messages,
                    summary.accepted,
                    summary.deferred,
                    summary.blocked
                )?;
            }
            out.flush()?;
            if bad {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Complaint { file },
        } => {
            let config = load_config(config_path)?;
            let report = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                    .context("cannot read the report from standard input")?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            runtime.block_on(run_op(
                &config,
                Request::PolicyComplaint { report },
                cli.json,
            ))
        }
        Command::Backup { out } => {
            let config = load_config(config_path)?;
            let path = std::path::absolute(&out).context("cannot resolve the backup path")?;
            runtime.block_on(run_op(&config, Request::Backup { path }, cli.json))
        }
        Command::Store {
            command: StoreCommand::Check,
        } => {
            let config = load_config(config_path)?;
            runtime.block_on(run_op(&config, Request::StoreCheck, cli.json))
        }
        Command::Store {
            command: StoreCommand::Migrate,
        } => {
            let config = load_config(config_path)?;
            shared::migrate(&config, cli.json)
        }
        Command::Store {
            command: StoreCommand::Copy { to },
        } => {
            let config = load_config(config_path)?;
            runtime.block_on(shared::copy(&config, &to, cli.json))
        }
        Command::Restore { file } => {
            let config = load_config(config_path)?;
            runtime.block_on(restore(&config, &file, cli.json))
        }
    }
}

/// The DKIM keys (each must load) with their DNS records, and warnings
/// about mail that would leave unsigned.
fn dkim_check(config: &Config) -> anyhow::Result<(Vec<serde_json::Value>, Vec<String>)> {
    use crate::config::DeliveryMode;
    let keys = crate::delivery::DkimKeys::load(&config.delivery.dkim)?;
    let records = keys
        .keys()
        .iter()
        .map(|k| {
            serde_json::json!({
                "domain": k.domain,
                "selector": k.selector,
                "name": k.record_name(),
                "record": k.record,
            })
        })
        .collect();
    let mut warnings = Vec::new();
    let sending = matches!(
        config.delivery_mode(),
        DeliveryMode::Mx | DeliveryMode::Relay
    );
    if sending && keys.is_empty() {
        warnings
            .push("no [[delivery.dkim]] keys: no sending domain gets a DKIM signature".to_string());
    }
    if sending {
        // Domains of accounts, when the store can be read here (the server
        // holds it while running).
        if let Ok(store) = crate::store::Store::open_existing(&config.server.data_dir) {
            let mut domains: Vec<String> = store
                .account_list()
                .unwrap_or_default()
                .iter()
                .filter_map(|a| {
                    a.address
                        .rsplit_once('@')
                        .map(|(_, d)| d.to_ascii_lowercase())
                })
                .collect();
            domains.sort();
            domains.dedup();
            for domain in domains.iter().filter(|d| !keys.has(d)) {
                warnings.push(format!(
                    "accounts send from {domain}, which has no DKIM key: their mail leaves unsigned"
                ));
            }
        }
    }
    Ok((records, warnings))
}

/// Replaces the store with a backup; only while no server runs.
async fn restore(config: &Config, file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    if let Reach::Server(client) = AdminClient::discover(config).await? {
        bail!(
            "a server is running (admin API at {}): stop it before restoring",
            client.addr()
        );
    }
    let data_dir = config.server.data_dir.clone();
    let path = file.to_path_buf();
    let summary = tokio::task::spawn_blocking(move || Store::restore(&data_dir, &path))
        .await?
        .map_err(|e| match e {
            StoreError::Locked(p) => anyhow::anyhow!(
                "the store {} is in use by a running server: stop it before restoring",
                p.display()
            ),
            other => anyhow::anyhow!("{other}"),
        })?;
    if json {
        println!("{}", serde_json::to_value(summary)?);
    } else {
        println!(
            "restored {} into {} ({} accounts, {} queued messages)",
            file.display(),
            config.server.data_dir.display(),
            summary.accounts,
            summary.queued
        );
    }
    Ok(())
}

/// A data folder that others may read, or that this user cannot use.
fn data_dir_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.server.data_dir;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => vec![format!(
            "data folder {} is mode {:o}: others can read the store and queued mail (chmod 700)",
            dir.display(),
            meta.permissions().mode() & 0o777
        )],
        Ok(_) => Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => vec![format!("data folder {}: {e}", dir.display())],
    }
}

/// From standard input (first line) or, on a terminal, prompted twice.
fn read_new_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut input = String::new();
        std::io::stdin()
            .take(8192)
            .read_to_string(&mut input)
            .context("cannot read the password from standard input")?;
        let password = input.lines().next().unwrap_or_default().to_string();
        if password.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(password);
    }
    let first = rpassword::prompt_password("New password: ")?;
    let second = rpassword::prompt_password("Repeat new password: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(first)
}
