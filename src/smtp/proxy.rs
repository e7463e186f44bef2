//! PROXY protocol v1 and v2 (HAProxy), read before anything else on a
//! connection from `[listeners] proxy_protocol_from`, so limits, lockouts
//! and network signals see the real client. From any other address a
//! PROXY header is just a bad command.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// RFC-sized: a v1 line is at most 107 octets.
const V1_MAX: usize = 107;

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("PROXY header: {why}"))
}

/// Reads the header. `Some(source)` for a proxied TCP connection; `None`
/// for a proxy's own health check (v1 `UNKNOWN`, v2 `LOCAL`).
pub async fn read_header(tcp: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut first = [0u8; 12];
    tcp.read_exact(&mut first).await?;
    if first == V2_SIGNATURE {
        return read_v2(tcp).await;
    }
    if !first.starts_with(b"PROXY ") {
        return Err(invalid("missing"));
    }
    let mut line = first.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(invalid("v1 line too long"));
        }
        line.push(tcp.read_u8().await?);
    }
    parse_v1(&line)
}

fn parse_v1(line: &[u8]) -> io::Result<Option<SocketAddr>> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("not text"))?;
    let parts: Vec<&str> = text.trim_end().split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", "TCP4" | "TCP6", src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| invalid("bad source address"))?;
            let port: u16 = sport.parse().map_err(|_| invalid("bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(invalid("malformed v1 line")),
    }
}

async fn read_v2(tcp: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut head = [0u8; 4];
    tcp.read_exact(&mut head).await?;
    let (version_command, family) = (head[0], head[1]);
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    if version_command >> 4 != 2 {
        return Err(invalid("not version 2"));
    }
    if len > 512 {
        return Err(invalid("v2 block too long"));
    }
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await?;
    if version_command & 0x0F == 0 {
        return Ok(None); // LOCAL
    }
    match family >> 4 {
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        2 if body.len() >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        0 => Ok(None), // UNSPEC
        _ => Err(invalid("unsupported address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\r\n").unwrap(),
            Some("192.0.2.7:40000".parse().unwrap())
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 465\r\n").unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), None);
        assert!(parse_v1(b"PROXY TCP4 nonsense\r\n").is_err());
    }
}
