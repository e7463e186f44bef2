//! The real `mailwarden serve` binary as a child process: started on a
//! config, its listeners read from its JSON log, killed or stopped for real.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct ServerProcess {
    child: Child,
    /// Listener kind (`Submission`, `Submissions`, `Portal`, `Admin`,
    /// `Metrics`) → the first address it listens on.
    addrs: HashMap<String, SocketAddr>,
}

const KINDS: [&str; 5] = ["Submission", "Submissions", "Portal", "Admin", "Metrics"];

impl ServerProcess {
    /// Starts the binary and returns once every listener is ready.
    pub fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "serve",
                "--log-format",
                "json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mailwarden serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut addrs = HashMap::new();
        while KINDS.iter().any(|k| !addrs.contains_key(*k)) {
            let line = lines.next().expect("server log line").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["event"] == "listener.ready"
                && let (Some(kind), Some(addr)) = (v["kind"].as_str(), v["addr"].as_str())
            {
                addrs
                    .entry(kind.to_string())
                    .or_insert_with(|| addr.parse().unwrap());
            }
        }
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addrs }
    }

    pub fn addr(&self, kind: &str) -> SocketAddr {
        self.addrs[kind]
    }

    pub fn submissions(&self) -> SocketAddr {
        self.addr("Submissions")
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status once it has stopped.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    /// A failed test never leaves a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
