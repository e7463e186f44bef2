//! `mailwarden policy replay FILE|-`: recorded traffic through the same
//! assembly the server uses (scorer, accounts, blocks, probation,
//! escalation) on a scratch store, with a clock that follows the input.
//! For each message it prints the decision the server would have made.
//! The input format is in docs/policy.md ("Replaying traffic").

mod input;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use self::input::{Line, SessionId, Via};
use crate::accounts::{Account, Origin};
use crate::app::{App, Open, Overrides};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::events::{Event, EventKind, Listener};
use crate::policy::{ClientHints, Decision, MailContext, MessageContext, Policy};
use crate::smtp::reply;

/// A login older than this does not cover a message: the message counts
/// as a login of its own.
const LOGIN_COVERS: f64 = 24.0 * 3600.0;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub accounts: usize,
    pub messages: usize,
    pub accepted: usize,
    pub deferred: usize,
    pub blocked: usize,
}

/// What `policy replay` prints per message.
#[derive(Debug, Serialize)]
pub struct DecisionLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub at: String,
    pub account: String,
    pub decision: &'static str,
    pub reply: String,
    pub score: f64,
    pub signals: BTreeMap<&'static str, f64>,
}

/// A decision's score and its points by signal.
type Scored = (f64, Vec<(&'static str, f64)>);

/// The scorer's last decision, heard as a typed event.
#[derive(Default)]
struct LastDecision(Mutex<Option<Scored>>);

impl Listener for LastDecision {
    fn hear(&self, event: &Event) {
        if event.kind == EventKind::PolicyDecision {
            let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *last = Some((
                event.score.unwrap_or(0.0),
                event.signals.clone().unwrap_or_default(),
            ));
        }
    }
}

pub struct Options {
    pub json: bool,
    /// Decisions before this time (Unix seconds) are not printed.
    pub report_from: Option<f64>,
}

/// Replays `input` with `config`'s [policy] and [accounts]; prints to
/// `out`. Returns the summary and whether any line was bad.
pub async fn run(
    config: &Config,
    input: impl BufRead,
    out: &mut impl Write,
    options: &Options,
) -> anyhow::Result<(Summary, bool)> {
    let dir = crate::files::scratch_dir("mailwarden-replay")?;
    let result = replay(config, &dir, input, out, options).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

struct Session {
    hints: ClientHints,
}

async fn replay(
    config: &Config,
    dir: &std::path::Path,
    input: impl BufRead,
    out: &mut impl Write,
    options: &Options,
) -> anyhow::Result<(Summary, bool)> {
    let mut config = config.clone();
    config.server.data_dir = dir.to_path_buf();
    config.server.secret_key_file = None;
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH));
    let last = Arc::new(LastDecision::default());
    #[cfg_attr(not(feature = "testing"), allow(clippy::needless_update))]
    let overrides = Overrides {
        clock: Some(clock.clone()),
        ..Overrides::default()
    };
    let app = App::open(&config, Open::CreateIfMissing, last.clone(), overrides)?;
    let mut summary = Summary::default();
    let mut bad = false;
    let mut now = 0.0f64;
    let mut known: HashSet<String> = HashSet::new();
    let mut sessions: HashMap<SessionId, Session> = HashMap::new();
    // (account, ip) → (time of the last good login, its session's hints).
    let mut logins: HashMap<(String, IpAddr), (f64, ClientHints)> = HashMap::new();
    let error = |out: &mut dyn Write, n: usize, message: String| -> anyhow::Result<()> {
        let line = serde_json::json!({"type": "error", "line": n, "message": message});
        if options.json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "line {n}: {message}")?;
        }
        Ok(())
    };
    for (i, text) in input.lines().enumerate() {
        let n = i + 1;
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        let timed = match input::parse(&text) {
            Ok(t) => t,
            Err(e) => {
                bad = true;
                error(out, n, e)?;
                continue;
            }
        };
        if timed.at < now {
            bad = true;
            error(
                out,
                n,
                format!("`at` {} is earlier than the line before", timed.at_text),
            )?;
            continue;
        }
        now = timed.at;
        set_time(&clock, now);
        let account_of = |line: &Line| match line {
            Line::Account { account }
            | Line::Auth { account, .. }
            | Line::Message { account, .. }
            | Line::Bounce { account, .. }
            | Line::Complaint { account }
            | Line::Unblock { account, .. } => account.to_ascii_lowercase(),
        };
        let account = account_of(&timed.line);
        if !known.contains(&account) {
            // Declared accounts are new; others are old accounts the
            // scorer has no history of.
            let created = match timed.line {
                Line::Account { .. } => now as u64,
                _ => (now as u64).saturating_sub(400 * 86_400),
            };
            let record = Account::new(account.clone(), String::new(), created);
            if let Err(e) = app.store.account_create(&record) {
                bad = true;
                error(out, n, format!("account {account}: {e}"))?;
                continue;
            }
            known.insert(account.clone());
            summary.accounts += 1;
        }
        match timed.line {
            Line::Account { .. } => {}
            Line::Auth {
                ip,
                ok,
                password,
                helo,
                session,
                tls,
                mech,
                credential,
                ..
            } => {
                let hints = ClientHints {
                    helo,
                    tls_version: tls.as_ref().and_then(|t| t.version.clone()),
                    tls_cipher: tls.as_ref().and_then(|t| t.cipher.clone()),
                    mechanism: mech,
                    credential,
                };
                if ok {
                    app.ledger.observe_login(&account, ip);
                    if let Some(id) = session {
                        sessions.insert(
                            id,
                            Session {
                                hints: hints.clone(),
                            },
                        );
                    }
                    logins.insert((account, ip), (now, hints));
                } else {
                    // One wrong password typed again is one mistake.
                    let tag =
                        password.map(|p| crate::policy::scorer::content::stable_hash(p.as_bytes()));
                    app.ledger.observe_auth_failure(&account, tag);
                }
            }
            Line::Message {
                ip,
                mail_from,
                rcpts,
                helo,
                session,
                headers,
                body,
                features,
                ..
            } => {
                let covered = logins
                    .get(&(account.clone(), ip))
                    .is_some_and(|(at, _)| now - at <= LOGIN_COVERS);
                if !covered {
                    app.ledger.observe_login(&account, ip);
                    logins.insert((account.clone(), ip), (now, ClientHints::default()));
                }
                let mut hints = session
                    .as_ref()
                    .and_then(|id| sessions.get(id))
                    .map(|s| s.hints.clone())
                    .or_else(|| logins.get(&(account.clone(), ip)).map(|l| l.1.clone()))
                    .unwrap_or_default();
                if helo.is_some() {
                    hints.helo = helo;
                }
                let from = mail_from.unwrap_or_else(|| account.clone());
                let message = match (&headers, &body) {
                    (None, None) => String::new(),
                    (h, b) => format!(
                        "{}\r\n\r\n{}",
                        h.as_deref().unwrap_or("").trim_end(),
                        b.as_deref().unwrap_or("")
                    ),
                };
                let mail = MailContext {
                    account: &account,
                    client_ip: ip,
                    from: &from,
                    declared_size: 0,
                };
                *last.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let mut decision = app.scorer.on_mail(&mail).await;
                if decision == Decision::Accept {
                    let ctx = MessageContext {
                        account: &account,
                        client_ip: ip,
                        from: &from,
                        recipients: &rcpts,
                        message: message.as_bytes(),
                        client: &hints,
                        features: if headers.is_none() && body.is_none() {
                            features.as_ref()
                        } else {
                            None
                        },
                    };
                    decision = app.scorer.on_message(&ctx).await;
                }
                let (score, signals) = last
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                let (name, reply) = match &decision {
                    Decision::Accept => ("accepted", reply::queued("replayed")),
                    Decision::Defer => ("deferred", reply::RATE_LIMITED),
                    // The replay's store is embedded: never out of reach.
                    Decision::Unavailable => ("deferred", reply::NOT_QUEUED),
                    Decision::Block(b) => (
                        "blocked",
                        reply::blocked(b, config.server.support_contact.as_deref()),
                    ),
                };
                let reported = options.report_from.is_none_or(|from| now >= from);
                if !reported {
                    continue;
                }
                summary.messages += 1;
                match name {
                    "accepted" => summary.accepted += 1,
                    "deferred" => summary.deferred += 1,
                    _ => summary.blocked += 1,
                }
                let line = DecisionLine {
                    kind: "decision",
                    at: timed.at_text,
                    account: account.clone(),
                    decision: name,
                    reply: format!("{} {}", reply.code, reply.text),
                    score: (score * 100.0).round() / 100.0,
                    signals: signals.into_iter().collect(),
                };
                if options.json {
                    writeln!(out, "{}", serde_json::to_string(&line)?)?;
                } else {
                    writeln!(
                        out,
                        "{} {} {} score {:.2} {}",
                        line.at,
                        line.account,
                        line.decision,
                        line.score,
                        line.signals
                            .iter()
                            .map(|(k, v)| format!("{k}={v:.1}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    )?;
                }
                // Flushed before the next line is read: a pipe sees each
                // decision as it is made.
                out.flush()?;
            }
            Line::Bounce { permanent, .. } => {
                if permanent {
                    app.ledger.observe_delivery(&account, 0, 1);
                } else {
                    app.ledger.observe_delivery(&account, 1, 0);
                }
            }
            Line::Complaint { .. } => app.ledger.observe_complaint(&account),
            Line::Unblock { via, .. } => {
                let origin = Origin {
                    via: match via {
                        Via::SelfService => "rule",
                        Via::Operator => "cli",
                    },
                    ip: None,
                    enrolment: None,
                    recovery_for: None,
                };
                // Not blocked: nothing to lift, and not an input error.
                let _ = app.accounts.unblock(&account, &origin).await;
            }
        }
    }
    app.close().await;
    Ok((summary, bad))
}

fn set_time(clock: &ManualClock, at: f64) {
    clock.advance_to(UNIX_EPOCH + Duration::from_secs_f64(at));
}
