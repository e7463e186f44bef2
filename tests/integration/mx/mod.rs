//! Direct MX delivery: the real server resolves recipient domains through a
//! fake DNS server (`dns.rs`, UDP on 127.0.0.1) and delivers to aiosmtpd
//! sinks (`tests/relay/sink.py`) listening on one ephemeral port over
//! several 127.0.0.x addresses (`[delivery.mx] port` and `nameservers`).
//! Also: DKIM signatures checked by an independent verifier (dkimpy).

mod delivery;
mod dkim;
mod dns;

use std::sync::Arc;

use mailwarden::config::Config;
use mailwarden::events::RecordingEvents;
use mailwarden::server;

use crate::common::{ALICE, PASSWORD, TestServer, test_config_text_mode};
use crate::relay::{Sink, SinkOptions};

/// A sink on `host`, on `port` (0: ephemeral).
pub fn sink_at(host: &'static str, port: u16) -> Sink {
    Sink::start(SinkOptions {
        host: Some(host),
        port: (port != 0).then_some(port),
        ..Default::default()
    })
}

/// The `[delivery]` keys after `mode` for MX delivery on `port`, resolving
/// through `dns`; `extra` is appended.
pub fn mx_toml(port: u16, dns: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "retry_schedule = [\"1s\"]\n{extra}\n[delivery.mx]\nport = {port}\n\
         nameservers = [\"{dns}\"]\ntimeout = \"10s\"\nworkers = 2\n"
    )
}

/// The real server in MX mode, with ALICE.
pub async fn mx_server(delivery_toml: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailwarden.toml");
    std::fs::write(&path, test_config_text_mode("mx", delivery_toml)).unwrap();
    let config = Config::load(&path).expect("MX test config is valid");
    let events = Arc::new(RecordingEvents::default());
    let running = server::start_with(config.clone(), events.clone(), Default::default())
        .await
        .expect("server starts in MX mode");
    let server = TestServer {
        dir,
        config,
        events,
        running: Some(running),
    };
    server.add_account(ALICE, PASSWORD).await;
    server
}

pub fn message(subject: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\r\n\
         Hello.\r\n.\r\n  spaced   line  \r\nlast line\r\n\r\n\r\n"
    )
    .into_bytes()
}
