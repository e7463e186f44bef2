//! One SMTP client session: connect, TLS, EHLO, AUTH, then messages with a
//! pipelined envelope (MAIL, RCPT..., DATA), as Outlook and Thunderbird send
//! them when the server offers PIPELINING.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

use crate::options::{Mechanism, Options, Tls};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a session step failed, grouped by phase and reply for the report.
#[derive(Debug)]
pub struct Failure {
    pub phase: &'static str,
    pub what: String,
    /// The connection can go on (the server answered; we sent RSET).
    pub recoverable: bool,
}

impl Failure {
    /// The key errors are counted under: phase plus the reply code and
    /// enhanced status (not the free text, which may name the account).
    pub fn key(&self) -> String {
        format!("{}: {}", self.phase, self.what)
    }
}

/// How long each step of opening a session took.
pub struct Setup {
    pub connect: Duration,
    pub tls: Duration,
    pub auth: Duration,
}

/// How long each step of one message took.
pub struct Sent {
    pub envelope: Duration,
    pub data: Duration,
}

/// What every session shares: options, TLS settings, the message.
pub struct Client {
    pub options: Arc<Options>,
    /// Who this client sends as: (address, password).
    user: String,
    password: String,
    tls: tokio_rustls::TlsConnector,
    envelope: Vec<u8>,
    body: Vec<u8>,
}

pub struct Connection {
    io: BufReader<Box<dyn Stream>>,
    line: Vec<u8>,
    timeout: Duration,
}

impl Client {
    pub fn new(
        options: Arc<Options>,
        tls: tokio_rustls::TlsConnector,
        (user, password): (String, String),
    ) -> Client {
        let mut envelope = format!("MAIL FROM:<{}> SIZE={}\r\n", user, options.size);
        for r in 0..options.rcpts {
            envelope.push_str(&format!("RCPT TO:<friend{r}@example.org>\r\n"));
        }
        envelope.push_str("DATA\r\n");
        let to: Vec<String> = (0..options.rcpts)
            .map(|r| format!("friend{r}@example.org"))
            .collect();
        let mut body = format!(
            "From: Load <{}>\r\nTo: {}\r\nSubject: load test\r\n\r\n",
            user,
            to.join(", ")
        )
        .into_bytes();
        while body.len() + 3 < options.size {
            let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
            let room = options.size - 3 - body.len();
            if room >= line.len() {
                body.extend_from_slice(line);
            } else {
                body.extend(std::iter::repeat_n(b'x', room.saturating_sub(2)));
                body.extend_from_slice(b"\r\n");
                break;
            }
        }
        body.extend_from_slice(b".\r\n");
        Client {
            options,
            user,
            password,
            tls,
            envelope: envelope.into_bytes(),
            body,
        }
    }

    /// Connects (from `source` when given), does TLS, EHLO and AUTH.
    pub async fn open(&self, source: Option<IpAddr>) -> Result<(Connection, Setup), Failure> {
        let o = &self.options;
        let start = Instant::now();
        let tcp = connect(o.addr, source)
            .await
            .map_err(|e| io_failure("connect", &e))?;
        let mut plain = Connection {
            io: BufReader::new(Box::new(tcp) as Box<dyn Stream>),
            line: Vec::with_capacity(512),
            timeout: o.reply_timeout(),
        };
        // Port 587: greeting, EHLO and STARTTLS in the clear first.
        let connect = if o.tls == Tls::Starttls {
            plain.expect("greeting", None, 220).await?;
            let connect = start.elapsed();
            plain
                .expect("ehlo", Some(b"EHLO load.example\r\n"), 250)
                .await?;
            plain.expect("starttls", Some(b"STARTTLS\r\n"), 220).await?;
            connect
        } else {
            start.elapsed()
        };
        let name = ServerName::try_from("localhost").expect("a name");
        let stream = self
            .tls
            .connect(name, plain.io.into_inner())
            .await
            .map_err(|e| io_failure("tls", &e))?;
        let mut conn = Connection {
            io: BufReader::new(Box::new(stream) as Box<dyn Stream>),
            line: plain.line,
            timeout: plain.timeout,
        };
        if o.tls == Tls::Implicit {
            conn.expect("greeting", None, 220).await?;
        }
        let tls = start.elapsed() - connect;
        let auth_start = Instant::now();
        conn.expect("ehlo", Some(b"EHLO load.example\r\n"), 250)
            .await?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        match o.auth {
            Mechanism::Plain => {
                let line = format!(
                    "AUTH PLAIN {}\r\n",
                    b64(&format!("\0{}\0{}", self.user, self.password))
                );
                conn.expect("auth", Some(line.as_bytes()), 235).await?;
            }
            Mechanism::Login => {
                conn.expect("auth", Some(b"AUTH LOGIN\r\n"), 334).await?;
                let user = format!("{}\r\n", b64(&self.user));
                conn.expect("auth", Some(user.as_bytes()), 334).await?;
                let pass = format!("{}\r\n", b64(&self.password));
                conn.expect("auth", Some(pass.as_bytes()), 235).await?;
            }
        }
        let setup = Setup {
            connect,
            tls,
            auth: auth_start.elapsed(),
        };
        Ok((conn, setup))
    }

