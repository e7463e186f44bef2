//! Micro-benchmarks of the hot paths: command parsing, DATA ingestion, the
//! scorer's work per message, and the spool's group commit at 1, 10 and 50
//! writers. `cargo bench --bench micro`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailwarden::accounts::Account;
use mailwarden::app::{App, Open, Overrides};
use mailwarden::clock::SystemClock;
use mailwarden::config::{Config, PolicyConfig, PolicyMode};
use mailwarden::events::TracingEvents;
use mailwarden::policy::scorer::contacts::ContactKey;
use mailwarden::policy::scorer::content;
use mailwarden::policy::scorer::state::AccountState;
use mailwarden::policy::{ClientHints, MailContext, MessageContext, Policy, RcptContext};
use mailwarden::smtp::data::DataReader;
use mailwarden::spool::{Envelope, QueueEntry, QueueWrite, Recipient, Spool, StoreSpool};
use mailwarden::store::Store;
use mailwarden::telemetry::metrics::Metrics;

fn per_op(label: &str, rounds: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    println!("{label}: {:.2} µs/op", ns / 1000.0);
}

fn main() {
    // Command parsing (smtp-proto plus our line).
    let line = b"MAIL FROM:<alice@example.com> SIZE=4096 BODY=8BITMIME\r\n";
    per_op("parse MAIL FROM", 200_000, || {
        let _ = black_box(smtp_proto::Request::parse(&mut black_box(&line[..]).iter()));
    });

    // DATA ingestion: dot-unstuffing, CRLF checks, line and size limits.
    let mut body = Vec::new();
    while body.len() < 25 * 1024 * 1024 {
        body.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, a line of plain text.\r\n",
        );
        body.extend_from_slice(b"..a stuffed line\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let start = Instant::now();
    let rounds = 4;
    for _ in 0..rounds {
        let mut reader = DataReader::new(64 * 1024 * 1024);
        let mut out = Vec::with_capacity(body.len());
        let (_, done) = reader.ingest(black_box(&body), &mut out);
        assert!(done);
    }
    let mb = (body.len() * rounds) as f64 / (1024.0 * 1024.0);
    println!(
        "DATA ingestion: {:.0} MiB/s",
        mb / start.elapsed().as_secs_f64()
    );

    // The scorer's content analysis and window update for one message.
    let message = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: lunch\r\n\r\nHi Bob,\r\nshall we meet at noon? See https://maps.example.com/x and https://cafe.example.net\r\nAlice\r\n";
    per_op("content analysis", 50_000, || {
        black_box(content::analyse(black_box(message)));
    });
    let mut st = AccountState::new(1_800_000_000);
    let recipients = vec![
        "bob@example.org".to_string(),
        "carol@example.net".to_string(),
    ];
    let mut now = 1_800_000_000;
    let key = ContactKey([1, 2]);
    per_op("window update", 200_000, || {
        now += 1;
        st.advance(now, 3600);
        let mailed = st.mailed(black_box(&recipients), &key, now);
        st.record_message(now, black_box(&recipients), &mailed, 42);
    });

    memory_per_account();

    // The same 4 KiB message the load tool sends.
    let load_message = load_message(4096);
    per_op("content analysis, 4 KiB message", 20_000, || {
        black_box(content::analyse(black_box(&load_message)));
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // 1000 accounts sending 20 messages each, and one account sending
    // 20,000 in a burst (its windows at their fullest).
    runtime.block_on(scorer_per_message(&load_message, 1000));
    runtime.block_on(scorer_per_message(&load_message, 1));
    runtime.block_on(spool_commits(&load_message));
    due_in_a_backlog(&load_message);
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The scorer's state of accounts with 30 days of baselines, built through
/// the same methods the scorer calls: in memory (RSS growth) and as
/// stored (JSON). An ordinary account mails 6 messages a day to 1–3 of
/// 80 contacts (15 % new people) from two programs and two networks; a
/// busy one answers 300 new customers a day.
fn memory_per_account() {
    if std::env::var_os("MICRO_SKIP_MEMORY").is_some() {
        return;
    }
    use mailwarden::policy::scorer::clients::ClientPrint;
    const DAY: u64 = 86_400;
    let key = ContactKey([3, 4]);
    let build = |busy: bool, seed: u64| {
        let start = 1_800_000_000 - 31 * DAY;
        let mut st = AccountState::new(start);
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let programs = [
            ClientPrint {
                helo: 1,
                tls: 2,
                auth: 3,
                agent: 4,
                shape: 5,
            },
            ClientPrint {
                helo: 6,
                tls: 7,
                auth: 8,
                agent: 9,
                shape: 10,
            },
        ];
        for day in 0..30 {
            let per_day = if busy { 300 } else { 6 };
            for m in 0..per_day {
                let now = start + day * DAY + 8 * 3600 + m * 100;
                let ip: IpAddr = if next() % 5 == 0 {
                    IpAddr::V4(Ipv4Addr::new(172, 20, (next() % 250) as u8, 9))
                } else {
                    IpAddr::V4(Ipv4Addr::new(100, 64, (seed % 250) as u8, 10))
                };
                st.advance(now, 3600);
                st.record_login(now, &format!("{ip}/24"), 5);
                st.uses.login(ip, now);
                let recipients: Vec<String> = (0..1 + next() % 3)
                    .map(|_| {
                        if busy || next() % 100 < 15 {
                            format!("new{}@co{}.example", next(), next() % 5000)
                        } else {
                            format!("contact{}@example.org", next() % 80)
                        }
                    })
                    .collect();
                let mailed = st.mailed(&recipients, &key, now);
                st.record_message(now, &recipients, &mailed, next());
                st.uses.sent(ip, now);
                st.clients
                    .learn(&programs[(m % 2) as usize], (now / DAY) as u16);
                st.learn_links(&[(next() % 40) as u32]);
            }
        }
        st
    };
    for (label, busy, n) in [
        ("ordinary", false, 5_000u64),
        ("busy (300 new people a day)", true, 200),
    ] {
        let before = rss();
        let states: Vec<AccountState> = (0..n).map(|i| build(busy, i + 1)).collect();
        let grown = rss().saturating_sub(before);
        let stored: usize = states
            .iter()
            .map(|s| serde_json::to_vec(s).map_or(0, |v| v.len()))
            .sum();
        println!(
            "scorer state, {label} account, 30 days: {:.1} KiB in memory (RSS growth over {n}), {:.1} KiB stored",
            grown as f64 / n as f64 / 1024.0,
            stored as f64 / n as f64 / 1024.0
        );
        black_box(states);
    }
}

/// The queue runner's question, "what is due?", with 20,000 deferred
/// messages and 100 due: reading the schedule index against decoding the
/// whole queue (what the runner did before the index).
fn due_in_a_backlog(message: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Store::open_or_create(dir.path()).expect("a store");
    let writes: Vec<QueueWrite> = (0..20_100u64)
        .map(|i| {
            let mut entry =
                QueueEntry::new(mailwarden::spool::QueueId(i + 1), envelope(message.len()));
            entry.next_attempt = if i < 100 { 1_000 } else { 2_000_000_000 };
            QueueWrite::Insert {
                entry,
                body: message.to_vec(),
            }
        })
        .collect();
    for chunk in writes.chunks(1000) {
        store.queue_apply(chunk).expect("a commit");
    }
    let now = 1_800_000_000;
    per_op(
        "due messages from the schedule index, 20,000 deferred",
        200,
        || {
            let (due, _) = store.queue_due(now, 1024).expect("the schedule");
            assert_eq!(due.len(), 100);
        },
    );
    per_op(
        "due messages by decoding the whole queue, 20,000 deferred",
        5,
        || {
            let due = store
                .queue_list()
                .expect("the queue")
                .into_iter()
                .filter(|e| e.next_attempt <= now)
                .count();
            assert_eq!(due, 100);
        },
    );
}

fn load_message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: Load <load@example.com>\r\nTo: friend0@example.org\r\nSubject: load test\r\n\r\n"
            .to_vec();
    while m.len() < size {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m
}

/// Everything the scorer does for one message (MAIL, one RCPT, end of
/// DATA) in observe mode, against a real store, as a session calls it.
async fn scorer_per_message(message: &[u8], accounts: usize) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = Config::embedded_default().expect("the embedded config");
    config.server.data_dir = dir.path().to_path_buf();
    config.policy = PolicyConfig {
        mode: PolicyMode::Observe,
        ..PolicyConfig::default()
    };
    // The application as `serve` assembles it.
    let app = App::open(
        &config,
        Open::CreateIfMissing,
        Arc::new(TracingEvents::default()),
        Overrides::default(),
    )
    .expect("the application");
    let store = app.store.clone();
    let names: Vec<String> = (0..accounts)
        .map(|i| format!("user{i}@example.com"))
        .collect();
    for name in &names {
        store
            .account_create(&Account::new(name.clone(), String::new(), 1_800_000_000))
            .expect("an account");
    }
    let scorer = app.scorer.clone();
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let rounds = 20_000;
    // What a Thunderbird session tells the scorer.
    let hints = ClientHints {
        helo: Some("[192.168.1.20]".into()),
        tls_version: Some("TLSv1_3".into()),
        tls_cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
        mechanism: Some("PLAIN".into()),
        credential: Some("password".into()),
    };
    let start = Instant::now();
    for i in 0..rounds {
        let account = names[i % accounts].as_str();
        let recipients = vec![format!("friend{}@example.org", i % 10)];
        black_box(
            scorer
                .on_mail(&MailContext {
                    account,
                    client_ip: ip,
                    from: account,
                    declared_size: message.len() as u64,
                })
                .await,
        );
        black_box(
            scorer
                .on_rcpt(&RcptContext {
                    account,
                    client_ip: ip,
                    from: account,
                    recipient: &recipients[0],
                    accepted: 0,
                })
                .await,
        );
        black_box(
            scorer
                .on_message(&MessageContext {
                    account,
                    client_ip: ip,
                    from: account,
                    recipients: &recipients,
                    message,
                    client: &hints,
                    features: None,
                })
                .await,
        );
    }
    println!(
        "scorer, whole message (MAIL + RCPT + DATA, 4 KiB, observe mode), {} messages per account: {:.2} µs/message",
        rounds / accounts,
        start.elapsed().as_nanos() as f64 / rounds as f64 / 1000.0
    );
}

/// N writers inserting 4 KiB messages at once for a while: messages per
/// second, fsyncs per message, and how long a writer waits for its 250.
async fn spool_commits(message: &[u8]) {
    for writers in [1, 10, 50] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Store::open_or_create(dir.path()).expect("a store");
        let metrics = Metrics::new();
        let spool = Arc::new(StoreSpool::new(
            store,
            Arc::new(SystemClock),
            metrics.clone(),
        ));
        let body = Arc::new(message.to_vec());
        let run_for = Duration::from_secs(2);
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let (spool, body) = (spool.clone(), body.clone());
                tokio::spawn(async move {
                    let mut waits = Vec::new();
                    while start.elapsed() < run_for {
                        let entry = QueueEntry::new(spool.new_id(), envelope(body.len()));
                        let began = Instant::now();
                        spool
                            .apply(vec![QueueWrite::Insert {
                                entry,
                                body: body.to_vec(),
                            }])
                            .await
                            .expect("a commit");
                        waits.push(began.elapsed());
                    }
                    waits
                })
            })
            .collect();
        let mut waits = Vec::new();
        for t in tasks {
            waits.extend(t.await.expect("a writer"));
        }
        let seconds = start.elapsed().as_secs_f64();
        waits.sort();
        let fsyncs = counter(&metrics.render(), "mailwarden_spool_fsyncs_total");
        let n = waits.len() as f64;
        println!(
            "spool commit, {writers:>2} writers: {:.0} messages/s, {:.3} fsyncs/message, wait p50 {:.2} ms p99 {:.2} ms",
            n / seconds,
            fsyncs / n,
            waits[waits.len() / 2].as_secs_f64() * 1000.0,
            waits[waits.len() * 99 / 100].as_secs_f64() * 1000.0,
        );
    }
}

fn envelope(size: usize) -> Envelope {
    Envelope {
        from: "load@example.com".into(),
        recipients: vec![Recipient {
            address: "friend@example.org".into(),
            orcpt: None,
            notify: 0,
        }],
        account: "load@example.com".into(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        received_at: 1_800_000_000,
        size: size as u64,
        mail_flags: 0,
        envid: None,
    }
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
