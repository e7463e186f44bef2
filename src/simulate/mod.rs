//! A population replayed over simulated days against the real scorer:
//! ordinary users, honest heavy senders with unusual days, and hijacked
//! accounts (`population`), each with a real mail program's habits
//! (`programs`). It prints, per profile, how much got out before a block,
//! and how many honest accounts were deferred or blocked.
//!
//! Run it: `mailwarden policy simulate [--days N] [--seed S]`.

mod population;
mod programs;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use self::population::{Kind, Send, WARMUP_DAYS};
use crate::accounts::Account;
use crate::app::{App, Open, Overrides};
use crate::clock::ManualClock;
use crate::config::{Config, PolicyConfig};
use crate::events::TracingEvents;
use crate::policy::{Decision, MailContext, MessageContext, Policy};

const DAY: u64 = 86_400;
const HOUR: u64 = 3600;
/// Monday 2026-11-02 00:00 UTC: day 0 of the report.
const START: u64 = 1_793_577_600;

/// A tiny deterministic generator (xorshift64*), so runs repeat.
pub(crate) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// One row of the result table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    pub profile: &'static str,
    pub hijack: bool,
    pub accounts: usize,
    /// Messages accepted (honest: in the reported days).
    pub messages: usize,
    /// Submissions answered 451 (each retry counts).
    pub deferred: usize,
    pub blocked_accounts: usize,
    /// Hijacks: the most messages, and recipients, any thief got out
    /// before the block (or in all, if never blocked).
    pub worst_out_before_block: usize,
    pub worst_recipients_out: usize,
    /// Hijacks never blocked.
    pub never_blocked: usize,
}

#[derive(serde::Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn honest_deferred_share(&self) -> f64 {
        let (d, m) = self
            .rows
            .iter()
            .filter(|r| !r.hijack)
            .fold((0, 0), |(d, m), r| (d + r.deferred, m + r.messages));
        d as f64 / m.max(1) as f64
    }

    pub fn table(&self) -> String {
        let mut out = String::from(
            "| profile | kind | accounts | messages sent | deferred | accounts blocked | most out before block (messages / recipients) |\n|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.profile,
                if r.hijack { "hijack" } else { "honest" },
                r.accounts,
                r.messages,
                r.deferred,
                r.blocked_accounts,
                if r.hijack {
                    format!(
                        "{} / {}{}",
                        r.worst_out_before_block,
                        r.worst_recipients_out,
                        if r.never_blocked > 0 {
                            format!(" ({} never blocked)", r.never_blocked)
                        } else {
                            String::new()
                        }
                    )
                } else {
                    "-".into()
                }
            ));
        }
        out.push_str(&format!(
            "\nhonest messages deferred: {:.3} %\n",
            self.honest_deferred_share() * 100.0
        ));
        out
    }
}

/// A submission waiting for its time: the heap pops the earliest.
struct Pending(Send, u64);

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.0.at, self.1) == (o.0.at, o.1)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0.at, self.1).cmp(&(o.0.at, o.1))
    }
}

