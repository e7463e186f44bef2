//! Each signal alone, at the edges of its threshold.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::content::Content;
use super::state::{AccountState, DAY, HOUR};
use super::*;
use crate::clock::ManualClock;
use crate::store::Store;

const NOW: u64 = 1_800_000_000;
const HOME: &str = "192.0.2.0/24";

/// The scorer's windows and configuration (the points are computed there).
fn scorer() -> (Arc<Ledger>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_or_create(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(NOW)));
    (
        Ledger::load(PolicyConfig::default(), clock, &store, Preload::All).unwrap(),
        dir,
    )
}

/// An account that has used HOME for weeks and knows `known@x.org`.
fn established() -> AccountState {
    let mut st = AccountState::new(NOW - 40 * DAY);
    st.record_login(NOW - 40 * DAY, HOME, 5);
    st.record_message(NOW - 40 * DAY, &["known@x.org".into()], 0);
    st.advance(NOW, HOUR);
    st.record_login(NOW - 60, HOME, 5);
    st
}

fn rcpts(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i}@new.example")).collect()
}

fn points(b: &Breakdown, signal: &str) -> f64 {
    b.signals
        .iter()
        .filter(|(n, _)| *n == signal)
        .map(|(_, p)| p)
        .sum()
}

#[test]
fn known_recipients_from_home_cost_nothing() {
    let (s, _d) = scorer();
    let b = s.score_message(
        &established(),
        NOW,
        HOME,
        &["known@x.org".into()],
        &Content::default(),
    );
    assert_eq!(b.total(), 0.0, "{b:?}");
}

#[test]
fn new_recipients_cost_more_from_an_unfamiliar_network() {
    let (s, _d) = scorer();
    let st = established();
    let home = s.score_message(&st, NOW, HOME, &rcpts(2, "a"), &Content::default());
    assert!(
        (points(&home, "new_recipients") - 0.1).abs() < 1e-9,
        "{home:?}"
    );
    let capped = s.score_message(&st, NOW, HOME, &rcpts(50, "a"), &Content::default());
    assert_eq!(points(&capped, "new_recipients"), 1.0);
    let away = s.score_message(
        &st,
        NOW,
        "198.51.100.0/24",
        &rcpts(2, "a"),
        &Content::default(),
    );
    assert!(
        (points(&away, "new_recipients_unfamiliar_network") - 1.4).abs() < 1e-9,
        "{away:?}"
    );
    let away_many = s.score_message(
        &st,
        NOW,
        "198.51.100.0/24",
        &rcpts(50, "a"),
        &Content::default(),
    );
    assert_eq!(points(&away_many, "new_recipients_unfamiliar_network"), 3.0);
}

#[test]
fn a_repeated_body_to_new_people() {
    let (s, _d) = scorer();
    let mut st = established();
    let content = Content {
        fingerprint: 42,
        ..Content::default()
    };
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &rcpts(1, "a"), &content),
            "repeated_body"
        ),
        0.0
    );
    st.record_message(NOW - 60, &rcpts(1, "b"), 42);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &rcpts(1, "a"), &content),
            "repeated_body"
        ),
        0.1
    );
    let away = s.score_message(&st, NOW, "198.51.100.0/24", &rcpts(1, "a"), &content);
    assert_eq!(points(&away, "repeated_body"), 2.0);
    // The same body to people already known: nothing.
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &["b0@new.example".into()], &content),
            "repeated_body"
        ),
        0.0
    );
}

