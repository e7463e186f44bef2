//! A population replayed over simulated days against the real scorer:
//! ordinary users, honest heavy senders, and hijacked accounts. It prints,
//! per profile, how many messages got out before a block, and how many
//! honest accounts were deferred or blocked.
//!
//! Run it: `mailwarden policy simulate [--days N] [--seed S]`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::accounts::Account;
use crate::app::{App, Open, Overrides};
use crate::clock::{Clock, ManualClock};
use crate::config::{Config, PolicyConfig};
use crate::events::TracingEvents;
use crate::policy::{Decision, MailContext, MessageContext, Policy};

const DAY: u64 = 86_400;
const HOUR: u64 = 3600;
/// Monday 2026-11-02 00:00 UTC.
const START: u64 = 1_793_577_600;

/// A tiny deterministic generator (xorshift64*), so runs repeat.
struct Rng(u64);

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

#[derive(Clone)]
struct Send {
    at: u64,
    account: usize,
    ip: IpAddr,
    recipients: Vec<String>,
    body: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Honest,
    Hijack,
}

struct Member {
    profile: &'static str,
    kind: Kind,
    address: String,
    /// For hijacks: when the thief starts (messages before are the owner's).
    hijack_from: u64,
}

/// One row of the result table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    pub profile: &'static str,
    pub hijack: bool,
    pub accounts: usize,
    pub messages: usize,
    pub deferred: usize,
    pub blocked_accounts: usize,
    /// Hijacks: the most messages any thief got out before the block.
    pub worst_out_before_block: usize,
    /// Hijacks never blocked (their messages all got out).
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
            "| profile | kind | accounts | messages sent | deferred | accounts blocked | most out before block |\n|---|---|---|---|---|---|---|\n",
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
                    r.worst_out_before_block.to_string()
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

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn contacts(prefix: &str, n: usize, domains: &[&str]) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i}@{}", domains[i % domains.len()]))
        .collect()
}

fn personal_body(rng: &mut Rng) -> String {
    const WORDS: &[&str] = &[
        "meeting", "tomorrow", "invoice", "lunch", "project", "draft", "thanks", "call", "report",
        "weekend", "budget", "photos", "schedule", "review", "question", "update", "friday",
        "plan", "notes", "idea",
    ];
    let n = 8 + rng.below(30) as usize;
    let words: Vec<&str> = (0..n)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    format!("Hi,\n{}\nBest\n", words.join(" "))
}

const SPAM: &str = "Dear customer,\nYour account needs verification. Click the secure link below to confirm your details within 24 hours or it will be suspended.\nhttps://secure-login.example-verify.top/confirm\n";

fn phishing(rng: &mut Rng) -> String {
    let mut body = String::from("Hello,\nPlease review the attached statements and confirm:\n");
    for i in 0..8 {
        body.push_str(&format!(
            "https://s{}.lure{}.example{}/doc\n",
            rng.below(1000),
            i,
            i
        ));
    }
    body
}

/// Business hours on weekdays, 8:00–18:00.
fn business_time(rng: &mut Rng, day: u64) -> Option<u64> {
    if day % 7 >= 5 {
        return None;
    }
    Some(START + day * DAY + 8 * HOUR + rng.below(10 * HOUR))
}

struct Population {
    members: Vec<Member>,
    sends: Vec<Send>,
    /// (time, account, ip): logins that are not followed by a send here.
    logins: Vec<(u64, usize, IpAddr)>,
    /// Established accounts: home network and known contacts before day 0.
    history: Vec<(usize, IpAddr, Vec<String>)>,
}

impl Population {
    fn send(&mut self, at: u64, account: usize, ip: IpAddr, recipients: Vec<String>, body: String) {
        self.sends.push(Send {
            at,
            account,
            ip,
            recipients,
            body,
        });
    }

    fn member(&mut self, profile: &'static str, kind: Kind, hijack_from: u64) -> usize {
        let i = self.members.len();
        self.members.push(Member {
            profile,
            kind,
            address: format!("user{i}@{}.example", profile.replace(' ', "-")),
            hijack_from,
        });
        i
    }
}

