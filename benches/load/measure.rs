//! What the tool reads off the machine and the server: CPU time of a
//! process tree from /proc, resident memory, and mailwarden's counters from
//! its metrics listener.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds used by these processes and every descendant, including the
/// children they have already reaped (Postfix's master reaps its smtpd and
/// cleanup processes, whose time then shows in the master's cutime).
pub fn tree_cpu_seconds(roots: &[u32]) -> f64 {
    let mut parent = HashMap::new();
    let mut ticks = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Fields after the name: state(0) ppid(1) ... utime(11) stime(12)
        // cutime(13) cstime(14).
        parent.insert(pid, num(1) as u32);
        ticks.insert(pid, num(11) + num(12) + num(13) + num(14));
    }
    let mut tree: HashSet<u32> = roots.iter().copied().collect();
    loop {
        let before = tree.len();
        for (pid, ppid) in &parent {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree.iter().filter_map(|p| ticks.get(p)).sum::<u64>() as f64 / TICKS
}

/// CPU seconds of this process (the load tool itself).
pub fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, a)| a)
        .split_whitespace()
        .collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (num(11) + num(12)) / TICKS
}

/// Resident memory of one process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// mailwarden's counters that tell durability and delivery apart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub accepted: f64,
    pub fsyncs: f64,
    pub delivered: f64,
    pub queued: f64,
}

/// Reads the counters from the metrics listener (plain HTTP/1.0).
pub async fn counters(addr: SocketAddr) -> Option<Counters> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name == "mailwarden_messages_accepted_total" {
            c.accepted += value;
        } else if name == "mailwarden_spool_fsyncs_total" {
            c.fsyncs += value;
        } else if name.starts_with("mailwarden_deliveries_total") && name.contains("success") {
            c.delivered += value;
        } else if name == "mailwarden_queue_messages" {
            c.queued += value;
        }
    }
    Some(c)
}