    /// Sends one message on an open session.
    pub async fn send(&self, conn: &mut Connection) -> Result<Sent, Failure> {
        let start = Instant::now();
        conn.write("envelope", &self.envelope).await?;
        let mut refused = None;
        for (i, want) in std::iter::once(250)
            .chain(std::iter::repeat_n(250, self.options.rcpts))
            .chain(std::iter::once(354))
            .enumerate()
        {
            let phase = match i {
                0 => "MAIL",
                _ if want == 354 => "DATA",
                _ => "RCPT",
            };
            let (code, text) = conn.reply(phase).await?;
            if code != want && refused.is_none() {
                refused = Some(Failure {
                    phase,
                    what: text,
                    recoverable: true,
                });
            }
            if want == 354 && code != 354 {
                // No data phase: reset and report the first refusal.
                conn.write("RSET", b"RSET\r\n").await?;
                conn.reply("RSET").await?;
                return Err(refused.expect("a refusal"));
            }
        }
        let envelope = start.elapsed();
        // 354 came although something before it was refused: send the
        // message anyway (the server will refuse it) to stay in sync.
        conn.write("data", &self.body).await?;
        let (code, text) = conn.reply("end of data").await?;
        if let Some(f) = refused {
            return Err(f);
        }
        if code != 250 {
            return Err(Failure {
                phase: "end of data",
                what: text,
                recoverable: true,
            });
        }
        Ok(Sent {
            envelope,
            data: start.elapsed() - envelope,
        })
    }
}

impl Connection {
    async fn write(&mut self, phase: &'static str, bytes: &[u8]) -> Result<(), Failure> {
        self.io
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| io_failure(phase, &e))
    }

    /// Reads one whole (possibly multi-line) reply: its code and the code
    /// with the enhanced status, e.g. "451 4.7.1".
    async fn reply(&mut self, phase: &'static str) -> Result<(u16, String), Failure> {
        loop {
            self.line.clear();
            let read =
                tokio::time::timeout(self.timeout, self.io.read_until(b'\n', &mut self.line));
            match read.await {
                Err(_) => {
                    return Err(Failure {
                        phase,
                        what: "timeout".into(),
                        recoverable: false,
                    });
                }
                Ok(Err(e)) => return Err(io_failure(phase, &e)),
                Ok(Ok(0)) => {
                    return Err(Failure {
                        phase,
                        what: "connection closed".into(),
                        recoverable: false,
                    });
                }
                Ok(Ok(_)) => {}
            }
            if self.line.get(3) == Some(&b'-') {
                continue;
            }
            let text = String::from_utf8_lossy(&self.line);
            let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let short: Vec<&str> = text.split_whitespace().take(2).collect();
            let short = match short.as_slice() {
                [c, e] if e.chars().next().is_some_and(|ch| ch.is_ascii_digit()) => {
                    format!("{c} {e}")
                }
                [c, ..] => c.to_string(),
                [] => "empty reply".into(),
            };
            return Ok((code, short));
        }
    }

    async fn expect(
        &mut self,
        phase: &'static str,
        line: Option<&[u8]>,
        want: u16,
    ) -> Result<(), Failure> {
        if let Some(line) = line {
            self.write(phase, line).await?;
        }
        let (code, text) = self.reply(phase).await?;
        if code != want {
            return Err(Failure {
                phase,
                what: text,
                recoverable: false,
            });
        }
        Ok(())
    }

    /// Says QUIT and waits for the 221, as a polite client does.
    pub async fn quit(mut self) {
        if self.write("QUIT", b"QUIT\r\n").await.is_ok() {
            let _ = self.reply("QUIT").await;
        }
        let _ = self.io.get_mut().shutdown().await;
    }
}

async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn io_failure(phase: &'static str, e: &std::io::Error) -> Failure {
    Failure {
        phase,
        what: format!("{:?}", e.kind()),
        recoverable: false,
    }
}
