//! PROXY protocol v1/v2 from an allowed address sets the client IP; from
//! any other address it is refused.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use crate::common::client::Client;
use crate::common::{PASSWORD, TestServer};

const ALLOWED: &str = "127.0.0.2";

async fn tcp_from(source: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

fn v2_header(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&465u16.to_be_bytes());
    h
}

#[tokio::test]
async fn proxy_headers_from_an_allowed_address_set_the_client() {
    let server = TestServer::start_with(&format!(
        "[listeners]\nproxy_protocol_from = [\"{ALLOWED}/32\"]\n"
    ))
    .await;
    server.add_account("alice@example.com", PASSWORD).await;

    // v2 before TLS on the implicit-TLS port.
    let mut tcp = tcp_from(ALLOWED, server.submissions()).await;
    tcp.write_all(&v2_header([203, 0, 113, 9], 5555))
        .await
        .unwrap();
    let (mut c, greeting) = Client::over_tls(tcp, &server.cert_path()).await;
    assert_eq!(greeting.code, 220);
    c.ehlo().await;
    assert_eq!(c.auth_plain("alice@example.com", PASSWORD).await.code, 235);
    let success = server.wait_event("auth.success").await;
    assert_eq!(success.ip, Some("203.0.113.9".parse().unwrap()));

    // v1 on the STARTTLS port.
    let mut tcp = tcp_from(ALLOWED, server.submission()).await;
    tcp.write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 587\r\n")
        .await
        .unwrap();
    let (mut c, greeting) = Client::over_plain(tcp, &server.cert_path()).await;
    assert_eq!(greeting.code, 220);
    c.ehlo().await;
    let starts: Vec<_> = server
        .events
        .snapshot()
        .into_iter()
        .filter(|e| e.name() == "session.start")
        .filter_map(|e| e.ip)
        .collect();
    assert!(
        starts.contains(&"198.51.100.4".parse().unwrap()),
        "{starts:?}"
    );
}

#[tokio::test]
async fn a_proxy_header_from_another_address_is_refused() {
    let server = TestServer::start_with(&format!(
        "[listeners]\nproxy_protocol_from = [\"{ALLOWED}/32\"]\n"
    ))
    .await;
    // 127.0.0.1 is not a trusted proxy: the line is a bad command.
    let tcp = tcp_from("127.0.0.1", server.submission()).await;
    let (mut c, greeting) = Client::over_plain(tcp, &server.cert_path()).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(
        c.cmd("PROXY TCP4 198.51.100.4 127.0.0.1 40000 587")
            .await
            .line(),
        "500 5.5.1 Command unrecognized"
    );
    // A trusted proxy that sends no header is cut off.
    let mut tcp = tcp_from(ALLOWED, server.submission()).await;
    tcp.write_all(b"EHLO client.test.example\r\n")
        .await
        .unwrap();
    let mut c = Client::over_plain_raw(tcp, &server.cert_path());
    assert!(c.is_closed().await);
    assert!(
        !server
            .events
            .snapshot()
            .iter()
            .any(|e| e.ip == Some("198.51.100.4".parse().unwrap()))
    );
}
