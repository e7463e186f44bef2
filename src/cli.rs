//! Command-line interface. Commands that touch accounts or the queue go
//! through the running server's admin API; with no server they open the
//! existing store directly (never creating one).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::admin::client::{AdminClient, Reach};
use crate::admin::ops::Request;
use crate::app::{App, Open, Overrides};
use crate::config::Config;
use crate::events::TracingEvents;
use crate::store::{Store, StoreError};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "mailwarden",
    version,
    about = "SMTP submission server with outbound-abuse blocking"
)]
pub struct Cli {
    /// Config file (TOML). Without it, the embedded development defaults.
    #[arg(long, global = true, value_name = "FILE", env = "MAILWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every listener and worker.
    Serve {
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Certificate tools.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Inspect and manage the delivery queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// The outbound policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write a consistent snapshot of the store (works while serving).
    Backup {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace the store with a backup (the server must be stopped).
    Restore { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Replay a population of honest and hijacked accounts over simulated
    /// days against the scorer with this configuration's [policy].
    Simulate {
        #[arg(long, default_value_t = 7)]
        days: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print a summary.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Write a self-signed development certificate (fullchain.pem, privkey.pem).
    Generate {
        #[arg(long, value_name = "DIR", default_value = "certs")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account (prompts twice for the password on a terminal).
    Add {
        email: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password.
    Passwd {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every account.
    List,
    /// Show one account.
    Show { email: String },
    /// Delete an account.
    Delete { email: String },
    /// Refuse every AUTH for an account until it is enabled again.
    Disable { email: String },
    /// Undo `disable`.
    Enable { email: String },
    /// Block sending. Without --self-service only `unblock` lifts it.
    Block {
        email: String,
        /// A category in plain words; the user sees it.
        #[arg(long)]
        reason: String,
        /// A block the user lifts by changing the password and enabling 2FA.
        #[arg(long)]
        self_service: bool,
        /// Networks whose portal changes must not count (with --self-service).
        #[arg(long = "abuse-network", value_name = "CIDR")]
        abuse_networks: Vec<String>,
    },
    /// Lift any block.
    Unblock { email: String },
    /// Recovery: new password, 2FA off, device passwords revoked, operator block.
    Reset {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Two-factor authentication.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
    /// Per-device passwords for mail programs.
    DevicePassword {
        #[command(subcommand)]
        command: DevicePasswordCommand,
    },
    /// Per-account policy limits (for trusted bulk senders).
    Policy {
        #[command(subcommand)]
        command: AccountPolicyCommand,
    },
    /// Other addresses the account may send as.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountPolicyCommand {
    /// KEY=VALUE (e.g. max_messages_per_hour=2000); VALUE `default` removes it.
    Set { email: String, setting: String },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Let the account send as ALIAS (refused if any account or alias has it).
    Add { email: String, alias: String },
    /// Stop the account sending as ALIAS.
    Remove { email: String, alias: String },
    /// Print the account's aliases, one per line.
    List { email: String },
}

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Start enrolment: prints the otpauth:// URL and the secret.
    Enable { email: String },
    /// Finish enrolment with a code from the authenticator app.
    Verify { email: String, code: String },
    /// Turn 2FA off (revokes every device password).
    Disable { email: String },
}

#[derive(Debug, Subcommand)]
pub enum DevicePasswordCommand {
    /// Create one; it is printed once and never again.
    Add {
        email: String,
        name: String,
    },
    List {
        email: String,
    },
    Revoke {
        email: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued messages (or held ones).
    List {
        #[arg(long)]
        held: bool,
    },
    /// Show one message's envelope, state and header.
    Show { id: String },
    /// Try to deliver a message now.
    Retry { id: String },
    /// Release a held message for delivery.
    Release { id: String },
    /// Delete a message from the queue (it is not delivered).
    Delete { id: String },
}

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
        Command::Serve { log_format } => {
            telemetry::init(log_format);
            let config = load_config(config_path)?;
            runtime.block_on(async {
                let running = crate::server::start(config, Arc::new(TracingEvents)).await?;
                running.until_signal().await
            })
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(config_path)?;
            let (dkim, warnings) = dkim_check(&config)?;
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
            println!("wrote {} and {}", cert.display(), key.display());
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
                QueueCommand::Retry { id } => Request::QueueRetry { id },
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
            print!("{}", report.table());
            Ok(())
        }
        Command::Backup { out } => {
            let config = load_config(config_path)?;
            let path = std::path::absolute(&out).context("cannot resolve the backup path")?;
            runtime.block_on(run_op(&config, Request::Backup { path }, cli.json))
        }
        Command::Restore { file } => {
            let config = load_config(config_path)?;
            runtime.block_on(restore(&config, &file, cli.json))
        }
    }
}

fn account_request(command: AccountCommand) -> anyhow::Result<Request> {
    Ok(match command {
        AccountCommand::Add {
            email,
            password_stdin,
        } => Request::AccountAdd {
            address: email,
            password: read_new_password(password_stdin)?,
        },
        AccountCommand::Passwd {
            email,
            password_stdin,
        } => Request::AccountPasswd {
            address: email,
            password: read_new_password(password_stdin)?,
        },
        AccountCommand::List => Request::AccountList,
        AccountCommand::Show { email } => Request::AccountShow { address: email },
        AccountCommand::Delete { email } => Request::AccountDelete { address: email },
        AccountCommand::Disable { email } => Request::AccountDisable { address: email },
        AccountCommand::Enable { email } => Request::AccountEnable { address: email },
        AccountCommand::Block {
            email,
            reason,
            self_service,
            abuse_networks,
        } => Request::AccountBlock {
            address: email,
            reason,
            self_service,
            abuse_networks,
        },
        AccountCommand::Unblock { email } => Request::AccountUnblock { address: email },
        AccountCommand::Reset {
            email,
            password_stdin,
        } => Request::AccountReset {
            address: email,
            password: read_new_password(password_stdin)?,
        },
        AccountCommand::Totp { command } => match command {
            TotpCommand::Enable { email } => Request::TotpEnable { address: email },
            TotpCommand::Verify { email, code } => Request::TotpVerify {
                address: email,
                code,
            },
            TotpCommand::Disable { email } => Request::TotpDisable { address: email },
        },
        AccountCommand::Policy {
            command: AccountPolicyCommand::Set { email, setting },
        } => Request::AccountPolicySet {
            address: email,
            setting,
        },
        AccountCommand::Alias { command } => match command {
            AliasCommand::Add { email, alias } => Request::AliasAdd {
                address: email,
                alias,
            },
            AliasCommand::Remove { email, alias } => Request::AliasRemove {
                address: email,
                alias,
            },
            AliasCommand::List { email } => Request::AliasList { address: email },
        },
        AccountCommand::DevicePassword { command } => match command {
            DevicePasswordCommand::Add { email, name } => Request::DevicePasswordAdd {
                address: email,
                name,
            },
            DevicePasswordCommand::List { email } => Request::DevicePasswordList { address: email },
            DevicePasswordCommand::Revoke { email, name } => Request::DevicePasswordRevoke {
                address: email,
                name,
            },
        },
    })
}

/// Runs a command on the running server, or on the store when none runs.
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

async fn run_op(config: &Config, request: Request, json: bool) -> anyhow::Result<()> {
    let human = describe(&request);
    let result = match Target::reach(config).await? {
        Target::Server(client) => client.run(&request).await?,
        Target::Local(app) => {
            let result = app.ops().run(request).await;
            app.close().await;
            result?
        }
    };
    if json {
        println!("{result}");
    } else {
        let text = human(&result);
        if !text.is_empty() {
            println!("{text}");
        }
    }
    Ok(())
}

type Describe = Box<dyn Fn(&serde_json::Value) -> String>;

/// How a successful result reads for a person.
fn describe(request: &Request) -> Describe {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    match request {
        Request::AccountAdd { .. } => Box::new(move |v| format!("created {}", s(v, "address"))),
        Request::AccountPasswd { .. } => {
            Box::new(move |v| format!("password changed for {}", s(v, "address")))
        }
        Request::AccountDelete { .. } => Box::new(move |v| format!("deleted {}", s(v, "address"))),
        Request::AccountDisable { .. } => {
            Box::new(move |v| format!("disabled {}", s(v, "address")))
        }
        Request::AccountEnable { .. } => Box::new(move |v| format!("enabled {}", s(v, "address"))),
        Request::AccountList => Box::new(|v| {
            let lines: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let disabled = if a["disabled"].as_bool() == Some(true) {
                        " (disabled)"
                    } else {
                        ""
                    };
                    format!("{}{disabled}", a["address"].as_str().unwrap_or_default())
                })
                .collect();
            if lines.is_empty() {
                "no accounts".into()
            } else {
                lines.join("\n")
            }
        }),
        Request::QueueList { held } => {
            let empty = if *held {
                "no held messages"
            } else {
                "the queue is empty"
            };
            Box::new(move |v| {
                let lines: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let rcpts: Vec<&str> = m["recipients"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str())
                            .collect();
                        let mut text = format!(
                            "{}  {}  {} bytes  <{}> -> {}",
                            s(m, "id"),
                            s(m, "state"),
                            m["size"],
                            s(m, "from"),
                            rcpts.join(", ")
                        );
                        for d in m["deliveries"].as_array().into_iter().flatten() {
                            text.push_str(&delivery_line(d));
                        }
                        text
                    })
                    .collect();
                if lines.is_empty() {
                    empty.into()
                } else {
                    lines.join("\n")
                }
            })
        }
        Request::QueueRetry { .. } => {
            Box::new(move |v| format!("{} will be retried now", s(v, "id")))
        }
        Request::QueueRelease { .. } => Box::new(move |v| format!("released {}", s(v, "id"))),
        Request::QueueDelete { .. } => Box::new(move |v| format!("deleted {}", s(v, "id"))),
        Request::Backup { .. } => Box::new(|v| {
            format!(
                "backup written to {} ({} accounts, {} queued messages)",
                v["path"].as_str().unwrap_or_default(),
                v["accounts"],
                v["queued"]
            )
        }),
        Request::AccountBlock { .. } => Box::new(move |v| {
            format!(
                "blocked {} ({}: {})",
                s(v, "address"),
                v["block"]["kind"].as_str().unwrap_or_default(),
                v["block"]["reason"].as_str().unwrap_or_default()
            )
        }),
        Request::AccountPolicySet { .. } => Box::new(move |v| {
            format!(
                "policy overrides for {}: {}",
                s(v, "address"),
                v["policy_overrides"]
            )
        }),
        Request::AliasAdd { .. } => {
            Box::new(move |v| format!("{} may now send as {}", s(v, "address"), s(v, "alias")))
        }
        Request::AliasRemove { .. } => {
            Box::new(move |v| format!("{} no longer sends as {}", s(v, "address"), s(v, "alias")))
        }
        Request::AliasList { .. } => Box::new(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }),
        Request::AccountUnblock { .. } => {
            Box::new(move |v| format!("unblocked {}", s(v, "address")))
        }
        Request::AccountReset { .. } => Box::new(move |v| {
            format!(
                "reset {}: new password, 2FA off, device passwords revoked, blocked until `account unblock`",
                s(v, "address")
            )
        }),
        Request::TotpEnable { .. } => Box::new(move |v| {
            format!(
                "{}\nsecret: {}\nfinish with: mailwarden account totp verify {} CODE",
                s(v, "otpauth_url"),
                s(v, "secret"),
                s(v, "address")
            )
        }),
        Request::TotpVerify { .. } => Box::new(move |v| {
            let lifted = if v["blocked"] == false {
                ""
            } else {
                " (the account is still blocked)"
            };
            format!("2FA enabled for {}{lifted}", s(v, "address"))
        }),
        Request::TotpDisable { .. } => Box::new(move |v| {
            format!(
                "2FA disabled for {}; device passwords revoked",
                s(v, "address")
            )
        }),
        Request::DevicePasswordAdd { .. } => Box::new(move |v| {
            format!(
                "{}\n(device password {:?} for {}: it is shown only this once)",
                s(v, "password"),
                s(v, "name"),
                s(v, "address")
            )
        }),
        Request::DevicePasswordList { .. } => Box::new(|v| {
            let lines: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let used = d["last_used"]
                        .as_u64()
                        .map_or("never used".to_string(), |t| {
                            format!(
                                "last used {t} from {}",
                                d["last_ip"].as_str().unwrap_or("?")
                            )
                        });
                    let suspended = if d["suspended"] == true {
                        " (suspended)"
                    } else {
                        ""
                    };
                    format!(
                        "{}  created {}  {used}{suspended}",
                        d["name"].as_str().unwrap_or_default(),
                        d["created"]
                    )
                })
                .collect();
            if lines.is_empty() {
                "no device passwords".into()
            } else {
                lines.join("\n")
            }
        }),
        Request::DevicePasswordRevoke { .. } => {
            Box::new(move |v| format!("revoked {:?} for {}", s(v, "name"), s(v, "address")))
        }
        Request::AccountShow { .. } | Request::QueueShow { .. } => {
            Box::new(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        }
    }
}

