//! Real third-party clients, as users connect: swaks, curl, msmtp and
//! Python's smtplib, each through STARTTLS and implicit TLS, with AUTH PLAIN
//! and LOGIN, a login name containing '@', and the server's certificate
//! verified. `scripts/test` installs them; a missing client fails the test
//! rather than skipping it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{ALICE, PASSWORD, TestServer, read_outbox};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    StartTls,
    Implicit,
}

#[derive(Debug, Clone, Copy)]
enum Mech {
    Plain,
    Login,
}

impl fmt::Display for Mech {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mech::Plain => "PLAIN",
            Mech::Login => "LOGIN",
        })
    }
}

/// One submission for a client to make.
struct Job {
    port: u16,
    tls: Tls,
    mech: Mech,
    password: &'static str,
    /// Unique per job; it becomes the Subject, to find the message again.
    token: String,
    /// The message (CRLF) for clients that send a file.
    message: PathBuf,
    cert: PathBuf,
    dir: PathBuf,
}

const RCPT: &str = "bob@example.org";
const WRONG_PASSWORD: &str = "not the password at all";

fn message_text(token: &str) -> String {
    format!(
        "From: Alice <{ALICE}>\r\nTo: <{RCPT}>\r\nSubject: {token}\r\n\r\nSent by a real client.\r\n.leading dot\r\nend\r\n"
    )
}

fn swaks(job: &Job) -> Command {
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", "127.0.0.1", "--port", &job.port.to_string()])
        .arg(match job.tls {
            Tls::StartTls => "--tls",
            Tls::Implicit => "--tlsc",
        })
        .args(["--tls-verify", "--tls-ca-path"])
        .arg(&job.cert)
        .args(["--ehlo", "client.test.example", "--pipeline"])
        .args(["--auth", &job.mech.to_string(), "--auth-user", ALICE])
        .args([
            "--auth-password",
            job.password,
            "--from",
            ALICE,
            "--to",
            RCPT,
        ])
        .args(["--header", &format!("Subject: {}", job.token)])
        .args(["--body", "Sent by a real client.\n.leading dot\nend"])
        .args(["--timeout", "20"]);
    cmd
}

fn curl(job: &Job) -> Command {
    let url = match job.tls {
        Tls::StartTls => format!("smtp://127.0.0.1:{}/client.test.example", job.port),
        Tls::Implicit => format!("smtps://127.0.0.1:{}/client.test.example", job.port),
    };
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "--max-time", "20", "--url", &url]);
    if job.tls == Tls::StartTls {
        // --ssl-reqd: STARTTLS or fail (plain --ssl may fall back).
        cmd.arg("--ssl-reqd");
    }
    cmd.arg("--cacert")
        .arg(&job.cert)
        .args(["--user", &format!("{ALICE}:{}", job.password)])
        .args(["--login-options", &format!("AUTH={}", job.mech)])
        .args(["--mail-from", ALICE, "--mail-rcpt", RCPT, "--upload-file"])
        .arg(&job.message);
    cmd
}

fn msmtp(job: &Job) -> Command {
    let conf = job.dir.join(format!("{}.msmtprc", job.token));
    let text = format!(
        "defaults\ntimeout 20\naccount test\nhost 127.0.0.1\nport {port}\n\
         domain client.test.example\ntls on\ntls_starttls {starttls}\n\
         tls_trust_file {cert}\nauth {mech}\nuser {ALICE}\npassword \"{password}\"\n\
         from {ALICE}\n",
        port = job.port,
        starttls = if job.tls == Tls::StartTls {
            "on"
        } else {
            "off"
        },
        cert = job.cert.display(),
        mech = job.mech.to_string().to_lowercase(),
        password = job.password,
    );
    std::fs::write(&conf, text).unwrap();
    // msmtp refuses a config file with a password others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new("msmtp");
    cmd.arg("-C")
        .arg(&conf)
        .args(["-a", "test", "-v", RCPT])
        .stdin(std::fs::File::open(&job.message).unwrap());
    cmd
}

fn smtplib(job: &Job) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtplib_send.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--port", &job.port.to_string()])
        .arg(match job.tls {
            Tls::StartTls => "--starttls",
            Tls::Implicit => "--implicit",
        })
        .args(["--auth", &job.mech.to_string(), "--user", ALICE])
        .args(["--password", job.password, "--from", ALICE, "--to", RCPT])
        .arg("--message")
        .arg(&job.message)
        .arg("--cafile")
        .arg(&job.cert);
    cmd
}