fn build(days: u64, rng: &mut Rng) -> Population {
    let mut p = Population {
        members: Vec::new(),
        sends: Vec::new(),
        logins: Vec::new(),
        history: Vec::new(),
    };
    let ext = [
        "gmail.example",
        "outlook.example",
        "yahoo.example",
        "partner.example",
        "client.example",
    ];

    // Ordinary users: a home network, a phone that changes carrier address,
    // mostly known contacts.
    for _ in 0..40 {
        let a = p.member("ordinary user", Kind::Honest, u64::MAX);
        let home = ip(100, 64 + (a % 50) as u8, a as u8, 10);
        let known = contacts(&format!("c{a}-"), 25, &ext);
        p.history.push((a, home, known.clone()));
        for day in 0..days {
            for _ in 0..rng.below(12) {
                let at = START + day * DAY + 7 * HOUR + rng.below(15 * HOUR);
                let on_phone = rng.chance(0.15);
                let from = if on_phone {
                    ip(172, 20 + rng.below(8) as u8, rng.below(250) as u8, 9)
                } else {
                    home
                };
                let n = 1 + rng.below(3) as usize;
                let recipients = (0..n)
                    .map(|k| {
                        if rng.chance(0.8) {
                            known[rng.below(known.len() as u64) as usize].clone()
                        } else {
                            format!(
                                "new{a}-{day}-{k}-{}@{}",
                                rng.below(1000),
                                ext[rng.below(5) as usize]
                            )
                        }
                    })
                    .collect();
                let body = personal_body(rng);
                p.send(at, a, from, recipients, body);
            }
        }
    }

    // An office of 40 users behind one NAT address.
    let office = ip(203, 0, 113, 50);
    for _ in 0..40 {
        let a = p.member("office behind one NAT", Kind::Honest, u64::MAX);
        let known = contacts(
            &format!("o{a}-"),
            30,
            &["office.example", "client.example", "partner.example"],
        );
        p.history.push((a, office, known.clone()));
        for day in 0..days {
            for _ in 0..rng.below(15) {
                let Some(at) = business_time(rng, day) else {
                    continue;
                };
                let recipients = (0..1 + rng.below(4))
                    .map(|_| known[rng.below(known.len() as u64) as usize].clone())
                    .collect();
                let body = personal_body(rng);
                p.send(at, a, office, recipients, body);
            }
        }
    }

    // Small businesses: about 300 recipients a day, many of them new
    // customers, half the messages from one invoice template.
    for _ in 0..5 {
        let a = p.member("small business, 300 rcpts/day", Kind::Honest, u64::MAX);
        let shop = ip(198, 18, a as u8, 20);
        let known = contacts(&format!("b{a}-"), 200, &ext);
        p.history.push((a, shop, known.clone()));
        let template = "Hello,\nThank you for your order. Your invoice is attached; payment is due within thirty days.\nKind regards, the shop\n";
        for day in 0..days {
            for m in 0..100 {
                let Some(at) = business_time(rng, day) else {
                    continue;
                };
                let recipients = (0..1 + rng.below(5))
                    .map(|k| {
                        if rng.chance(0.6) {
                            known[rng.below(known.len() as u64) as usize].clone()
                        } else {
                            format!("cust{a}-{day}-{m}-{k}@{}", ext[rng.below(5) as usize])
                        }
                    })
                    .collect();
                let body = if rng.chance(0.5) {
                    template.to_string()
                } else {
                    personal_body(rng)
                };
                p.send(at, a, shop, recipients, body);
            }
        }
    }

    // A weekly club mailing to 150 members, in three batches of 50.
    for _ in 0..3 {
        let a = p.member("weekly club mailing to 150", Kind::Honest, u64::MAX);
        let home = ip(100, 100, a as u8, 7);
        let members = contacts(&format!("m{a}-"), 150, &ext);
        p.history
            .push((a, home, contacts(&format!("f{a}-"), 10, &ext)));
        for week in 0..days.div_ceil(7) {
            let at = START + week * 7 * DAY + 3 * DAY + 19 * HOUR;
            let body = format!(
                "Club news for week {week}.\nTraining moves to the north field, bring your own water and a smile.\n"
            );
            for batch in members.chunks(50) {
                p.send(at + rng.below(120), a, home, batch.to_vec(), body.clone());
            }
        }
    }

    // A support desk answering hundreds of distinct customers a day.
    for _ in 0..3 {
        let a = p.member("support desk, 350 customers/day", Kind::Honest, u64::MAX);
        let desk = ip(198, 19, a as u8, 30);
        p.history
            .push((a, desk, contacts(&format!("s{a}-"), 20, &ext)));
        let canned = "Hello,\nThank you for contacting support. We have received your request and will reply within one business day.\nSupport team\n";
        for day in 0..days {
            for m in 0..350 {
                let Some(at) = business_time(rng, day) else {
                    continue;
                };
                let recipients = vec![format!(
                    "ticket{a}-{day}-{m}@{}",
                    ext[rng.below(5) as usize]
                )];
                let body = if rng.chance(0.3) {
                    canned.to_string()
                } else {
                    personal_body(rng)
                };
                p.send(at, a, desk, recipients, body);
            }
        }
    }

    // New accounts at the floor: 20 a minute, 100 an hour, up to 5
    // recipients from a set of 10, one network.
    for _ in 0..5 {
        let a = p.member("new account at the floor", Kind::Honest, u64::MAX);
        let net = ip(100, 90, a as u8, 3);
        let set = contacts(&format!("n{a}-"), 10, &ext);
        for burst in 0..5u64 {
            let minute = START + 9 * HOUR + burst * 12 * 60;
            for k in 0..20u64 {
                let recipients = (0..1 + rng.below(5))
                    .map(|_| set[rng.below(10) as usize].clone())
                    .collect();
                let body = personal_body(rng);
                p.send(minute + k * 2, a, net, recipients, body);
            }
        }
    }

    // Hijacks: an established account, then a thief from elsewhere.
    let hijacks: [(&'static str, u64); 5] = [
        ("hijack: burst", 0),
        ("hijack: slow drip", 1),
        ("hijack: logins from dozens of networks", 2),
        ("hijack: phishing with many link domains", 3),
        ("hijack: burst from the owner's own network", 4),
    ];
    for (profile, variant) in hijacks {
        for n in 0..4u64 {
            let start = START + (1 + n) * DAY + 10 * HOUR + rng.below(4 * HOUR);
            let a = p.member(profile, Kind::Hijack, start);
            let home = ip(100, 120 + variant as u8, n as u8, 8);
            let known = contacts(&format!("h{a}-"), 20, &ext);
            p.history.push((a, home, known.clone()));
            // The owner's own quiet traffic before.
            for d in 0..(1 + n) {
                let at = START + d * DAY + 9 * HOUR;
                let body = personal_body(rng);
                p.send(at, a, home, vec![known[d as usize % 20].clone()], body);
            }
            let thief = ip(45, 10 + variant as u8, n as u8, 66);
            let fresh = |k: u64, rng: &mut Rng| {
                format!("t{a}-{k}-{}@{}", rng.below(100_000), ext[(k % 5) as usize])
            };
            match variant {
                0 => {
                    for k in 0..200 {
                        let recipients = (0..10 + rng.below(40))
                            .map(|j| fresh(k * 100 + j, rng))
                            .collect();
                        p.send(start + k * 2, a, thief, recipients, SPAM.into());
                    }
                }
                1 => {
                    for k in 0..100 {
                        let recipients = (0..1 + rng.below(3))
                            .map(|j| fresh(k * 10 + j, rng))
                            .collect();
                        let body = SPAM.replace("customer", &format!("customer {k}"));
                        p.send(start + k * 240, a, thief, recipients, body);
                    }
                }
                2 => {
                    for k in 0..80 {
                        let from = ip(45, 100 + (k % 40) as u8, k as u8, 1);
                        p.logins.push((start + k * 30, a, from));
                        let recipients = (0..5).map(|j| fresh(k * 10 + j, rng)).collect();
                        p.send(start + k * 30 + 1, a, from, recipients, SPAM.into());
                    }
                }
                3 => {
                    for k in 0..60 {
                        let recipients = (0..3).map(|j| fresh(k * 10 + j, rng)).collect();
                        let body = phishing(rng);
                        p.send(start + k * 60, a, thief, recipients, body);
                    }
                }
                _ => {
                    // Malware on the owner's computer: the owner's network.
                    for k in 0..300 {
                        let recipients = (0..5 + rng.below(20))
                            .map(|j| fresh(k * 100 + j, rng))
                            .collect();
                        p.send(start + k * 3, a, home, recipients, SPAM.into());
                    }
                }
            }
        }
    }
    p.sends.sort_by_key(|s| s.at);
    p
}

/// Runs the population for `days` against a scorer with `config`.
pub async fn run(policy: PolicyConfig, days: u64, seed: u64) -> anyhow::Result<Report> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(START - 40 * DAY),
    ));
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
    let population = build(days, &mut rng);

    for (i, m) in population.members.iter().enumerate() {
        let floor = m.profile == "new account at the floor";
        let created = if floor { START } else { START - 60 * DAY };
        let account = Account::new(m.address.clone(), String::new(), created);
        store
            .account_create(&account)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = i;
    }
    // History: each established account logged in from its usual network
    // and mailed its contacts weeks ago.
    let mut moment = START - 40 * DAY;
    for (a, home, known) in &population.history {
        let address = &population.members[*a].address;
        set_time(&clock, moment);
        ledger.observe_login(address, *home);
        // Spread out, as the owner wrote them over the weeks before.
        for (i, chunk) in known.chunks(5).enumerate() {
            moment += 601;
            set_time(&clock, moment);
            let body = format!(
                "From: x\r\n\r\nold mail number {i} about the things we discussed last time\r\n"
            );
            let ctx = MessageContext {
                account: address,
                client_ip: *home,
                from: address,
                recipients: chunk,
                message: body.as_bytes(),
            };
            let _ = scorer.on_message(&ctx).await;
        }
    }

    let mut blocked = vec![false; population.members.len()];
    let mut out_before_block = vec![0usize; population.members.len()];
    let mut rows: BTreeMap<&'static str, Row> = BTreeMap::new();
    for m in &population.members {
        let row = rows.entry(m.profile).or_insert_with(|| Row {
            profile: m.profile,
            hijack: m.kind == Kind::Hijack,
            ..Row::default()
        });
        row.accounts += 1;
    }
    let mut logins = population.logins.iter().peekable();
    for send in &population.sends {
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
        let row = rows.get_mut(member.profile).expect("row");
        let mail = MailContext {
            account: address,
            client_ip: send.ip,
            from: address,
            declared_size: 0,
        };
        let message = format!(
            "From: <{address}>\r\nSubject: s\r\n\r\n{}",
            send.body.replace('\n', "\r\n")
        );
        let mut decision = scorer.on_mail(&mail).await;
        if decision == Decision::Accept {
            let ctx = MessageContext {
                account: address,
                client_ip: send.ip,
                from: address,
                recipients: &send.recipients,
                message: message.as_bytes(),
            };
            decision = scorer.on_message(&ctx).await;
        }
        let thief = member.kind == Kind::Hijack && send.at >= member.hijack_from;
        match decision {
            Decision::Accept => {
                row.messages += 1;
                if thief {
                    out_before_block[send.account] += 1;
                }
            }
            Decision::Defer | Decision::Unavailable => row.deferred += 1,
            Decision::Block(_) => {
                blocked[send.account] = true;
                row.blocked_accounts += 1;
            }
        }
    }
    for (i, m) in population.members.iter().enumerate() {
        if m.kind == Kind::Hijack {
            let row = rows.get_mut(m.profile).expect("row");
            if blocked[i] {
                row.worst_out_before_block = row.worst_out_before_block.max(out_before_block[i]);
            } else {
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
    let now = clock.unix();
    if at > now {
        clock.advance(Duration::from_secs(at - now));
    }
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let mut n = [0u8; 8];
    getrandom::fill(&mut n).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = std::env::temp_dir().join(format!("mailwarden-sim-{}", u64::from_le_bytes(n)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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
            } else {
                assert_eq!(row.blocked_accounts, 0, "{row:?}");
            }
        }
        assert!(report.honest_deferred_share() <= 0.001);
    }
}
