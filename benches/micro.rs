//! Micro-benchmarks of the hot paths: command parsing, DATA ingestion, and
//! the scorer's work per message. `cargo bench --bench micro`.

use std::hint::black_box;
use std::time::Instant;

use mailwarden::policy::scorer::content;
use mailwarden::policy::scorer::state::AccountState;
use mailwarden::smtp::data::DataReader;

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
    per_op("window update", 200_000, || {
        now += 1;
        st.advance(now, 3600);
        st.record_message(now, black_box(&recipients), 42);
    });
}