/// Runs a client; (exit ok, stdout + stderr).
async fn run(name: &'static str, mut cmd: Command) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("{name} must be installed (scripts/test installs it): {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

/// Four sends (STARTTLS and implicit TLS, PLAIN and LOGIN) that must land
/// in the outbox, and one wrong password that must fail with 535.
async fn exercise(name: &'static str, build: fn(&Job) -> Command) {
    exercise_with(name, build, "").await;
}

/// `exercise` against a server with `extra` in its config.
async fn exercise_with(name: &'static str, build: fn(&Job) -> Command, extra: &str) {
    let server = TestServer::with_alice(extra).await;
    let dir = tempfile::tempdir().unwrap();
    let job = |tls, mech, password, token: String| {
        let message = dir.path().join(format!("{token}.eml"));
        std::fs::write(&message, message_text(&token)).unwrap();
        Job {
            port: match tls {
                Tls::StartTls => server.submission().port(),
                Tls::Implicit => server.submissions().port(),
            },
            tls,
            mech,
            password,
            token,
            message,
            cert: server.cert_path(),
            dir: dir.path().to_path_buf(),
        }
    };
    let mut sent = 0;
    for tls in [Tls::StartTls, Tls::Implicit] {
        for mech in [Mech::Plain, Mech::Login] {
            let token = format!("{name}-{tls:?}-{mech}");
            let (ok, transcript) = run(name, build(&job(tls, mech, PASSWORD, token.clone()))).await;
            assert!(ok, "{token} failed:\n{transcript}");
            // swaks exits 0 on some refusals; the transcript says more.
            assert!(
                transcript.contains("250 2.0.0 Ok: queued as"),
                "{token}:\n{transcript}"
            );
            // The client really used the mechanism asked for.
            let events = server.events.snapshot();
            let auth = events.iter().rev().find(|e| e.name() == "auth.success");
            assert_eq!(
                auth.and_then(|e| e.mechanism),
                Some(mech.to_string().as_str()),
                "{token}"
            );
            sent += 1;
            let outbox = server.wait_outbox(sent).await;
            let text = outbox
                .iter()
                .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
                .find(|m| m.contains(&format!("\r\nSubject: {token}\r\n")))
                .unwrap_or_else(|| panic!("{token}: not in the outbox"));
            assert!(text.starts_with("Received: from "), "{text}");
            assert!(text.contains(" with ESMTPSA id "), "{text}");
            assert!(text.contains(&format!(" for <{RCPT}>; ")), "{text}");
            // Dot-stuffing survived the round trip.
            assert!(text.contains("\r\n.leading dot\r\nend\r\n"), "{text}");
        }
    }
    let token = format!("{name}-wrong-password");
    let (ok, transcript) = run(
        name,
        build(&job(
            Tls::StartTls,
            Mech::Plain,
            WRONG_PASSWORD,
            token.clone(),
        )),
    )
    .await;
    assert!(!ok, "{token} succeeded:\n{transcript}");
    assert!(
        transcript.contains("535 5.7.8 Authentication credentials invalid"),
        "{token}:\n{transcript}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(read_outbox(&server.outbox()).len(), sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_sends_and_sees_a_wrong_password_fail() {
    exercise("swaks", swaks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_sends_and_sees_a_wrong_password_fail() {
    exercise("curl", curl).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn msmtp_sends_and_sees_a_wrong_password_fail() {
    exercise("msmtp", msmtp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smtplib_sends_and_sees_a_wrong_password_fail() {
    exercise("smtplib", smtplib).await;
}

/// Old Outlook's `250-AUTH=PLAIN LOGIN` next to the standard line confuses
/// none of the real clients.
#[tokio::test(flavor = "multi_thread")]
async fn every_client_still_sends_with_the_legacy_auth_line() {
    type Build = fn(&Job) -> Command;
    let clients: [(&'static str, Build); 4] = [
        ("swaks", swaks),
        ("curl", curl),
        ("msmtp", msmtp),
        ("smtplib", smtplib),
    ];
    for (name, build) in clients {
        exercise_with(name, build, "[smtp]\nlegacy_auth_line = true\n").await;
    }
}
