//! A tiny authoritative DNS responder for the MX tests: UDP on an ephemeral
//! port of 127.0.0.1, answering MX and A queries from a fixed table.
//! A name with no records at all is NXDOMAIN; a known name without the
//! asked type gets an empty answer (NODATA).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

#[derive(Clone, Debug)]
pub enum Rec {
    /// Preference and exchange ("." for a null MX).
    Mx(u16, &'static str),
    A(Ipv4Addr),
}

const MX: u16 = 15;
const A: u16 = 1;

pub struct FakeDns {
    pub addr: SocketAddr,
}

impl FakeDns {
    /// Serves `records` (name without the final dot, lower case) until the
    /// test process ends.
    pub fn start(records: Vec<(&'static str, Rec)>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let mut table: HashMap<String, Vec<Rec>> = HashMap::new();
        for (name, rec) in records {
            table.entry(name.to_string()).or_default().push(rec);
        }
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = answer(&buf[..n], &table) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self { addr }
    }
}

fn answer(query: &[u8], table: &HashMap<String, Vec<Rec>>) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels, type, class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = &query[12..i + 4];
    let name = labels.join(".");

    let records = table.get(&name);
    let answers: Vec<Vec<u8>> = records
        .into_iter()
        .flatten()
        .filter_map(|r| match (r, qtype) {
            (Rec::Mx(pref, exchange), MX) => {
                let mut data = pref.to_be_bytes().to_vec();
                data.extend(encode_name(exchange));
                Some((MX, data))
            }
            (Rec::A(ip), A) => Some((A, ip.octets().to_vec())),
            _ => None,
        })
        .map(|(t, data)| {
            let mut rr = vec![0xc0, 0x0c]; // the question's name
            rr.extend(t.to_be_bytes());
            rr.extend(1u16.to_be_bytes());
            rr.extend(60u32.to_be_bytes());
            rr.extend((data.len() as u16).to_be_bytes());
            rr.extend(data);
            rr
        })
        .collect();
    let rcode = if records.is_none() { 3 } else { 0 };
    let mut reply = vec![query[0], query[1]];
    // QR, AA, RD copied; RA; rcode.
    reply.push(0x84 | (query[2] & 0x01));
    reply.push(0x80 | rcode);
    reply.extend(1u16.to_be_bytes());
    reply.extend((answers.len() as u16).to_be_bytes());
    reply.extend([0, 0, 0, 0]);
    reply.extend(question);
    for rr in answers {
        reply.extend(rr);
    }
    Some(reply)
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend(label.as_bytes());
    }
    out.push(0);
    out
}
