//! Command-line options of the load tool.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tls {
    /// Port 587 style: EHLO, STARTTLS, EHLO again.
    Starttls,
    /// Port 465 style: TLS from the first byte.
    Implicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mechanism {
    Plain,
    Login,
}

/// SMTP submission load generator (loopback only).
///
/// Closed loop by default: every session sends its next message as soon as
/// the last one got its 250. With --rate, messages are due at a fixed
/// offered rate and latency counts from the moment a message was due, so a
/// server that falls behind shows it (no coordinated omission).
#[derive(Parser, Debug)]
#[command(name = "load")]
pub struct Options {
    /// Server address (loopback only), e.g. 127.0.0.1:587.
    pub addr: SocketAddr,
    /// AUTH user (a full address; also the envelope and header sender).
    pub user: String,
    /// AUTH password (a device password for mailwarden).
    pub password: String,
    /// PEM file with the certificate(s) to trust.
    pub ca_file: String,
    #[arg(long, value_enum, default_value = "starttls")]
    pub tls: Tls,
    #[arg(long, value_enum, default_value = "plain")]
    pub auth: Mechanism,
    /// Sessions at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Messages in all (the run also stops at --duration).
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Longest run, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub duration: f64,
    /// Messages per SMTP session (each session: connect, TLS, AUTH once).
    #[arg(long, default_value_t = 10)]
    pub per_session: usize,
    /// Message size in bytes (headers included).
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    pub rcpts: usize,
    /// Offered rate in messages per second (open loop); 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Resume TLS sessions (as many real clients do); off by default so
    /// every session pays a full handshake.
    #[arg(long)]
    pub resume: bool,
    /// Server process(es) whose CPU (with all their children) is measured.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// mailwarden metrics listener: prints fsyncs and deliveries per message.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Before the load, open this many idle sessions (TLS, EHLO, AUTH) from
    /// 127.1.x.y sources, 20 per address, and report the server's memory.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// Seconds to wait for one reply before counting a timeout.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Print one JSON object with the figures instead of text.
    #[arg(long)]
    pub json: bool,
    /// A file of accounts, one "address password" per line: session k
    /// sends as line k (mod their number) instead of USER/PASSWORD, so the
    /// load comes from many accounts at once.
    #[arg(long)]
    pub accounts: Option<String>,
    /// A label for the run, printed with the figures.
    #[arg(long, default_value = "")]
    pub label: String,
}

impl Options {
    pub fn parse_checked() -> Options {
        // `cargo bench` passes --bench; drop it.
        let args = std::env::args().filter(|a| a != "--bench");
        let o = Options::parse_from(args);
        if !o.addr.ip().is_loopback() {
            eprintln!("load: only loopback addresses are allowed, not {}", o.addr);
            std::process::exit(2);
        }
        if o.per_session == 0 || o.rcpts == 0 || o.concurrency == 0 {
            eprintln!("load: --per-session, --rcpts and --concurrency must be at least 1");
            std::process::exit(2);
        }
        o
    }

    /// (address, password) of every account sessions send as.
    pub fn senders(&self) -> Vec<(String, String)> {
        let Some(path) = &self.accounts else {
            return vec![(self.user.clone(), self.password.clone())];
        };
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("load: cannot read {path}: {e}");
            std::process::exit(2);
        });
        let senders: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        if senders.is_empty() {
            eprintln!("load: {path} has no \"address password\" line");
            std::process::exit(2);
        }
        senders
    }

    pub fn reply_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}
