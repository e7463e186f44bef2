//! Who sends what in the simulation: honest profiles, including the
//! unusual days the first scorer blocked (a recruiter, an invoice run, a
//! travelling salesperson, a newsletter, the first mailing after
//! deployment), and thieves, including the ones it let through (malware in
//! office hours, a contact-list worm, low and slow, a BCC bomb, a thief who
//! waits a day, display-name phishing, a bot hammering through deferrals).

use std::net::{IpAddr, Ipv4Addr};

use super::programs::Program;
use super::{DAY, HOUR, Rng, START};

/// Days of ordinary traffic before day 0: accounts' histories, not reported.
pub const WARMUP_DAYS: u64 = 21;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Honest,
    Hijack,
}

pub struct Member {
    pub profile: &'static str,
    pub kind: Kind,
    pub address: String,
    /// For hijacks: when the thief starts (earlier mail is the owner's).
    pub hijack_from: u64,
    /// The owner's computer name.
    pub machine: String,
    /// The account's scorer history starts empty at day 0 (the first mail
    /// after mailwarden was deployed).
    pub fresh: bool,
}

#[derive(Clone)]
pub struct Send {
    pub at: u64,
    pub account: usize,
    pub ip: IpAddr,
    pub program: Program,
    pub recipients: Vec<String>,
    pub body: String,
    pub display: Option<String>,
    /// Kept across retries.
    pub message_id: String,
    pub attempt: u32,
}

pub struct Population {
    pub members: Vec<Member>,
    pub sends: Vec<Send>,
    /// Logins not followed by a send: (time, account, ip).
    pub logins: Vec<(u64, usize, IpAddr)>,
    next_id: u64,
}

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const FREEMAIL: &[&str] = &[
    "gmail.example",
    "outlook.example",
    "yahoo.example",
    "web.example",
    "icloud.example",
    "gmx.example",
];

/// A recipient at a freemail provider or at one of thousands of companies.
fn someone(rng: &mut Rng, tag: &str) -> String {
    let n = rng.below(1_000_000);
    if rng.chance(0.5) {
        format!(
            "{tag}{n}@{}",
            FREEMAIL[rng.below(FREEMAIL.len() as u64) as usize]
        )
    } else {
        format!("{tag}{n}@co{}.example", rng.below(5000))
    }
}

fn people(rng: &mut Rng, tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| someone(rng, tag)).collect()
}

fn pick<'a>(rng: &mut Rng, list: &'a [String]) -> &'a String {
    &list[rng.below(list.len() as u64) as usize]
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

/// Varied text with one fresh link: every message looks different.
fn varied_spam(rng: &mut Rng, k: u64) -> String {
    format!(
        "Hello friend {k},\n{}\nhttps://offer{}.example-deals.top/{k}\n",
        personal_body(rng),
        rng.below(5)
    )
}

/// Business hours on weekdays, 8:00–18:00 (day numbers may be negative:
/// the warm-up).
fn business_time(rng: &mut Rng, day: i64) -> Option<u64> {
    if (day + 70).rem_euclid(7) >= 5 {
        return None;
    }
    Some(at(day) + 8 * HOUR + rng.below(10 * HOUR))
}

fn at(day: i64) -> u64 {
    (START as i64 + day * DAY as i64) as u64
}

impl Population {
    fn member(&mut self, profile: &'static str, kind: Kind, hijack_from: u64) -> usize {
        let i = self.members.len();
        self.members.push(Member {
            profile,
            kind,
            address: format!(
                "user{i}@{}.example",
                profile.split(':').next().unwrap_or("x").replace(' ', "-")
            ),
            hijack_from,
            machine: format!("DESKTOP-{i:04}"),
            fresh: false,
        });
        i
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        at: u64,
        account: usize,
        ip: IpAddr,
        program: Program,
        recipients: Vec<String>,
        body: String,
        display: Option<String>,
    ) {
        self.next_id += 1;
        self.sends.push(Send {
            at,
            account,
            ip,
            program,
            recipients,
            body,
            display,
            message_id: format!("{}.{account}@sim", self.next_id),
            attempt: 0,
        });
    }
}

