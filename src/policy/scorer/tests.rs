//! Each signal alone, at the edges of its threshold, for each kind of sender.

use super::clients::Program;
use super::contacts::{ContactKey, day_number};
use super::content::Content;
use super::signals::{self, Message, Network, Retries, Sender};
use super::state::{AccountState, DAY, Mailed};
use super::*;

const NOW: u64 = 1_800_000_000;
const KEY: ContactKey = ContactKey([7, 9]);

const OWNER: Sender = Sender {
    network: Network::Trusted,
    program: Program::Known,
};
const TRAVELLING: Sender = Sender {
    network: Network::Untrusted,
    program: Program::Known,
};
const NEW_PROGRAM: Sender = Sender {
    network: Network::Trusted,
    program: Program::Unknown,
};
const STRANGER: Sender = Sender {
    network: Network::Untrusted,
    program: Program::Unknown,
};

fn rcpts(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i}@new.example")).collect()
}

/// An account that mailed `known` (40 contacts) a little every day for
/// two weeks.
fn established() -> AccountState {
    let mut st = AccountState::new(NOW - 40 * DAY);
    let known = rcpts(40, "known");
    for d in (1..15u64).rev() {
        let at = NOW - d * DAY;
        let first = (14 - d as usize) * 3;
        let to: Vec<String> = (first..first + 3).map(|i| known[i % 40].clone()).collect();
        let mailed = st.mailed(&to, &KEY, at);
        st.record_message(at, &to, &mailed, 0);
    }
    st.advance(NOW, 3600);
    st
}

fn score(st: &AccountState, sender: Sender, to: &[String], content: &Content) -> Breakdown {
    score_with_retries(st, sender, to, content, Retries::default())
}

fn score_with_retries(
    st: &AccountState,
    sender: Sender,
    to: &[String],
    content: &Content,
    retries: Retries,
) -> Breakdown {
    let mailed = st.mailed(to, &KEY, NOW);
    let m = Message {
        sender,
        mailed: &mailed,
        recipients: to.len() as u32,
        normal: st.baseline.normal(day_number(NOW), 7),
        retries,
        untrusted_networks_last_hour: 0,
    };
    signals::score(&PolicyConfig::default(), st, NOW, &m, content)
}

fn points(b: &Breakdown, signal: &str) -> f64 {
    b.signals
        .iter()
        .filter(|(n, _)| *n == signal)
        .map(|(_, p)| p)
        .sum()
}

#[test]
fn the_owners_volume_earns_no_points_and_a_strangers_earns_the_most() {
    let st = established();
    let many = rcpts(30, "new");
    let c = Content::default();
    assert_eq!(score(&st, OWNER, &many, &c).total(), 0.0);
    let travelling = points(&score(&st, TRAVELLING, &many, &c), "new_recipients");
    let program = points(&score(&st, NEW_PROGRAM, &many, &c), "new_recipients");
    let stranger = points(&score(&st, STRANGER, &many, &c), "new_recipients");
    assert!((travelling - 0.6).abs() < 1e-9, "{travelling}");
    assert!((program - 6.0).abs() < 1e-9, "{program}");
    assert!(
        (stranger - 12.0).abs() < 1e-9,
        "capped per message: {stranger}"
    );
    // One new person from a stranger: 2 points.
    let one = score(&st, STRANGER, &rcpts(1, "n"), &c);
    assert!((points(&one, "new_recipients") - 2.0).abs() < 1e-9);
}

#[test]
fn contacts_mailed_by_another_program_and_a_sweep_through_them() {
    let mut st = established();
    let known = rcpts(40, "known");
    let c = Content::default();
    assert_eq!(score(&st, OWNER, &known[..6], &c).total(), 0.0);
    let worm = score(&st, NEW_PROGRAM, &known[..6], &c);
    assert!(
        (points(&worm, "contacts_from_another_sender") - 1.5).abs() < 1e-9,
        "{worm:?}"
    );
    assert_eq!(
        points(&worm, "contact_sweep"),
        0.0,
        "6 contacts is no sweep"
    );
    // 18 contacts already today: the next 6 pass the 20 of the sweep.
    for chunk in known[6..24].chunks(6) {
        let mailed = st.mailed(chunk, &KEY, NOW - 60);
        st.record_message(NOW - 60, chunk, &mailed, 0);
    }
    let sweep = score(&st, NEW_PROGRAM, &known[24..30], &c);
    assert!(
        (points(&sweep, "contact_sweep") - 2.0).abs() < 1e-9,
        "{sweep:?}"
    );
    assert_eq!(score(&st, OWNER, &known[24..30], &c).total(), 0.0);
}

