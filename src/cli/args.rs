//! The command line as clap reads it, and the account commands as admin
//! API requests.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use super::read_new_password;
use crate::admin::ops::Request;
use crate::telemetry::LogFormat;

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
        /// Start a new, empty store even though this data folder was used
        /// before (its store file is missing, empty or not its own).
        #[arg(long)]
        init: bool,
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
    /// Store tools.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Read every table and record; exit 1 and list what is wrong.
    Check,
    /// Bring the shared PostgreSQL database's schema up to date
    /// (`store.backend = "postgres"`; `serve` also does it at start).
    Migrate,
    /// Copy this install's accounts (blocks, history, aliases) and the
    /// scorer's states into a PostgreSQL database; run it again to copy
    /// again. The server must be stopped.
    Copy {
        /// postgres://user:password@host:port/database
        #[arg(long, value_name = "URL")]
        to: String,
    },
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
    /// Replay recorded traffic (JSON lines, docs/policy.md) through the
    /// scorer with this configuration's [policy]; prints each message's
    /// decision. FILE `-` reads standard input.
    Replay {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print no decisions before this time (RFC 3339): warm-up traffic.
        #[arg(long, value_name = "TIME")]
        report_from: Option<String>,
    },
    /// Feed a complaint (an ARF report, RFC 5965) to the scorer: the
    /// account that sent the reported message earns `weight_complaint`.
    /// FILE `-` reads standard input.
    Complaint {
        #[arg(value_name = "FILE")]
        file: PathBuf,
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
    /// Mark a network (CIDR, or one address) as the account's own: changes
    /// from it may lift a block (the office; the owner's networks after a
    /// migration). Logged and notified to the account.
    Trust { email: String, network: String },
    /// Set the recovery address; it is sent a link to confirm it. Once
    /// confirmed, and 7 days after it was set, it can receive a recovery
    /// link during a block, and it gets a copy of security notices.
    Recovery { email: String, recovery: String },
    /// Recovery: new password, 2FA off, device passwords revoked, operator block.
    Reset {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create accounts with their existing password hashes, from a
    /// Dovecot passwd-file (`user@domain:{SCHEME}hash:...`) or a CSV
    /// (`address,{SCHEME}hash`). Schemes: SHA512-CRYPT, SHA256-CRYPT,
    /// BLF-CRYPT, ARGON2I, ARGON2ID. A bad line imports nothing; existing
    /// accounts are never overwritten.
    Import {
        file: PathBuf,
        /// Check the file and say what would happen, changing nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// Try to deliver a message now; or with --all every queued message,
    /// or with --domain those with a recipient at DOMAIN (held mail stays
    /// held).
    Retry {
        #[arg(required_unless_present_any = ["all", "domain"], conflicts_with_all = ["all", "domain"])]
        id: Option<String>,
        #[arg(long, conflicts_with = "domain")]
        all: bool,
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
    },
    /// Release a held message for delivery.
    Release { id: String },
    /// Delete a message from the queue (it is not delivered).
    Delete { id: String },
}

pub(super) fn account_request(command: AccountCommand) -> anyhow::Result<Request> {
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
        AccountCommand::Recovery { email, recovery } => Request::AccountRecovery {
            address: email,
            recovery,
        },
        AccountCommand::Trust { email, network } => Request::AccountTrust {
            address: email,
            network,
        },
        AccountCommand::Reset {
            email,
            password_stdin,
        } => Request::AccountReset {
            address: email,
            password: read_new_password(password_stdin)?,
        },
        AccountCommand::Import { file, dry_run } => Request::AccountImport {
            text: std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?,
            dry_run,
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