#[test]
fn bulk_new_recipients_at_its_edge() {
    let (s, _d) = scorer();
    let mut st = established();
    for i in 0..2 {
        st.record_message(NOW - 100 + i, &rcpts(3, &format!("m{i}-")), 0);
    }
    // Third bulk message in 10 minutes: not yet.
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &rcpts(3, "x"), &Content::default()),
            "bulk_new_recipients"
        ),
        0.0
    );
    st.record_message(NOW - 50, &rcpts(3, "m9-"), 0);
    // Fourth: yes; but a message with only 2 new recipients is not bulk.
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &rcpts(3, "x"), &Content::default()),
            "bulk_new_recipients"
        ),
        3.0
    );
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &rcpts(2, "x"), &Content::default()),
            "bulk_new_recipients"
        ),
        0.0
    );
    // Ten minutes later the window has moved on.
    let mut later = st.clone();
    later.advance(NOW + 600, HOUR);
    assert_eq!(
        points(
            &s.score_message(&later, NOW + 600, HOME, &rcpts(3, "x"), &Content::default()),
            "bulk_new_recipients"
        ),
        0.0
    );
}

#[test]
fn logins_from_many_networks() {
    let (s, _d) = scorer();
    let mut st = established();
    for n in 1..3 {
        st.record_login(NOW - 60, &format!("203.0.{n}.0/24"), 5);
    }
    // Home + 2 others = 3 networks this hour: under the limit of 4.
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "network_spread"
        ),
        0.0
    );
    st.record_login(NOW - 30, "203.0.9.0/24", 5);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "network_spread"
        ),
        3.0
    );
}

#[test]
fn link_domains_display_names_bounces_failures_speed() {
    let (s, _d) = scorer();
    let mut st = established();
    let links = |n| Content {
        link_domains: n,
        ..Content::default()
    };
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &links(3)),
            "link_domains"
        ),
        0.0
    );
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &links(4)),
            "link_domains"
        ),
        1.0
    );
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &links(30)),
            "link_domains"
        ),
        5.0
    );
    let spoof = Content {
        display_name_address: true,
        ..Content::default()
    };
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &spoof),
            "display_name_address"
        ),
        4.0
    );

    // Bounces: 20 % of at least 10 recipients in a day.
    st.record_delivery(NOW - 60, 9, 1);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "bounces"
        ),
        0.0
    );
    st.record_delivery(NOW - 60, 0, 2);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "bounces"
        ),
        3.0
    );

    // A login after 5 wrong passwords, counted once it happened.
    let mut st = established();
    for _ in 0..4 {
        st.record_auth_failure(NOW - 30);
    }
    st.record_login(NOW - 10, HOME, 5);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "auth_failures_before_login"
        ),
        0.0
    );
    for _ in 0..5 {
        st.record_auth_failure(NOW - 5);
    }
    st.record_login(NOW - 1, HOME, 5);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "auth_failures_before_login"
        ),
        3.0
    );

    // Speed: the 121st message of the hour.
    let mut st = established();
    for i in 0..119 {
        st.record_message(NOW - 1000 + i, &["known@x.org".into()], 0);
    }
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "fast_sending"
        ),
        0.0
    );
    st.record_message(NOW - 1, &["known@x.org".into()], 0);
    assert_eq!(
        points(
            &s.score_message(&st, NOW, HOME, &[], &Content::default()),
            "fast_sending"
        ),
        0.5
    );
}

#[test]
fn caps_only_defer_and_new_accounts_have_lower_ones() {
    let (s, _d) = scorer();
    let mut st = established();
    for i in 0..29 {
        st.record_message(NOW - 50 + i, &["known@x.org".into()], 0);
    }
    assert_eq!(Scorer::cap_broken(&s.config(), &st, NOW, false, 1, 1), None);
    st.record_message(NOW - 1, &["known@x.org".into()], 0);
    assert_eq!(
        Scorer::cap_broken(&s.config(), &st, NOW, false, 1, 1),
        Some("messages_per_minute")
    );
    let mut st = established();
    for i in 0..150 {
        st.record_message(NOW - 3000 + i * 15, &["known@x.org".into()], 0);
    }
    assert_eq!(Scorer::cap_broken(&s.config(), &st, NOW, false, 1, 1), None);
    assert_eq!(
        Scorer::cap_broken(&s.config(), &st, NOW, true, 1, 1),
        Some("messages_per_hour")
    );
}
