//! A closed-loop SMTP load generator: N sessions at once, each submitting
//! messages over implicit TLS (or STARTTLS) with AUTH PLAIN, and the
//! figures: messages per second, latency per message (MAIL to 250), and the
//! server's CPU per message when its pid is given.
//!
//! `cargo bench --bench load -- ADDR USER PASSWORD CAFILE [--concurrency N]
//!  [--messages N] [--per-session N] [--size BYTES] [--starttls]
//!  [--server-pid PID]`; `scripts/bench-load` runs it against a fresh server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Options {
    addr: SocketAddr,
    user: String,
    password: String,
    ca: String,
    concurrency: usize,
    messages: usize,
    per_session: usize,
    size: usize,
    starttls: bool,
    server_pid: Option<u32>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let value = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let positional: Vec<&String> = {
        let mut out = Vec::new();
        let mut skip = false;
        for a in &args {
            if skip {
                skip = false;
                continue;
            }
            if a == "--starttls" {
                continue;
            }
            if a.starts_with("--") {
                skip = true;
                continue;
            }
            out.push(a);
        }
        out
    };
    if positional.len() < 4 {
        eprintln!(
            "usage: load ADDR USER PASSWORD CAFILE [--concurrency N] [--messages N] [--per-session N] [--size BYTES] [--starttls] [--server-pid PID]"
        );
        std::process::exit(2);
    }
    let addr: SocketAddr = positional[0].parse().expect("ADDR is ip:port");
    assert!(
        addr.ip().is_loopback(),
        "load only targets loopback addresses"
    );
    Options {
        addr,
        user: positional[1].clone(),
        password: positional[2].clone(),
        ca: positional[3].clone(),
        concurrency: value("--concurrency", "10").parse().expect("a number"),
        messages: value("--messages", "2000").parse().expect("a number"),
        per_session: value("--per-session", "10").parse().expect("a number"),
        size: value("--size", "4096").parse().expect("a number"),
        starttls: args.iter().any(|a| a == "--starttls"),
        server_pid: args
            .iter()
            .position(|a| a == "--server-pid")
            .and_then(|i| args.get(i + 1))
            .map(|p| p.parse().expect("a pid")),
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn reply(io: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

async fn expect(
    io: &mut BufReader<Box<dyn Stream>>,
    line: &[u8],
    code: u16,
) -> std::io::Result<()> {
    io.get_mut().write_all(line).await?;
    let got = reply(io).await?;
    if got != code {
        return Err(std::io::Error::other(format!(
            "{} answered {got}",
            String::from_utf8_lossy(line).trim()
        )));
    }
    Ok(())
}

/// One session: connect, TLS, AUTH, then `count` messages. Returns the
/// latency of each message (MAIL to the final 250).
async fn session(
    o: &Options,
    tls: tokio_rustls::TlsConnector,
    count: usize,
    body: &[u8],
) -> std::io::Result<Vec<Duration>> {
    let tcp = TcpStream::connect(o.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("a name");
    let mut io: BufReader<Box<dyn Stream>> = if o.starttls {
        let mut plain: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(tcp));
        reply(&mut plain).await?;
        expect(&mut plain, b"EHLO load.example\r\n", 250).await?;
        expect(&mut plain, b"STARTTLS\r\n", 220).await?;
        let inner = plain.into_inner();
        BufReader::new(Box::new(tls.connect(name, inner).await?))
    } else {
        let mut io: BufReader<Box<dyn Stream>> =
            BufReader::new(Box::new(tls.connect(name, tcp).await?));
        reply(&mut io).await?;
        io
    };
    expect(&mut io, b"EHLO load.example\r\n", 250).await?;
    let blob =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", o.user, o.password));
    expect(&mut io, format!("AUTH PLAIN {blob}\r\n").as_bytes(), 235).await?;
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let start = Instant::now();
        // Pipelined, as Outlook and Thunderbird do with PIPELINING.
        let envelope = format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<friend{}@example.org>\r\nDATA\r\n",
            o.user,
            i % 10
        );
        io.get_mut().write_all(envelope.as_bytes()).await?;
        for code in [250, 250, 354] {
            let got = reply(&mut io).await?;
            if got != code {
                return Err(std::io::Error::other(format!("envelope answered {got}")));
            }
        }
        io.get_mut().write_all(body).await?;
        let got = reply(&mut io).await?;
        if got != 250 {
            return Err(std::io::Error::other(format!("DATA answered {got}")));
        }
        latencies.push(start.elapsed());
    }
    let _ = io.get_mut().write_all(b"QUIT\r\n").await;
    Ok(latencies)
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let o = Arc::new(options());
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&o.ca).expect("CAFILE is PEM") {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut body = format!("From: <{}>\r\nSubject: load\r\n\r\n", o.user).into_bytes();
    while body.len() < o.size {
        body.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, again and again.\r\n",
        );
    }
    body.extend_from_slice(b".\r\n");
    let body = Arc::new(body);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu_before = o.server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let remaining = Arc::new(AtomicUsize::new(o.messages));
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..o.concurrency {
            let (o, tls, body, remaining) =
                (o.clone(), tls.clone(), body.clone(), remaining.clone());
            tasks.push(tokio::spawn(async move {
                let mut all = Vec::new();
                let mut errors = 0usize;
                loop {
                    let take = o.per_session.min(remaining.load(Ordering::SeqCst));
                    if take == 0 || remaining.fetch_sub(take, Ordering::SeqCst) < take {
                        break;
                    }
                    match session(&o, tls.clone(), take, &body).await {
                        Ok(l) => all.extend(l),
                        Err(e) => {
                            errors += 1;
                            eprintln!("load: {e}");
                        }
                    }
                }
                (all, errors)
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("a load task");
            latencies.extend(l);
            errors += e;
        }
        (latencies, errors)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut latencies, errors) = results;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let sent = latencies.len();
    println!(
        "load: concurrency={} messages={sent} errors={errors} size={} per-session={} tls={}",
        o.concurrency,
        o.size,
        o.per_session,
        if o.starttls { "starttls" } else { "implicit" }
    );
    println!(
        "load: {:.0} msgs/s  p50={:.1} ms  p90={:.1} ms  p99={:.1} ms",
        sent as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99)
    );
    if let (Some(pid), Some(before)) = (o.server_pid, cpu_before)
        && let Some(after) = cpu_seconds(pid)
    {
        println!(
            "load: server cpu {:.3} ms/msg",
            (after - before) * 1000.0 / sent.max(1) as f64
        );
    }
}
