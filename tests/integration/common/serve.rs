//! `mailwarden serve` as a child process: the real binary, its JSON log
//! collected, its listeners found from their `listener.ready` lines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Every listener a test config has (each on port 0).
const LISTENERS: [&str; 5] = ["Submission", "Submissions", "Portal", "Admin", "Metrics"];

pub struct ServeProcess {
    child: Option<Child>,
    /// Bound address of each listener, by its `kind` in the log.
    addrs: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<Value>>>,
}

impl ServeProcess {
    /// Starts `serve --log-format json` with `config`; returns once every
    /// listener is ready. Panics with the log if the server exits first.
    /// Blocking: call it from `block_in_place` in async tests.
    pub fn start(config: &Path) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailwarden"));
        command.args(["--config", config.to_str().unwrap()]);
        Self::spawn(command)
    }

    /// `start`, with the process's umask set first (e.g. `"000"`): `sh`
    /// sets it and execs the server, so the child is the server itself.
    pub fn start_with_umask(config: &Path, umask: &str) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_mailwarden"))
            .args(["--config", config.to_str().unwrap()]);
        Self::spawn(command)
    }

    /// Runs `command serve --log-format json` (the binary and `--config`
    /// already in `command`) until every listener is ready.
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .args(["serve", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mailwarden serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut addrs, mut seen) = (HashMap::new(), Vec::new());
        while LISTENERS.iter().any(|k| !addrs.contains_key(*k)) {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.wait();
                panic!("serve stopped before it was ready: {seen:#?}");
            };
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if v["event"] == "listener.ready" {
                let addr = v["addr"].as_str().unwrap().parse().unwrap();
                addrs.insert(v["kind"].as_str().unwrap().to_string(), addr);
            }
            seen.push(v);
        }
        let log = Arc::new(Mutex::new(seen));
        let sink = log.clone();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(v);
            }
        });
        Self {
            child: Some(child),
            addrs,
            log,
        }
    }

    /// The address of a listener: `Submission`, `Submissions`, `Portal`...
    pub fn addr(&self, kind: &str) -> SocketAddr {
        self.addrs[kind]
    }

    /// Every log line so far (lines that are not JSON as strings).
    pub fn log(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until `done` holds for the log so far.
    pub async fn wait_log(&self, what: &str, done: impl Fn(&[Value]) -> bool) {
        for _ in 0..1500 {
            if done(&self.log.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}: not in the log within 30s: {:#?}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits (up to 30 s) until the process is gone (something else kills it).
    pub async fn wait_exit(mut self) {
        let mut child = self.child.take().unwrap();
        for _ in 0..1500 {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        panic!("the server did not exit within 30s");
    }

    pub fn submissions(&self) -> SocketAddr {
        self.addr("Submissions")
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; the exit status once it has stopped.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child.wait().unwrap()
    }
}

impl Drop for ServeProcess {
    /// A test that fails midway leaves no server behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `serve` that must refuse to start: its stderr.
pub fn serve_refused(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
