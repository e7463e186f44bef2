//! The SMTP side: listeners, the per-connection session, replies, SASL.

pub mod connection;
pub mod data;
pub mod headers;
pub mod limits;
mod listener;
pub mod proxy;
pub mod reply;
pub mod sasl;
pub mod session;

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use listener::{PortKind, serve};

use crate::accounts::Authenticator;
use crate::clock::Clock;
use crate::config::SmtpConfig;
use crate::events::Events;
use crate::locks::RecoverRw;
use crate::policy::Policy;
use crate::spool::Spool;

/// What every session shares: limits and the seams it talks to.
impl SmtpShared {
    /// The certificate in force right now.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.tls.read_or_recover().clone()
    }
}

pub struct SmtpShared {
    pub hostname: String,
    /// Named in the operator-block reply.
    pub support_contact: Option<String>,
    pub limits: SmtpConfig,
    /// Connections from these networks start with a PROXY header.
    pub proxy_from: Vec<ipnet::IpNet>,
    /// Swapped on SIGHUP; each handshake takes the current one.
    pub tls: std::sync::RwLock<TlsAcceptor>,
    pub authenticator: Arc<dyn Authenticator>,
    pub policy: Arc<dyn Policy>,
    pub spool: Arc<dyn Spool>,
    pub events: Arc<dyn Events>,
    pub clock: Arc<dyn Clock>,
    /// Open connections, counted against `limits.max_connections*`.
    pub connections: limits::ConnectionLimits,
    /// Message bytes in flight, against `limits.max_inflight_bytes`.
    pub inflight: limits::InflightBudget,
    /// Cancelled when the server stops: sessions answer 421 between commands.
    pub shutdown: CancellationToken,
}