/// `    bob@example.org  pending  2 attempts  next try 2026-11-28T08:00:00Z  last reply: 451 ...`
fn delivery_line(d: &serde_json::Value) -> String {
    let time = |v: &serde_json::Value| {
        v.as_u64().map(|t| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .to_string()
        })
    };
    let mut line = format!(
        "\n    {}  {}  {} attempts",
        d["address"].as_str().unwrap_or_default(),
        d["status"].as_str().unwrap_or_default(),
        d["attempts"].as_u64().unwrap_or(0)
    );
    if let Some(next) = time(&d["next_attempt"]) {
        line.push_str(&format!("  next try {next}"));
    }
    if let Some(reply) = d["last_reply"].as_str() {
        line.push_str(&format!("  last reply: {reply}"));
    }
    line
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

/// Where account and queue commands go: the running server's admin API,
/// or, with no server, the application assembled on the store the way
/// `serve` assembles it.
enum Target {
    Server(AdminClient),
    Local(Box<App>),
}

impl Target {
    async fn reach(config: &Config) -> anyhow::Result<Self> {
        match AdminClient::discover(config).await? {
            Reach::Server(client) => Ok(Self::Server(client)),
            Reach::NoServer { addr } => {
                let opened = App::open(
                    config,
                    Open::Existing,
                    Arc::new(TracingEvents),
                    Overrides::default(),
                );
                match opened {
                    Ok(app) => Ok(Self::Local(Box::new(app))),
                    Err(e) => match e.downcast_ref::<StoreError>() {
                        Some(StoreError::Locked(path)) => bail!(
                            "the store {} is in use by a running server, but its admin API at {addr} does not answer",
                            path.display()
                        ),
                        Some(StoreError::Missing(path)) => bail!(
                            "no server answers at {addr} and there is no store at {} (start `mailwarden serve` once, or pass --config)",
                            path.display()
                        ),
                        _ => Err(e),
                    },
                }
            }
        }
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