#[test]
fn a_repeated_body_and_bulk_only_count_for_another_sender() {
    let mut st = established();
    let content = Content {
        fingerprint: 42,
        ..Content::default()
    };
    for i in 0..3u64 {
        let to = rcpts(3, &format!("m{i}-"));
        let mailed = st.mailed(&to, &KEY, NOW - 100 + i);
        st.record_message(NOW - 100 + i, &to, &mailed, 42);
    }
    let owner = score(&st, OWNER, &rcpts(3, "x"), &content);
    assert_eq!(owner.total(), 0.0, "{owner:?}");
    let stranger = score(&st, STRANGER, &rcpts(3, "x"), &content);
    assert_eq!(points(&stranger, "repeated_body"), 2.0);
    assert_eq!(points(&stranger, "bulk_new_recipients"), 3.0);
    // The same body to contacts only: not repeated to new people.
    let contacts = score(&st, STRANGER, &rcpts(1, "m0-"), &content);
    assert_eq!(points(&contacts, "repeated_body"), 0.0);
}

#[test]
fn new_link_domains_and_display_names() {
    let mut st = established();
    let links = Content {
        link_hashes: vec![1, 2, 3, 4, 5],
        link_domains: 5,
        ..Content::default()
    };
    let to = vec!["known1@new.example".to_string()];
    let stranger = score(&st, STRANGER, &to, &links);
    assert_eq!(points(&stranger, "link_domains"), 3.0);
    let owner = score(&st, OWNER, &to, &links);
    assert!(
        (points(&owner, "link_domains") - 0.3).abs() < 1e-9,
        "{owner:?}"
    );
    // Sites the account linked to before are its own.
    st.learn_links(&[1, 2, 3, 4, 5]);
    assert_eq!(
        score(&st, STRANGER, &to, &links).total(),
        0.5,
        "one contact"
    );
    let display = Content {
        display_name_address: true,
        ..Content::default()
    };
    assert_eq!(
        points(&score(&st, OWNER, &to, &display), "display_name_address"),
        0.0
    );
    assert_eq!(
        points(
            &score(&st, TRAVELLING, &to, &display),
            "display_name_address"
        ),
        2.0
    );
    assert_eq!(
        points(&score(&st, STRANGER, &to, &display), "display_name_address"),
        4.0
    );
}

#[test]
fn retries_of_a_deferred_message_count_only_when_no_program_would_retry_so() {
    let st = established();
    let c = Content::default();
    let to = rcpts(1, "known");
    let retry = |attempts, quick| {
        points(
            &score_with_retries(&st, OWNER, &to, &c, Retries { attempts, quick }),
            "retry_hammering",
        )
    };
    // Outlook every 30 minutes, Thunderbird resent by hand: nothing.
    assert_eq!(retry(1, 0), 0.0);
    assert_eq!(retry(2, 2), 0.0);
    assert_eq!(retry(5, 0), 0.0);
    // A seventh within 10 minutes, or a third in a row under 30 s.
    assert_eq!(retry(6, 0), 4.0);
    assert_eq!(retry(3, 3), 4.0);
}

#[test]
fn retries_are_counted_by_message_and_gap() {
    let mut st = established();
    let c = PolicyConfig::default();
    let key = 99;
    for at in [NOW - 500, NOW - 40, NOW - 25, NOW - 10] {
        st.deferred.push_back((at, key));
    }
    st.deferred.push_back((NOW - 5, 100));
    let r = retries(&st, &c, NOW, key);
    assert_eq!(r.attempts, 4);
    assert_eq!(
        r.quick, 3,
        "-10, -25 and -40 are each under 30 s from the next"
    );
    assert_eq!(
        retries(&st, &c, NOW + 100, key).attempts,
        3,
        "the window slides"
    );
}

#[test]
fn the_hourly_budget_of_new_recipients_follows_the_accounts_own_busiest_hour() {
    let c = PolicyConfig::default();
    let mut st = established();
    assert_eq!(
        budget_broken(&c, &st, NOW, 200, st.baseline.normal(day_number(NOW), 7)),
        None
    );
    assert_eq!(
        budget_broken(&c, &st, NOW, 201, st.baseline.normal(day_number(NOW), 7)),
        Some("new_recipients_per_hour")
    );
    // A recruiter's week of 100 new people an hour: the budget is 300.
    for d in (1..8).rev() {
        let at = NOW - d * DAY;
        let to = rcpts(100, &format!("d{d}-"));
        let mailed = st.mailed(&to, &KEY, at);
        st.record_message(at, &to, &mailed, 0);
    }
    st.advance(NOW, 3600);
    assert_eq!(
        budget_broken(&c, &st, NOW, 300, st.baseline.normal(day_number(NOW), 7)),
        None
    );
    assert!(budget_broken(&c, &st, NOW, 301, st.baseline.normal(day_number(NOW), 7)).is_some());
    assert_eq!(day_number(NOW), day_number(NOW + 1));
}

#[test]
fn caps_only_defer_and_new_accounts_have_lower_ones() {
    let c = PolicyConfig::default();
    let mut st = AccountState::new(NOW);
    for i in 0..c.new_account_max_messages_per_hour {
        let to = vec!["a@x.org".to_string()];
        let mailed = Mailed::default();
        st.record_message(NOW - 3000 + u64::from(i), &to, &mailed, 0);
    }
    assert_eq!(
        Scorer::cap_broken(&c, &st, NOW, true, 1, 1),
        Some("messages_per_hour")
    );
    assert_eq!(Scorer::cap_broken(&c, &st, NOW, false, 1, 1), None);
}
