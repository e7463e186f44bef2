//! Preference order, fallback, implicit and null MX, grouping, reuse.

use std::net::Ipv4Addr;

use super::dns::{FakeDns, Rec};
use super::{message, mx_server, mx_toml, sink_at};
use crate::common::{ALICE, queued_id, split_received};
use crate::relay::{Received, wait_queue_empty};

fn ip(last: u8) -> Rec {
    Rec::A(Ipv4Addr::new(127, 0, 0, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_preference_fallback_grouping_and_null_mx() {
    // Three sinks on one port: .2 (pref.test's best MX), .3 (pref.test's
    // second MX, and implicit.test's address), .4 (down.test's second MX,
    // and example.com's, where DSNs go). Nothing listens on .5.
    let a = sink_at("127.0.0.2", 0);
    let b = sink_at("127.0.0.3", a.port);
    let c = sink_at("127.0.0.4", a.port);
    let dns = FakeDns::start(vec![
        // Listed worst first: the order must come from the preference.
        ("pref.test", Rec::Mx(20, "mx2.pref.test")),
        ("pref.test", Rec::Mx(10, "mx1.pref.test")),
        ("mx1.pref.test", ip(2)),
        ("mx2.pref.test", ip(3)),
        ("down.test", Rec::Mx(10, "dead.down.test")),
        ("down.test", Rec::Mx(20, "mx.down.test")),
        ("dead.down.test", ip(5)),
        ("mx.down.test", ip(4)),
        ("implicit.test", ip(3)),
        ("null.test", Rec::Mx(0, ".")),
        ("example.com", Rec::Mx(10, "mx.example.com")),
        ("mx.example.com", ip(4)),
    ]);
    let server = mx_server(&mx_toml(a.port, dns.addr, "")).await;

    let mut client = server.alice().await;
    let to = [
        "bob@pref.test",
        "dave@down.test",
        "carol@PREF.test",
        "erin@implicit.test",
        "frank@null.test",
    ];
    let body = message("grouped", "undisclosed-recipients:;");
    let id = queued_id(&client.send_message(ALICE, &to, &body).await);

    // pref.test: one transaction for both recipients, at the best MX.
    let got_a = a.wait_messages(1).await;
    assert_eq!(got_a.len(), 1, "{got_a:?}");
    assert_eq!(got_a[0].to(), ["bob@pref.test", "carol@pref.test"]);
    assert_eq!(split_received(&got_a[0].bytes).1, body);
    // implicit.test: no MX record, its own address.
    let got_b = b.wait_messages(1).await;
    assert_eq!(got_b[0].to(), ["erin@implicit.test"]);
    // down.test: the first MX refuses connections, the second gets it;
    // null.test: bounced at once (5.1.10), the DSN goes to example.com.
    let got_c = c.wait_messages(2).await;
    let (dsns, mail): (Vec<&Received>, Vec<&Received>) = got_c.iter().partition(|m| m.is_dsn());
    assert_eq!(mail.len(), 1, "{got_c:?}");
    assert_eq!(mail[0].to(), ["dave@down.test"]);
    assert_eq!(dsns.len(), 1, "{got_c:?}");
    assert_eq!(dsns[0].to(), [ALICE]);
    let report = dsns[0].text();
    assert!(report.contains("frank@null.test"), "{report}");
    assert!(report.contains("5.1.10"), "{report}");
    assert!(report.contains(&id), "{report}");
    wait_queue_empty(&server).await;
    // The second MX of pref.test never heard of it.
    assert!(
        !b.replies().contains("pref.test"),
        "second MX used: {}",
        b.replies()
    );

    // Another message to pref.test reuses the kept connection.
    client
        .send_message(
            ALICE,
            &["gina@pref.test"],
            &message("again", "gina@pref.test"),
        )
        .await;
    let got_a = a.wait_messages(2).await;
    assert_eq!(got_a[1].to(), ["gina@pref.test"]);
    assert_eq!(
        got_a[0].meta["conn"], got_a[1].meta["conn"],
        "a new connection for the second message"
    );
    wait_queue_empty(&server).await;
    let success = server.wait_event("delivery.success").await;
    assert_eq!(success.target.as_deref(), Some("mx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mx_down_defers_and_a_missing_domain_bounces() {
    let a = sink_at("127.0.0.2", 0);
    let dns = FakeDns::start(vec![
        ("gone.test", Rec::Mx(10, "mx1.gone.test")),
        ("gone.test", Rec::Mx(20, "mx2.gone.test")),
        ("mx1.gone.test", ip(6)),
        ("mx2.gone.test", ip(7)),
        ("example.com", Rec::Mx(10, "mx.example.com")),
        ("mx.example.com", ip(2)),
    ]);
    let server = mx_server(&mx_toml(a.port, dns.addr, "")).await;
    let mut client = server.alice().await;
    let id = queued_id(
        &client
            .send_message(
                ALICE,
                &["x@gone.test", "y@nosuch.test"],
                &message("down", "x@gone.test"),
            )
            .await,
    );
    // nosuch.test does not exist: a DSN at once; gone.test stays queued.
    let got = a.wait_messages(1).await;
    assert!(got[0].is_dsn(), "{got:?}");
    let report = got[0].text();
    assert!(report.contains("y@nosuch.test"), "{report}");
    assert!(report.contains("5.1.2"), "{report}");
    assert!(!report.contains("<x@gone.test>:"), "{report}");
    let deferred = server.wait_event("delivery.deferred").await;
    assert_eq!(deferred.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(deferred.reason.as_deref(), Some("connection"));
    // The delivered report leaves the spool in the commit after its 250.
    let mut queued = server.running().store.queue_list().unwrap();
    for _ in 0..250 {
        if queued.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        queued = server.running().store.queue_list().unwrap();
    }
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0].id.to_string(), id);
}
