//! A private PostgreSQL 15 for one test: initdb into a temporary folder,
//! started on a free loopback port, stopped and removed on drop. As root
//! the server runs as the `postgres` user (initdb refuses root). Missing
//! binaries skip the test with a printed reason, except under `CI=true`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    base: PathBuf,
    pub port: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `bin args` as the user PostgreSQL runs as.
fn pg(bin: &str, args: &[&str]) -> Output {
    let path = Path::new(BIN).join(bin);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    command.args(args).output().expect("run a PostgreSQL tool")
}

fn pg_owned(bin: &str, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pg(bin, &args)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// A running server, or `None` (with the reason printed) when the
    /// Debian `postgresql` 15 binaries are not installed.
    pub fn start() -> Option<Self> {
        if !Path::new(BIN).join("initdb").exists() {
            let reason = format!(
                "PostgreSQL 15 is not installed ({BIN} is missing): apt-get install postgresql"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        let base = tempfile::Builder::new()
            .prefix("pgtest-")
            .tempdir()
            .unwrap()
            .keep();
        let chmod = |p: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(&base, 0o755);
        for d in ["data", "sock"] {
            std::fs::create_dir(base.join(d)).unwrap();
        }
        std::fs::write(base.join("pg.log"), b"").unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(base.join("data"))
                .arg(base.join("sock"))
                .arg(base.join("pg.log"))
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = base.join("data");
        let out = pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {out:?}");
        let mut server = Self { base, port: 0 };
        for _ in 0..5 {
            server.port = free_port();
            if server.pg_ctl_start() {
                return Some(server);
            }
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB",
            self.port,
            self.base.join("sock").display()
        );
        pg(
            "pg_ctl",
            &[
                "-D",
                self.base.join("data").to_str().unwrap(),
                "-l",
                self.base.join("pg.log").to_str().unwrap(),
                "-w",
                "start",
                "-o",
                &options,
            ],
        )
        .status
        .success()
    }

    /// Starts it again on the same port (after `stop`).
    pub fn restart(&self) {
        assert!(self.pg_ctl_start(), "restart: {}", self.log());
    }

    /// Stops it at once (the outage tests).
    pub fn stop(&self) {
        pg(
            "pg_ctl",
            &[
                "-D",
                self.base.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("pg.log")).unwrap_or_default()
    }

    /// How the client tools reach the server (its socket, as `postgres`).
    fn connection(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.base.join("sock").display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    /// A new, empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let mut args = self.connection();
        args.push(name.to_string());
        let out = pg_owned("createdb", &args);
        assert!(out.status.success(), "createdb: {out:?}");
        self.url(name)
    }

    /// Turns TLS on with this certificate and key (copied into the data
    /// folder, where the server may read them).
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        let data = self.base.join("data");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
        self.query("postgres", "ALTER SYSTEM SET ssl = on");
        self.query("postgres", "SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until new sessions see it.
        for _ in 0..100 {
            if self.query("postgres", "SHOW ssl").trim() == "on" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("PostgreSQL did not turn TLS on: {}", self.log());
    }

    /// `sql` run by psql in database `name`: its rows, one per line,
    /// fields separated by `|`.
    pub fn query(&self, name: &str, sql: &str) -> String {
        let mut args = self.connection();
        for a in ["-d", name, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql] {
            args.push(a.to_string());
        }
        let out = pg_owned("psql", &args);
        assert!(out.status.success(), "psql: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