/// Every profile over `days` reported days (after the warm-up).
pub fn build(days: u64, rng: &mut Rng) -> Population {
    let mut p = Population {
        members: Vec::new(),
        sends: Vec::new(),
        logins: Vec::new(),
        next_id: 0,
    };
    let first = -(WARMUP_DAYS as i64);
    let last = days as i64;

    // Ordinary users: Thunderbird at home, the iPhone on the road (the
    // carrier's address changes), mostly known contacts.
    for _ in 0..40 {
        let a = p.member("ordinary user", Kind::Honest, u64::MAX);
        let home = ip(100, 64 + (a % 50) as u8, a as u8, 10);
        let known = people(rng, &format!("c{a}-"), 25);
        for day in first..last {
            for _ in 0..rng.below(8) {
                let t = at(day) + 7 * HOUR + rng.below(15 * HOUR);
                let (from, program) = if rng.chance(0.2) {
                    (
                        ip(172, 20 + rng.below(8) as u8, rng.below(250) as u8, 9),
                        Program::IPhone,
                    )
                } else {
                    (home, Program::Thunderbird)
                };
                let recipients = (0..1 + rng.below(3))
                    .map(|_| {
                        if rng.chance(0.85) {
                            pick(rng, &known).clone()
                        } else {
                            someone(rng, &format!("n{a}-"))
                        }
                    })
                    .collect();
                let body = personal_body(rng);
                p.send(t, a, from, program, recipients, body, None);
            }
        }
    }

    // An office of 30 users behind one NAT address, on Outlook.
    let office = ip(203, 0, 113, 50);
    for _ in 0..30 {
        let a = p.member("office behind one NAT", Kind::Honest, u64::MAX);
        let known = people(rng, &format!("o{a}-"), 40);
        for day in first..last {
            for _ in 0..rng.below(12) {
                let Some(t) = business_time(rng, day) else {
                    continue;
                };
                let recipients = (0..1 + rng.below(4))
                    .map(|_| {
                        if rng.chance(0.9) {
                            pick(rng, &known).clone()
                        } else {
                            someone(rng, &format!("p{a}-"))
                        }
                    })
                    .collect();
                let body = personal_body(rng);
                p.send(t, a, office, Program::Outlook, recipients, body, None);
            }
        }
    }

    // Small businesses: about 100 messages a day, many to new customers,
    // half from one invoice template.
    for _ in 0..4 {
        let a = p.member("small business, 300 rcpts/day", Kind::Honest, u64::MAX);
        let shop = ip(198, 18, a as u8, 20);
        let known = people(rng, &format!("b{a}-"), 200);
        let template = "Hello,\nThank you for your order. Your invoice is attached; payment is due within thirty days.\nKind regards, the shop\n";
        for day in first..last {
            for _ in 0..100 {
                let Some(t) = business_time(rng, day) else {
                    continue;
                };
                let recipients = (0..1 + rng.below(5))
                    .map(|_| {
                        if rng.chance(0.6) {
                            pick(rng, &known).clone()
                        } else {
                            someone(rng, &format!("cust{a}-"))
                        }
                    })
                    .collect();
                let body = if rng.chance(0.5) {
                    template.to_string()
                } else {
                    personal_body(rng)
                };
                p.send(t, a, shop, Program::Outlook, recipients, body, None);
            }
        }
    }

    // A support desk answering hundreds of distinct customers a day.
    for _ in 0..3 {
        let a = p.member("support desk, 350 customers/day", Kind::Honest, u64::MAX);
        let desk = ip(198, 19, a as u8, 30);
        let canned = "Hello,\nThank you for contacting support. We have received your request and will reply within one business day.\nSupport team\n";
        for day in first..last {
            for _ in 0..350 {
                let Some(t) = business_time(rng, day) else {
                    continue;
                };
                let recipients = vec![someone(rng, &format!("ticket{a}-"))];
                let body = if rng.chance(0.3) {
                    canned.to_string()
                } else {
                    personal_body(rng)
                };
                p.send(t, a, desk, Program::Thunderbird, recipients, body, None);
            }
        }
    }

    // A recruiter: 150 personalised messages a day to new people, each at
    // their own company, in two 2-hour sessions.
    for _ in 0..6 {
        let a = p.member("recruiter, 150 new people/day", Kind::Honest, u64::MAX);
        let office = ip(198, 20, a as u8, 40);
        for day in first..last {
            if (day + 70).rem_euclid(7) >= 5 {
                continue;
            }
            for session in [9, 14] {
                for k in 0..75u64 {
                    let t = at(day) + session * HOUR + k * 96 + rng.below(60);
                    let to = format!("cand{a}-{day}-{session}-{k}@co{}.example", rng.below(5000));
                    let body = format!(
                        "Dear candidate,\nI came across your profile and {}\nhttps://www.linkedin.example/in/recruiter{a}\n",
                        personal_body(rng)
                    );
                    p.send(t, a, office, Program::Outlook, vec![to], body, None);
                }
            }
        }
    }

    // A monthly invoice run: 40 customers, each at its own domain, in an
    // hour, from one template.
    for _ in 0..5 {
        let a = p.member("monthly invoice run to 40 domains", Kind::Honest, u64::MAX);
        let office = ip(198, 21, a as u8, 50);
        let customers: Vec<String> = (0..40)
            .map(|k| format!("billing@customer{a}x{k}.example"))
            .collect();
        let known = people(rng, &format!("i{a}-"), 15);
        let template = "Hello,\nplease find this month's invoice attached. Payment is due within fourteen days.\nhttps://pay.invoicing.example/i\n";
        for day in first..last {
            // Day 2 of each 28: two runs in a 28-day simulation's window.
            if (day + 70).rem_euclid(28) == 2 {
                for (k, c) in customers.iter().enumerate() {
                    let t = at(day) + 10 * HOUR + k as u64 * 80;
                    p.send(
                        t,
                        a,
                        office,
                        Program::Outlook,
                        vec![c.clone()],
                        template.into(),
                        None,
                    );
                }
            }
            for _ in 0..rng.below(6) {
                let Some(t) = business_time(rng, day) else {
                    continue;
                };
                let body = personal_body(rng);
                let to = vec![pick(rng, &known).clone()];
                p.send(t, a, office, Program::Outlook, to, body, None);
            }
        }
    }

    // A travelling salesperson: the laptop's Thunderbird from each night's
    // hotel network, template follow-ups to the day's prospects.
    for _ in 0..6 {
        let a = p.member("travelling salesperson", Kind::Honest, u64::MAX);
        let home = ip(100, 110, a as u8, 5);
        let known = people(rng, &format!("s{a}-"), 60);
        let template = "Hello,\nthank you for meeting me today. As promised, here is our catalogue and the price list we discussed.\nhttps://www.salescompany.example/catalogue\n";
        for day in first..last {
            let travelling = day >= 0 && (day + 70).rem_euclid(7) < 5;
            let hotel = ip(81, rng.below(250) as u8, rng.below(250) as u8, 17);
            let (from, hour) = if travelling { (hotel, 20) } else { (home, 18) };
            for k in 0..4 + rng.below(8) {
                let t = at(day) + hour * HOUR + k * 120 + rng.below(60);
                let to = if rng.chance(0.5) {
                    someone(rng, &format!("lead{a}-"))
                } else {
                    pick(rng, &known).clone()
                };
                let body = if rng.chance(0.7) {
                    template.to_string()
                } else {
                    personal_body(rng)
                };
                p.send(t, a, from, Program::Thunderbird, vec![to], body, None);
            }
        }
    }

    // A weekly newsletter to 300 subscribers in batches of 50 a minute
    // apart, with a few new subscribers each week.
    for _ in 0..5 {
        let a = p.member("weekly newsletter, batches of 50", Kind::Honest, u64::MAX);
        let home = ip(100, 100, a as u8, 7);
        let mut subscribers = people(rng, &format!("m{a}-"), 300);
        let friends = people(rng, &format!("f{a}-"), 10);
        for day in first..last {
            if (day + 70).rem_euclid(7) == 3 {
                let body = format!(
                    "Club news for day {day}.\nTraining moves to the north field, bring your own water.\nhttps://club.example/news https://facebook.example/club https://instagram.example/club https://shop.example/{day}\n"
                );
                for (b, batch) in subscribers.chunks(50).enumerate() {
                    let t = at(day) + 19 * HOUR + b as u64 * 60;
                    p.send(
                        t,
                        a,
                        home,
                        Program::Thunderbird,
                        batch.to_vec(),
                        body.clone(),
                        None,
                    );
                }
                for _ in 0..5 {
                    subscribers.push(someone(rng, &format!("m{a}-")));
                }
            }
            if rng.chance(0.5) {
                let t = at(day) + 12 * HOUR + rng.below(6 * HOUR);
                let body = personal_body(rng);
                let to = vec![pick(rng, &friends).clone()];
                p.send(t, a, home, Program::Thunderbird, to, body, None);
            }
        }
    }

    // The first bulk mailing after deployment: no scorer history at all,
    // then a mailing to 250 people in batches of 50.
    for _ in 0..5 {
        let a = p.member(
            "first bulk mailing after deployment",
            Kind::Honest,
            u64::MAX,
        );
        p.members[a].fresh = true;
        let home = ip(100, 101, a as u8, 9);
        let list = people(rng, &format!("l{a}-"), 250);
        let body = "Dear members,\nthe annual meeting is on the 14th; the agenda and the minutes of last year are on our website.\nhttps://association.example/agenda\n";
        for (b, batch) in list.chunks(50).enumerate() {
            let t = at(0) + 9 * HOUR + b as u64 * 60;
            p.send(
                t,
                a,
                home,
                Program::Outlook,
                batch.to_vec(),
                body.into(),
                None,
            );
        }
        for day in 1..last {
            if rng.chance(0.6) {
                let t = at(day) + 11 * HOUR;
                let body = personal_body(rng);
                let to = vec![pick(rng, &list).clone()];
                p.send(t, a, home, Program::Outlook, to, body, None);
            }
        }
    }

    // New accounts at the floor: 20 a minute, 100 an hour, up to 5
    // recipients from a set of 10, one network, no history.
    for _ in 0..5 {
        let a = p.member("new account at the floor", Kind::Honest, u64::MAX);
        p.members[a].fresh = true;
        let net = ip(100, 90, a as u8, 3);
        let set = people(rng, &format!("n{a}-"), 10);
        for burst in 0..5u64 {
            let minute = START + 9 * HOUR + burst * 12 * 60;
            for k in 0..20u64 {
                let recipients = (0..1 + rng.below(5))
                    .map(|_| pick(rng, &set).clone())
                    .collect();
                let body = personal_body(rng);
                p.send(
                    minute + k * 2,
                    a,
                    net,
                    Program::Thunderbird,
                    recipients,
                    body,
                    None,
                );
            }
        }
    }

    hijacks(&mut p, rng, days);
    p.sends.sort_by_key(|s| s.at);
    p
}

