//! Accepts connections on the submission (STARTTLS) and submissions
//! (implicit TLS) ports and runs one session per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::SmtpShared;
use super::connection::Connection;
use super::limits::Slot;
use super::reply;
use super::session::{Flow, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Port 587: plaintext until STARTTLS.
    Submission,
    /// Port 465: TLS from the first byte.
    Submissions,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The longest a refused connection may take to read its 421.
const REFUSAL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts until shutdown; each connection runs on `tracker`.
pub async fn serve(
    listener: TcpListener,
    kind: PortKind,
    shared: Arc<SmtpShared>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((tcp, peer)) if from_proxy(&shared, peer) => {
                tracker.spawn(proxied(tcp, peer, kind, shared.clone(), tracker.clone()));
            }
            Ok((tcp, peer)) => {
                let limits = &shared.limits;
                let slot = shared.connections.try_acquire(
                    peer.ip(),
                    limits.max_connections,
                    limits.max_connections_per_ip,
                );
                match slot {
                    Some(slot) => tracker.spawn(
                        handle(tcp, peer, kind, shared.clone(), slot)
                            .instrument(session_span(peer)),
                    ),
                    None => tracker.spawn(refuse(tcp, peer, kind, shared.clone())),
                };
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(event = "listener.accept_error", error = %e);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every log line of a session carries its client in a span.
fn session_span(peer: SocketAddr) -> tracing::Span {
    tracing::info_span!("smtp", client = %peer.ip().to_canonical())
}

fn from_proxy(shared: &SmtpShared, peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    shared.proxy_from.iter().any(|n| n.contains(&ip))
}

/// A connection from a trusted proxy: the PROXY header names the client,
/// and everything after (limits, lockouts, logs) sees that client.
async fn proxied(
    mut tcp: TcpStream,
    proxy: SocketAddr,
    kind: PortKind,
    shared: Arc<SmtpShared>,
    tracker: TaskTracker,
) {
    const HEADER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
    let header = tokio::time::timeout(HEADER_DEADLINE, super::proxy::read_header(&mut tcp)).await;
    let peer = match header {
        Ok(Ok(Some(client))) => client,
        // The proxy's own health check: nothing to serve.
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(event = "session.proxy_refused", ip = %proxy.ip(), error = %e);
            return;
        }
        Err(_) => {
            tracing::info!(event = "session.proxy_refused", ip = %proxy.ip(), error = "no PROXY header in time");
            return;
        }
    };
    let limits = &shared.limits;
    match shared.connections.try_acquire(
        peer.ip(),
        limits.max_connections,
        limits.max_connections_per_ip,
    ) {
        Some(slot) => {
            tracker.spawn(
                handle(tcp, peer, kind, shared.clone(), slot).instrument(session_span(peer)),
            );
        }
        None => refuse(tcp, peer, kind, shared).await,
    }
}

/// Over a connection limit: `421 4.7.0 Too many connections`, then close.
/// On the implicit-TLS port the reply goes inside TLS, where the client can
/// read it; the handshake gets a short deadline since nothing else runs here.
async fn refuse(tcp: TcpStream, peer: SocketAddr, kind: PortKind, shared: Arc<SmtpShared>) {
    shared.events.emit(
        crate::events::Event::new(crate::events::EventKind::SessionRefused)
            .ip(peer.ip().to_canonical())
            .reason("too_many_connections"),
    );
    let wait = shared.limits.command_timeout.min(REFUSAL_DEADLINE);
    let _ = tokio::time::timeout(wait, async {
        match kind {
            PortKind::Submission => say_too_many(Connection::new(tcp)).await,
            PortKind::Submissions => {
                if let Ok(tls) = shared.acceptor().accept(tcp).await {
                    say_too_many(Connection::new(tls)).await;
                }
            }
        }
    })
    .await;
}

async fn say_too_many<S: AsyncRead + AsyncWrite + Unpin>(mut conn: Connection<S>) {
    conn.queue(&reply::TOO_MANY_CONNECTIONS);
    conn.shutdown().await;
}

/// Runs one session; `_slot` keeps the connection counted until it ends.
async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: PortKind,
    shared: Arc<SmtpShared>,
    _slot: Slot,
) {
    let _ = tcp.set_nodelay(true);
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let implicit = kind == PortKind::Submissions;
    let mut session = Session::new(shared.clone(), id, peer, implicit);
    shared.events.emit(
        crate::events::Event::new(crate::events::EventKind::SessionStart)
            .session(id, session.ip())
            .tls(implicit),
    );
    if implicit {
        let limit = session.read_limit();
        match tokio::time::timeout(limit, shared.acceptor().accept(tcp)).await {
            Ok(Ok(tls)) => {
                negotiated(&mut session, &tls);
                run(&mut session, Connection::new(tls), true).await;
            }
            Ok(Err(e)) => tls_failed(&session, &e.to_string()),
            Err(_) => tls_failed(&session, "handshake timeout"),
        }
    } else {
        let mut plain = Connection::new(tcp);
        session.greet(&mut plain);
        if let Flow::StartTls = session.run(&mut plain).await {
            let _ = plain.flush().await;
            // Dropping the plaintext buffer discards pipelined bytes (RFC 3207 §5).
            let tcp = plain.into_inner();
            let limit = session.read_limit();
            match tokio::time::timeout(limit, shared.acceptor().accept(tcp)).await {
                Ok(Ok(tls)) => {
                    session.tls_started();
                    negotiated(&mut session, &tls);
                    run(&mut session, Connection::new(tls), false).await;
                }
                Ok(Err(e)) => tls_failed(&session, &e.to_string()),
                Err(_) => tls_failed(&session, "handshake timeout"),
            }
        } else {
            plain.shutdown().await;
        }
    }
    let mut end = crate::events::Event::new(crate::events::EventKind::SessionEnd)
        .session(id, session.ip())
        .took(session.elapsed())
        .messages(session.messages as u64);
    if let Some(account) = session.account() {
        end = end.account(account);
    }
    shared.events.emit(end);
}

/// Tells the session what the TLS handshake agreed on.
fn negotiated<S>(session: &mut Session, tls: &tokio_rustls::server::TlsStream<S>) {
    let conn = tls.get_ref().1;
    session.tls_negotiated(
        conn.protocol_version().map(|v| format!("{v:?}")),
        conn.negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite())),
    );
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    mut conn: Connection<S>,
    greet: bool,
) {
    if greet {
        session.greet(&mut conn);
    }
    let _ = session.run(&mut conn).await;
    conn.shutdown().await;
}

fn tls_failed(session: &Session, why: &str) {
    tracing::info!(event = "session.tls_failed", session = session.id(), ip = %session.ip(), error = why);
}
