//! A real Dovecot 2.3 for tests: its config in a temp folder, IMAP on an
//! unprivileged port, run as `nobody` when the tests run as root. Its
//! passdb is mailwarden (contrib/dovecot, the files the operator guide
//! shows) or, for comparison, a passwd-file. Logins go through Python's
//! imaplib from a chosen source address.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const CONF_SNIPPET: &str = include_str!("../../../contrib/dovecot/mailwarden.conf");
pub const LUA_SCRIPT: &str = include_str!("../../../contrib/dovecot/mailwarden-auth.lua");

/// The token the tests' mailwarden and Dovecot share.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef-test-token";

/// What Dovecot authenticates against.
pub enum Passdb {
    /// mailwarden's endpoint at this address.
    Mailwarden(SocketAddr),
    /// Dovecot's own passwd-file with these lines.
    PasswdFile(String),
}

pub struct Dovecot {
    dir: TempDir,
    child: Child,
    pub port: u16,
}

/// The dovecot binary, or `None` after printing why the test is skipped.
pub fn binary() -> Option<PathBuf> {
    for path in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        if Path::new(path).exists() {
            return Some(PathBuf::from(path));
        }
    }
    eprintln!("SKIPPED: no dovecot binary (apt-get install dovecot-imapd dovecot-auth-lua)");
    None
}

/// The token file for mailwarden's `[dovecot] token_file`, written in `dir`.
pub fn write_token(dir: &Path) -> PathBuf {
    let path = dir.join("dovecot.token");
    std::fs::write(&path, TOKEN).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The `[dovecot]` table for a test server whose folder is `dir`.
pub fn mailwarden_config(token: &Path) -> String {
    format!(
        "[dovecot]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token.display()
    )
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Dovecot {
    pub fn start(binary: &Path, passdb: Passdb) -> Self {
        let root = run("id", &["-u"]) == "0";
        let (user, group) = match root {
            true => ("nobody".to_string(), run("id", &["-gn", "nobody"])),
            false => (run("id", &["-un"]), run("id", &["-gn"])),
        };
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir(t.join(sub)).unwrap();
        }
        let port = free_port();
        let auth = match passdb {
            Passdb::Mailwarden(endpoint) => {
                let script = LUA_SCRIPT
                    .replace(
                        "http://127.0.0.1:8091/dovecot/auth",
                        &format!("http://{endpoint}/dovecot/auth"),
                    )
                    .replace(
                        "/etc/dovecot/mailwarden.token",
                        &t.join("token").display().to_string(),
                    );
                std::fs::write(t.join("mailwarden-auth.lua"), script).unwrap();
                std::fs::write(t.join("token"), TOKEN).unwrap();
                CONF_SNIPPET
                    .replace(
                        "/etc/dovecot/mailwarden-auth.lua",
                        &t.join("mailwarden-auth.lua").display().to_string(),
                    )
                    .replace("uid=vmail gid=vmail", &format!("uid={user} gid={group}"))
                    .replace("/var/vmail", &t.join("mail").display().to_string())
            }
            Passdb::PasswdFile(lines) => {
                std::fs::write(t.join("passwd"), lines).unwrap();
                format!(
                    "auth_mechanisms = plain login\nauth_cache_size = 0\npassdb {{\n  driver = passwd-file\n  args = {}\n}}\nuserdb {{\n  driver = static\n  args = uid={user} gid={group} home={}/%d/%n\n}}\n",
                    t.join("passwd").display(),
                    t.join("mail").display()
                )
            }
        };
        let conf = format!(
            "base_dir = {t}/run\nstate_dir = {t}/state\nlog_path = {t}/dovecot.log\n\
             protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
             default_login_user = {user}\ndefault_internal_user = {user}\n\
             default_internal_group = {group}\nmail_location = maildir:{t}/mail/%u\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service anvil {{\n  chroot =\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n\
             {auth}",
            t = t.display()
        );
        std::fs::write(t.join("dovecot.conf"), conf).unwrap();
        let conf = t.join("dovecot.conf").display().to_string();
        let mut command = match root {
            true => {
                run(
                    "chown",
                    &["-R", &format!("nobody:{group}"), &t.display().to_string()],
                );
                let mut c = Command::new("setpriv");
                c.args(["--reuid=nobody", "--regid", &group, "--clear-groups"])
                    .arg(binary);
                c
            }
            false => Command::new(binary),
        };
        let child = command
            .args(["-F", "-c", &conf])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dovecot");
        let dovecot = Self { dir, child, port };
        dovecot.wait_for_port();
        dovecot
    }

    fn wait_for_port(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Logs in once per attempt (in order, or all at once with
    /// `parallel`), over IMAP from the attempt's source address. Returns
    /// each outcome (`OK` after a successful SELECT INBOX, `FAILED`,
    /// `TEMPFAIL`, or the error text) with its login time in ms.
    pub async fn logins(&self, attempts: &[Attempt<'_>], parallel: bool) -> Vec<(String, f64)> {
        let input = serde_json::to_string(
            &attempts
                .iter()
                .map(|a| serde_json::json!({"src": a.from, "user": a.user, "password": a.password}))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let port = self.port.to_string();
        let mode = if parallel { "parallel" } else { "serial" };
        let out = tokio::task::spawn_blocking(move || {
            let mut c = Command::new("python3");
            c.args(["-c", IMAP_CLIENT, &port, mode]);
            crate::common::output_with_stdin(&mut c, &input)
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "imaplib: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        results
            .into_iter()
            .map(|r| {
                (
                    r["result"].as_str().unwrap().to_string(),
                    r["ms"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    /// One login's outcome.
    pub async fn login(&self, from: &str, user: &str, password: &str) -> String {
        let attempt = Attempt {
            from,
            user,
            password,
        };
        self.logins(&[attempt], false).await.remove(0).0
    }
}

pub struct Attempt<'a> {
    pub from: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // setpriv execs dovecot: this pid is the master, which stops its
        // children when it goes.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

const IMAP_CLIENT: &str = r#"
import concurrent.futures, imaplib, json, socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
attempts = json.load(sys.stdin)

class From(imaplib.IMAP4):
    def __init__(self, src):
        self.src = src
        super().__init__("127.0.0.1", port, timeout=30)
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.src, 0))

def one(a):
    c = From(a["src"])
    start = time.perf_counter()
    try:
        c.login(a["user"], a["password"])
        ms = (time.perf_counter() - start) * 1000
        typ, _ = c.select("INBOX")
        result = "OK" if typ == "OK" else "SELECT " + typ
    except imaplib.IMAP4.error as e:
        ms = (time.perf_counter() - start) * 1000
        text = str(e)
        result = "FAILED" if "[AUTHENTICATIONFAILED]" in text else "TEMPFAIL" if "[UNAVAILABLE]" in text else text
    try:
        c.logout()
    except Exception:
        pass
    return {"result": result, "ms": ms}

if mode == "parallel":
    with concurrent.futures.ThreadPoolExecutor(len(attempts)) as pool:
        results = list(pool.map(one, attempts))
else:
    results = [one(a) for a in attempts]
print(json.dumps(results))
"#;