const HIJACKS: &[&str] = &[
    "hijack: burst",
    "hijack: slow drip",
    "hijack: logins from dozens of networks",
    "hijack: phishing with many link domains",
    "hijack: burst from the owner's own network",
    "hijack: malware, 30 new rcpts/hour in office hours",
    "hijack: worm mailing the owner's contacts",
    "hijack: low and slow, 200 a day",
    "hijack: BCC bomb from the owner's home",
    "hijack: waits 25 hours, then 50 rcpts/30 min",
    "hijack: display-name phishing to contacts",
    "hijack: bot hammering through deferrals",
];

/// Established accounts (Outlook at home), then a thief.
fn hijacks(p: &mut Population, rng: &mut Rng, days: u64) {
    for (variant, profile) in HIJACKS.iter().enumerate() {
        for n in 0..4u64 {
            let start_day = 1 + n % days.max(2).saturating_sub(1).max(1);
            let start = START + start_day * DAY + 10 * HOUR + rng.below(4 * HOUR);
            let a = p.member(profile, Kind::Hijack, start);
            let home = ip(100, 120 + variant as u8, n as u8, 8);
            let known = people(rng, &format!("h{a}-"), 150);
            // The owner's own mail, from the warm-up until the theft.
            let mut day = -(WARMUP_DAYS as i64);
            while at(day) < start {
                for _ in 0..1 + rng.below(5) {
                    let t = at(day) + 8 * HOUR + rng.below(12 * HOUR);
                    if t >= start {
                        break;
                    }
                    let body = personal_body(rng);
                    let to = vec![pick(rng, &known).clone()];
                    p.send(t, a, home, Program::Outlook, to, body, None);
                }
                day += 1;
            }
            let thief = ip(45, 10 + variant as u8, n as u8, 66);
            let tag = format!("t{a}-");
            let fresh = |rng: &mut Rng| someone(rng, &tag);
            match variant {
                0 => {
                    for k in 0..200 {
                        let to = (0..10 + rng.below(40)).map(|_| fresh(rng)).collect();
                        p.send(
                            start + k * 2,
                            a,
                            thief,
                            Program::Script,
                            to,
                            SPAM.into(),
                            None,
                        );
                    }
                }
                1 => {
                    for k in 0..100 {
                        let to = (0..1 + rng.below(3)).map(|_| fresh(rng)).collect();
                        let body = SPAM.replace("customer", &format!("customer {k}"));
                        p.send(start + k * 240, a, thief, Program::Script, to, body, None);
                    }
                }
                2 => {
                    for k in 0..80 {
                        let from = ip(45, 100 + (k % 40) as u8, k as u8, 1);
                        p.logins.push((start + k * 30, a, from));
                        let to = (0..5).map(|_| fresh(rng)).collect();
                        p.send(
                            start + k * 30 + 1,
                            a,
                            from,
                            Program::Script,
                            to,
                            SPAM.into(),
                            None,
                        );
                    }
                }
                3 => {
                    for k in 0..60 {
                        let to = (0..3).map(|_| fresh(rng)).collect();
                        let body = phishing(rng);
                        p.send(start + k * 60, a, thief, Program::Script, to, body, None);
                    }
                }
                4 => {
                    for k in 0..300 {
                        let to = (0..5 + rng.below(20)).map(|_| fresh(rng)).collect();
                        p.send(
                            start + k * 3,
                            a,
                            home,
                            Program::Malware,
                            to,
                            SPAM.into(),
                            None,
                        );
                    }
                }
                5 => {
                    // Office hours for ten days, 30 new recipients an hour,
                    // one or two per message.
                    for d in 0..10u64 {
                        for k in 0..20u64 {
                            let t = start + d * DAY + k * 180;
                            let to = (0..1 + rng.below(2)).map(|_| fresh(rng)).collect();
                            let body = varied_spam(rng, k);
                            p.send(t, a, home, Program::Malware, to, body, None);
                        }
                    }
                }
                6 => {
                    // Every 10 minutes, the next 6 contacts.
                    for (k, chunk) in known.chunks(6).enumerate() {
                        let t = start + k as u64 * 600;
                        let body = "Hi,\nhave a look at the photos from last weekend, you are in them!\nhttps://photos-share.example-cdn.top/album\n";
                        p.send(
                            t,
                            a,
                            home,
                            Program::Malware,
                            chunk.to_vec(),
                            body.into(),
                            None,
                        );
                    }
                }
                7 => {
                    for k in 0..2000u64 {
                        let t = start + k * 430;
                        let body = varied_spam(rng, k);
                        p.send(t, a, thief, Program::Script, vec![fresh(rng)], body, None);
                    }
                }
                8 => {
                    for k in 0..30u64 {
                        let to = (0..100).map(|_| fresh(rng)).collect();
                        p.send(
                            start + k * 60,
                            a,
                            home,
                            Program::Script,
                            to,
                            SPAM.into(),
                            None,
                        );
                    }
                }
                9 => {
                    p.logins.push((start, a, thief));
                    for k in 0..240u64 {
                        let t = start + 25 * HOUR + k * 1800;
                        let to = (0..50).map(|_| fresh(rng)).collect();
                        p.send(t, a, thief, Program::Script, to, SPAM.into(), None);
                    }
                }
                10 => {
                    for (k, chunk) in known.chunks(3).enumerate() {
                        let t = start + k as u64 * 300;
                        let body = "Hello,\nI need you to handle a confidential payment today. Reply with your mobile number, I am in a meeting.\n";
                        p.send(
                            t,
                            a,
                            thief,
                            Program::Thunderbird,
                            chunk.to_vec(),
                            body.into(),
                            Some("ceo@company.example".into()),
                        );
                    }
                }
                _ => {
                    for k in 0..300u64 {
                        let to = (0..50).map(|_| fresh(rng)).collect();
                        p.send(
                            start + k * 20,
                            a,
                            thief,
                            Program::Bot,
                            to,
                            SPAM.into(),
                            None,
                        );
                    }
                }
            }
        }
    }
}