/// Runs the population for `days` reported days (after three weeks of
/// history) against a scorer with `config`.
pub async fn run(policy: PolicyConfig, days: u64, seed: u64) -> anyhow::Result<Report> {
    let dir = crate::files::scratch_dir("mailwarden-sim")?;
    let begin = START - (WARMUP_DAYS + 1) * DAY;
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(begin)));
    // The application as `serve` assembles it, on a scratch data folder:
    // blocks are recorded, held and noticed as they would be for real.
    let mut config = Config::embedded_default()?;
    config.server.data_dir = dir.clone();
    config.server.secret_key_file = None;
    config.policy = policy;
    // Without the `testing` feature the clock is the only override.
    #[cfg_attr(not(feature = "testing"), allow(clippy::needless_update))]
    let overrides = Overrides {
        clock: Some(clock.clone()),
        ..Overrides::default()
    };
    let app = App::open(
        &config,
        Open::CreateIfMissing,
        Arc::new(TracingEvents::default()),
        overrides,
    )?;
    let (store, scorer, ledger) = (app.store.clone(), app.scorer.clone(), app.ledger.clone());
    let mut rng = Rng(seed | 1);
    let population = population::build(days, &mut rng);
    for m in &population.members {
        let created = if m.profile == "new account at the floor" {
            START
        } else {
            START - 400 * DAY
        };
        let account = Account::new(m.address.clone(), String::new(), created);
        store
            .account_create(&account)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    let n = population.members.len();
    let mut blocked = vec![false; n];
    let mut out = vec![(0usize, 0usize); n];
    let mut rows: BTreeMap<&'static str, Row> = BTreeMap::new();
    for m in &population.members {
        let row = rows.entry(m.profile).or_insert_with(|| Row {
            profile: m.profile,
            hijack: m.kind == Kind::Hijack,
            ..Row::default()
        });
        row.accounts += 1;
    }
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    for send in population.sends {
        let fresh = population.members[send.account].fresh && send.at < START;
        if !fresh {
            seq += 1;
            queue.push(Reverse(Pending(send, seq)));
        }
    }
    let mut logins = population.logins.iter().peekable();
    let mut machines_rng = Rng(seed.wrapping_mul(31) | 1);
    while let Some(Reverse(Pending(send, _))) = queue.pop() {
        while let Some((at, a, from)) = logins.peek() {
            if *at > send.at {
                break;
            }
            set_time(&clock, *at);
            ledger.observe_login(&population.members[*a].address, *from);
            logins.next();
        }
        let member = &population.members[send.account];
        if blocked[send.account] {
            continue;
        }
        set_time(&clock, send.at);
        let address = &member.address;
        ledger.observe_login(address, send.ip);
        let reported = send.at >= START;
        let thief = member.kind == Kind::Hijack && send.at >= member.hijack_from;
        let hints = send.program.hints(&member.machine, &mut machines_rng);
        let mail = MailContext {
            account: address,
            client_ip: send.ip,
            from: address,
            declared_size: 0,
        };
        let message = send.program.render(
            address,
            send.display.as_deref(),
            send.recipients.len(),
            &send.message_id,
            &send.body,
        );
        let mut decision = scorer.on_mail(&mail).await;
        if decision == Decision::Accept {
            let ctx = MessageContext {
                account: address,
                client_ip: send.ip,
                from: address,
                recipients: &send.recipients,
                message: message.as_bytes(),
                client: &hints,
                features: None,
            };
            decision = scorer.on_message(&ctx).await;
        }
        let row = rows.get_mut(member.profile).expect("row");
        match decision {
            Decision::Accept => {
                if reported && (member.kind == Kind::Honest || thief) {
                    row.messages += 1;
                }
                if thief {
                    out[send.account].0 += 1;
                    out[send.account].1 += send.recipients.len();
                }
            }
            Decision::Defer | Decision::Unavailable => {
                if reported {
                    row.deferred += 1;
                }
                let attempt = send.attempt + 1;
                if let Some(after) = send.program.retry_after(attempt, &mut rng) {
                    seq += 1;
                    let mut again = send.clone();
                    again.at += after;
                    again.attempt = attempt;
                    queue.push(Reverse(Pending(again, seq)));
                }
            }
            Decision::Block(_) => {
                blocked[send.account] = true;
                if reported || thief {
                    row.blocked_accounts += 1;
                }
            }
        }
    }
    for (i, m) in population.members.iter().enumerate() {
        if m.kind == Kind::Hijack {
            let row = rows.get_mut(m.profile).expect("row");
            row.worst_out_before_block = row.worst_out_before_block.max(out[i].0);
            row.worst_recipients_out = row.worst_recipients_out.max(out[i].1);
            if !blocked[i] {
                row.never_blocked += 1;
            }
        }
    }
    app.close().await;
    drop((scorer, ledger, store, app));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by_key(|r| (r.hijack, r.profile));
    Ok(Report { rows })
}

fn set_time(clock: &ManualClock, at: u64) {
    clock.advance_to(UNIX_EPOCH + Duration::from_secs(at));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_population_stays_within_the_bounds() {
        let report = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(PolicyConfig::default(), 7, 1))
            .unwrap();
        println!("{}", report.table());
        for row in &report.rows {
            if row.hijack {
                assert_eq!(row.never_blocked, 0, "{row:?}");
                assert!(row.worst_out_before_block <= 10, "{row:?}");
                assert!(row.worst_recipients_out <= 200, "{row:?}");
            } else {
                assert_eq!(row.blocked_accounts, 0, "{row:?}");
            }
        }
        assert!(report.honest_deferred_share() <= 0.001);
    }
}
