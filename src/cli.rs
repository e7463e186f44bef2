//! Command-line interface. Commands that touch accounts or the queue go
//! through the running server's admin API; with no server they open the
//! existing store directly (never creating one).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hyper::Method;

use crate::accounts::{Accounts, Passwords};
use crate::admin::client::{AdminClient, Reach};
use crate::clock::SystemClock;
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
    /// Show one account.
    Show { email: String },
    /// Manage the other addresses an account may send as.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Let the account send as ALIAS (refused if any account or alias has it).
    Add { email: String, alias: String },
    /// Take ALIAS away from the account.
    Remove { email: String, alias: String },
    /// Print the account's aliases, one per line.
    List { email: String },
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
    match cli.command {
        Command::Serve { log_format } => {
            telemetry::init(log_format);
            let config = load_config(cli.config.as_ref())?;
            runtime.block_on(async {
                let running = crate::server::start(config, Arc::new(TracingEvents)).await?;
                running.until_signal().await
            })
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(cli.config.as_ref())?;
            let summary = serde_json::json!({
                "ok": true,
                "hostname": config.server.hostname,
                "data_dir": config.server.data_dir,
                "delivery_mode": format!("{:?}", config.delivery_mode()).to_lowercase(),
                "submission": config.listeners.submission,
                "submissions": config.listeners.submissions,
                "admin": config.listeners.admin,
            });
            if cli.json {
                println!("{summary}");
            } else {
                println!("configuration is valid");
            }
            Ok(())
        }
        Command::Cert {
            command: CertCommand::Generate { out },
        } => {
            let config = load_config(cli.config.as_ref())?;
            let cert = out.join("fullchain.pem");
            let key = out.join("privkey.pem");
            crate::tls::write_self_signed(&cert, &key, &config.server.hostname)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::Account { command } => {
            let config = load_config(cli.config.as_ref())?;
            runtime.block_on(account(command, &config, cli.json))
        }
    }
}

async fn account(command: AccountCommand, config: &Config, json: bool) -> anyhow::Result<()> {
    let target = Target::reach(config).await?;
    match command {
        AccountCommand::Add {
            email,
            password_stdin,
        } => {
            let password = read_new_password(password_stdin)?;
            let view = match &target {
                Target::Server(client) => {
                    client
                        .call(
                            Method::POST,
                            "/v1/accounts",
                            Some(serde_json::json!({"address": email, "password": password})),
                        )
                        .await?
                }
                Target::Store(accounts) => {
                    let account = accounts.add(&email, &password, "cli").await?;
                    serde_json::to_value(crate::admin::AccountView::from(account))?
                }
            };
            if json {
                println!("{view}");
            } else {
                println!("created {}", view["address"].as_str().unwrap_or(&email));
            }
        }
        AccountCommand::Show { email } => {
            let view = match &target {
                Target::Server(client) => {
                    let path = format!("/v1/accounts/{}", percent_encode(&email));
                    client.call(Method::GET, &path, None).await?
                }
                Target::Store(accounts) => serde_json::to_value(crate::admin::AccountView::from(
                    accounts.get(&email).await?,
                ))?,
            };
            println!(
                "{}",
                if json {
                    view.to_string()
                } else {
                    serde_json::to_string_pretty(&view)?
                }
            );
        }
        AccountCommand::Alias { command } => alias(command, &target, json).await?,
    }
    Ok(())
}

async fn alias(command: AliasCommand, target: &Target, json: bool) -> anyhow::Result<()> {
    let path = |email: &str| format!("/v1/accounts/{}/aliases", percent_encode(email));
    let view = |account| serde_json::to_value(crate::admin::AccountView::from(account));
    match command {
        AliasCommand::Add { email, alias } => {
            let account = match target {
                Target::Server(client) => {
                    let body = serde_json::json!({ "alias": alias });
                    client.call(Method::POST, &path(&email), Some(body)).await?
                }
                Target::Store(accounts) => view(accounts.alias_add(&email, &alias, "cli").await?)?,
            };
            let alias = crate::address::normalize(&alias).unwrap_or(alias);
            if json {
                println!("{account}");
            } else {
                let address = account["address"].as_str().unwrap_or(&email);
                println!("{address} may now send as {alias}");
            }
        }
        AliasCommand::Remove { email, alias } => {
            let account = match target {
                Target::Server(client) => {
                    let path = format!("{}/{}", path(&email), percent_encode(&alias));
                    client.call(Method::DELETE, &path, None).await?
                }
                Target::Store(accounts) => {
                    view(accounts.alias_remove(&email, &alias, "cli").await?)?
                }
            };
            let alias = crate::address::normalize(&alias).unwrap_or(alias);
            if json {
                println!("{account}");
            } else {
                let address = account["address"].as_str().unwrap_or(&email);
                println!("{address} no longer sends as {alias}");
            }
        }
        AliasCommand::List { email } => {
            let aliases = match target {
                Target::Server(client) => client.call(Method::GET, &path(&email), None).await?,
                Target::Store(accounts) => {
                    serde_json::to_value(accounts.alias_list(&email).await?)?
                }
            };
            if json {
                println!("{aliases}");
            } else {
                for alias in aliases.as_array().into_iter().flatten() {
                    println!("{}", alias.as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}

/// Where account commands go.
enum Target {
    Server(AdminClient),
    Store(Accounts),
}

impl Target {
    async fn reach(config: &Config) -> anyhow::Result<Self> {
        match AdminClient::discover(config).await? {
            Reach::Server(client) => Ok(Self::Server(client)),
            Reach::NoServer { addr } => {
                let store = match Store::open_existing(&config.server.data_dir) {
                    Ok(store) => store,
                    Err(StoreError::Locked(path)) => bail!(
                        "the store {} is in use by a running server, but its admin API at {addr} does not answer",
                        path.display()
                    ),
                    Err(StoreError::Missing(path)) => bail!(
                        "no server answers at {addr} and there is no store at {} (start `mailwarden serve` once, or pass --config)",
                        path.display()
                    ),
                    Err(e) => bail!("{e}"),
                };
                let passwords = Arc::new(Passwords::new(4)?);
                Ok(Self::Store(Accounts::new(
                    store,
                    passwords,
                    Arc::new(SystemClock),
                    Arc::new(TracingEvents),
                )))
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

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'@' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
