//! A load generator for SMTP submission servers, used to measure mailwarden
//! and to compare it with Postfix on the same machine (docs/performance.md).
//!
//! `cargo bench --bench load -- --help` lists the options;
//! `scripts/bench-load` runs it against a fresh mailwarden and
//! `scripts/bench-compare` against mailwarden and Postfix side by side.

mod client;
mod measure;
mod options;
mod report;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use client::{Client, Connection};
use options::Options;
use report::Report;

fn main() {
    let options = Arc::new(Options::parse_checked());
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&options.ca_file).unwrap_or_else(|e| {
        eprintln!("load: cannot read {}: {e}", options.ca_file);
        std::process::exit(2);
    });
    for cert in certs {
        roots.add(cert.expect("a PEM certificate")).expect("a root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !options.resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let clients: Vec<Arc<Client>> = options
        .senders()
        .into_iter()
        .map(|sender| Arc::new(Client::new(options.clone(), tls.clone(), sender)))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(clients));
}

/// `clients`: one per account sessions send as (session k as k mod n).
async fn run(clients: Vec<Arc<Client>>) {
    let client = clients[0].clone();
    let o = client.options.clone();
    let main_pid = o.server_pids.first().copied();
    let mut idle = Vec::new();
    if o.idle > 0 {
        let before = main_pid.and_then(measure::rss_mib);
        let started = Instant::now();
        idle = open_idle(&client, o.idle).await;
        let after = main_pid.and_then(measure::rss_mib);
        println!(
            "load: {} idle sessions open (of {}) in {:.1} s; server RSS {} MiB before, {} MiB with them",
            idle.len(),
            o.idle,
            started.elapsed().as_secs_f64(),
            before.map_or("?".into(), |m| format!("{m:.1}")),
            after.map_or("?".into(), |m| format!("{m:.1}")),
        );
    }

    let counters_before = match o.metrics {
        Some(addr) => measure::counters(addr).await,
        None => None,
    };
    let cpu_before = measure::tree_cpu_seconds(&o.server_pids);
    let own_before = measure::own_cpu_seconds();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..o.concurrency)
        .map(|k| {
            let client = clients[k % clients.len()].clone();
            tokio::spawn(worker(client, next.clone(), start, k))
        })
        .collect();
    let mut report = Report::default();
    for w in workers {
        report.merge(w.await.expect("a worker"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let own_cpu = measure::own_cpu_seconds() - own_before;

    // Delivery is part of the server's work: wait until it is done before
    // reading the CPU (mailwarden: its counters; any server: CPU at rest).
    let drain_start = Instant::now();
    let mut counters_after = None;
    if let (Some(addr), Some(before)) = (o.metrics, counters_before) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = measure::counters(addr).await;
            counters_after = now;
            let done = now.is_some_and(|c| {
                c.delivered - before.delivered >= c.accepted - before.accepted && c.queued == 0.0
            });
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !o.server_pids.is_empty() {
        settle(&o.server_pids).await;
    }
    let drained = drain_start.elapsed().as_secs_f64();
    let server_cpu = measure::tree_cpu_seconds(&o.server_pids) - cpu_before;
    let rss = main_pid.and_then(measure::rss_mib);
    drop(idle);

    let sent = report.submission.len();
    let per_msg = |seconds: f64| seconds * 1000.0 / sent.max(1) as f64;
    let rate = sent as f64 / elapsed;
    let phases = report.phases();
    let durability = match (counters_before, counters_after) {
        (Some(b), Some(a)) => Some((
            (a.fsyncs - b.fsyncs) / (a.accepted - b.accepted).max(1.0),
            a.accepted - b.accepted,
            a.delivered - b.delivered,
        )),
        _ => None,
    };
    if o.json {
        let phases: serde_json::Map<String, serde_json::Value> = phases
            .iter()
            .map(|(name, [p50, p90, p99, max])| {
                (
                    name.to_string(),
                    serde_json::json!({"p50": p50, "p90": p90, "p99": p99, "max": max}),
                )
            })
            .collect();
        let out = serde_json::json!({
            "label": o.label,
            "tls": format!("{:?}", o.tls).to_lowercase(),
            "auth": format!("{:?}", o.auth).to_lowercase(),
            "concurrency": o.concurrency,
            "per_session": o.per_session,
            "size": o.size,
            "rcpts": o.rcpts,
            "rate_offered": o.rate,
            "messages": sent,
            "failed": report.failed_messages,
            "sessions": report.sessions,
            "seconds": elapsed,
            "msgs_per_s": rate,
            "latency_ms": phases,
            "server_cpu_ms_per_msg": (!o.server_pids.is_empty()).then(|| per_msg(server_cpu)),
            "client_cpu_ms_per_msg": per_msg(own_cpu),
            "drain_seconds": drained,
            "server_rss_mib": rss,
            "fsyncs_per_msg": durability.map(|d| d.0),
            "accepted": durability.map(|d| d.1),
            "delivered": durability.map(|d| d.2),
            "errors": report.errors,
        });
        println!("{out}");
        return;
    }
    let mode = if o.rate > 0.0 {
        format!("open loop at {} msgs/s", o.rate)
    } else {
        "closed loop".into()
    };
    println!(
        "load: {} tls={:?} auth={:?} concurrency={} per-session={} size={} rcpts={} {mode}",
        o.label, o.tls, o.auth, o.concurrency, o.per_session, o.size, o.rcpts
    );
    println!(
        "load: {sent} messages in {elapsed:.2} s = {rate:.0} msgs/s; {} failed; {} sessions",
        report.failed_messages, report.sessions
    );
    println!("load: latency ms      p50      p90      p99      max");
    for (name, [p50, p90, p99, max]) in &phases {
        println!("load:   {name:<11}{p50:>8.2} {p90:>8.2} {p99:>8.2} {max:>8.2}");
    }
    if !o.server_pids.is_empty() {
        println!(
            "load: server cpu {:.3} ms/msg ({server_cpu:.2} s, delivery drained {drained:.1} s after the last 250)",
            per_msg(server_cpu)
        );
    }
    println!("load: client cpu {:.3} ms/msg", per_msg(own_cpu));
    if let Some((fsyncs, accepted, delivered)) = durability {
        println!(
            "load: durability: every 250 after fsync; {fsyncs:.3} fsyncs per message (group commit); {accepted} accepted, {delivered} delivered"
        );
    }
    if report.errors.is_empty() {
        println!("load: errors: none");
    }
    for (what, n) in &report.errors {
        println!("load: error {what} × {n}");
    }
}

/// Sends messages until the count or the time runs out.
async fn worker(client: Arc<Client>, next: Arc<AtomicUsize>, start: Instant, k: usize) -> Report {
    let o = client.options.clone();
    let mut report = Report::default();
    if o.rate == 0.0 {
        // Clients do not all arrive in the same millisecond: spread the
        // first sessions over `concurrency` milliseconds.
        tokio::time::sleep_until((start + Duration::from_millis(k as u64)).into()).await;
    }
    let mut open: Option<(Connection, usize)> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= o.messages || start.elapsed().as_secs_f64() >= o.duration {
            break;
        }
        let begun = if o.rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / o.rate);
            tokio::time::sleep_until(due.into()).await;
            due
        } else {
            Instant::now()
        };
        if open.is_none() {
            match client.open(None).await {
                Ok((conn, setup)) => {
                    report.sessions += 1;
                    report.connect.push(setup.connect);
                    report.tls.push(setup.tls);
                    report.auth.push(setup.auth);
                    open = Some((conn, 0));
                }
                Err(f) => {
                    report.error(f.key());
                    report.failed_messages += 1;
                    continue;
                }
            }
        }
        let (conn, count) = open.as_mut().expect("an open session");
        *count += 1;
        match client.send(conn).await {
            Ok(sent) => {
                report.envelope.push(sent.envelope);
                report.data.push(sent.data);
                report.submission.push(begun.elapsed());
            }
            Err(f) => {
                report.error(f.key());
                report.failed_messages += 1;
                if !f.recoverable {
                    open = None;
                }
            }
        }
        if open.as_ref().is_some_and(|(_, n)| *n >= o.per_session) {
            let (conn, _) = open.take().expect("an open session");
            conn.quit().await;
        }
    }
    if let Some((conn, _)) = open {
        conn.quit().await;
    }
    report
}

/// Opens `n` authenticated sessions that then sit idle, 20 per source
/// address (127.1.x.y), so per-address limits stay at their defaults.
async fn open_idle(client: &Arc<Client>, n: usize) -> Vec<Connection> {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, gate) = (client.clone(), gate.clone());
            tokio::spawn(async move {
                let _turn = gate.acquire().await;
                let a = i / 20;
                let source =
                    IpAddr::V4(Ipv4Addr::new(127, 1, (a / 250) as u8, (a % 250 + 1) as u8));
                client.open(Some(source)).await
            })
        })
        .collect();
    let mut open = Vec::with_capacity(n);
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        match t.await.expect("an idle task") {
            Ok((conn, _)) => open.push(conn),
            Err(f) => *errors.entry(f.key()).or_default() += 1,
        }
    }
    for (what, n) in errors {
        println!("load: idle session error {what} × {n}");
    }
    open
}

/// Waits until the server processes stop using CPU (at most 60 s).
async fn settle(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = measure::tree_cpu_seconds(pids);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = measure::tree_cpu_seconds(pids);
        if now - last < 0.015 {
            return;
        }
        last = now;
    }
}
