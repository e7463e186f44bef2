//! A deliberately plain SMTP client for tests: it sends exactly the bytes a
//! test gives it and returns each reply whole.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Every line, without the code and separator, joined by '\n'.
    pub text: String,
}

impl Reply {
    /// The whole last line as sent, e.g. `250 2.0.0 Ok`.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text.lines().last().unwrap_or(""))
    }
}

pub struct Client {
    io: Option<BufReader<Box<dyn Stream>>>,
    cert: Vec<u8>,
}

const TIMEOUT: Duration = Duration::from_secs(20);

impl Client {
    /// Connects in plaintext and reads the greeting.
    pub async fn plain(addr: SocketAddr, cert: &Path) -> (Self, Reply) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let mut client = Self {
            io: Some(BufReader::new(Box::new(tcp))),
            cert: std::fs::read(cert).expect("server certificate"),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Connects in plaintext from a chosen loopback source address.
    pub async fn plain_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
        cert: &Path,
    ) -> (Self, Reply) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind source");
        let tcp = socket.connect(addr).await.expect("connect");
        let mut client = Self {
            io: Some(BufReader::new(Box::new(tcp))),
            cert: std::fs::read(cert).expect("server certificate"),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Connects with TLS from the first byte (port 465 style).
    pub async fn implicit_tls(addr: SocketAddr, cert: &Path) -> (Self, Reply) {
        Self::implicit_tls_from(addr, None, cert).await
    }

    /// Implicit TLS from a chosen loopback source address (127.0.0.0/8 is
    /// all ours), to look like another client.
    pub async fn implicit_tls_from(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        cert: &Path,
    ) -> (Self, Reply) {
        let tcp = match source {
            None => TcpStream::connect(addr).await.expect("connect"),
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .expect("bind a loopback source");
                socket.connect(addr).await.expect("connect")
            }
        };
        tcp.set_nodelay(true).unwrap();
        let cert = std::fs::read(cert).expect("server certificate");
        let tls = handshake(Box::new(tcp), &cert).await;
        let mut client = Self {
            io: Some(BufReader::new(tls)),
            cert,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// TLS over an already connected stream (e.g. after a PROXY header).
    pub async fn over_tls(tcp: TcpStream, cert: &Path) -> (Self, Reply) {
        let cert = std::fs::read(cert).expect("server certificate");
        let tls = handshake(Box::new(tcp), &cert).await;
        let mut client = Self {
            io: Some(BufReader::new(tls)),
            cert,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Plaintext over an already connected stream; reads the greeting.
    pub async fn over_plain(tcp: TcpStream, cert: &Path) -> (Self, Reply) {
        let mut client = Self::over_plain_raw(tcp, cert);
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Plaintext over a connected stream, reading nothing yet.
    pub fn over_plain_raw(tcp: TcpStream, cert: &Path) -> Self {
        Self {
            io: Some(BufReader::new(Box::new(tcp))),
            cert: std::fs::read(cert).expect("server certificate"),
        }
    }

    fn io(&mut self) -> &mut BufReader<Box<dyn Stream>> {
        self.io.as_mut().expect("connection is open")
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let io = self.io();
        io.get_mut().write_all(bytes).await.expect("write");
        io.get_mut().flush().await.expect("flush");
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Reply {
        self.try_reply().await.expect("a reply before EOF")
    }

    /// `None` when the server closed the connection.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.io().read_line(&mut line))
                .await
                .expect("reply within the timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("numeric reply code");
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    pub async fn ehlo(&mut self) -> Reply {
        let r = self.cmd("EHLO client.test.example").await;
        assert_eq!(r.code, 250, "{r:?}");
        r
    }

    /// STARTTLS, then the TLS handshake on the same connection.
    pub async fn starttls(&mut self) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.line(), "220 2.0.0 Ready to start TLS");
        self.upgrade().await;
    }

    /// The TLS handshake on the current connection, dropping buffered input.
    pub async fn upgrade(&mut self) {
        let plain = self.io.take().expect("open").into_inner();
        let tls = handshake(plain, &self.cert).await;
        self.io = Some(BufReader::new(tls));
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        let blob = STANDARD.encode(format!("\0{user}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {blob}")).await
    }

    pub async fn auth_login(&mut self, user: &str, password: &str) -> Reply {
        let r = self.cmd("AUTH LOGIN").await;
        assert_eq!(r.line(), "334 VXNlcm5hbWU6");
        let r = self.cmd(&STANDARD.encode(user)).await;
        assert_eq!(r.line(), "334 UGFzc3dvcmQ6");
        self.cmd(&STANDARD.encode(password)).await
    }

    /// MAIL, RCPT..., DATA, body (dot-stuffed here), returns the final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(r.code, 250, "MAIL: {r:?}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert_eq!(r.code, 250, "RCPT: {r:?}");
        }
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA: {r:?}");
        self.send_raw(&dot_stuff(body)).await;
        self.send_raw(b".\r\n").await;
        self.reply().await
    }

    /// MAIL, RCPTs and DATA with a short message from `from`; the first
    /// refusal (after RSET when a RCPT was refused mid-transaction, as a
    /// parallel session may block the account) or the final reply, as a line.
    pub async fn try_send(
        &mut self,
        from: &str,
        rcpts: &[String],
        subject: &str,
        body: &str,
    ) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if r.code != 250 {
            return r.line();
        }
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if r.code != 250 {
                self.cmd("RSET").await;
                return r.line();
            }
        }
        assert_eq!(self.cmd("DATA").await.code, 354);
        let message = format!("From: <{from}>\r\nSubject: {subject}\r\n\r\n{body}\r\n.\r\n");
        self.send_raw(message.as_bytes()).await;
        self.reply().await.line()
    }

    /// MAIL and RCPT as `from` to `to`, each answered 250.
    pub async fn envelope(&mut self, from: &str, to: &[&str]) {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(r.code, 250, "MAIL: {r:?}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert_eq!(r.code, 250, "RCPT: {r:?}");
        }
    }

    /// DATA, then `raw` exactly as given (already dot-stuffed and ended).
    pub async fn data_raw(&mut self, raw: &[u8]) -> Reply {
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA: {r:?}");
        self.send_raw(raw).await;
        self.reply().await
    }

    /// DATA with a CRLF message, dot-stuffed and ended here.
    pub async fn data(&mut self, message: &[u8]) -> Reply {
        let mut raw = dot_stuff(message);
        raw.extend_from_slice(b".\r\n");
        self.data_raw(&raw).await
    }

    /// `BDAT <len> [LAST]` with `chunk`.
    pub async fn bdat(&mut self, chunk: &[u8], last: bool) -> Reply {
        let last = if last { " LAST" } else { "" };
        let mut raw = format!("BDAT {}{last}\r\n", chunk.len()).into_bytes();
        raw.extend_from_slice(chunk);
        self.send_raw(&raw).await;
        self.reply().await
    }

    /// Whether the server closed the connection (EOF or reset).
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(TIMEOUT, self.io().read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Dot-stuffs a CRLF message body.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

async fn handshake(stream: Box<dyn Stream>, cert_pem: &[u8]) -> Box<dyn Stream> {
    mailwarden::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.expect("PEM certificate")).expect("add root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, stream))
        .await
        .expect("handshake within the timeout")
        .expect("TLS handshake");
    Box::new(tls)
}
