//! Delivery workers drain the spool. The dev outbox writes each message into
//! a folder; the queue runner delivers through a `Transport` (the smarthost
//! relay, or direct MX delivery) with per-recipient state, retries, DSNs
//! and each outcome as an event (the scorer hears bounces from it); DKIM signing wraps either (docs/delivery.md).

pub mod dkim;
pub mod dsn;
pub mod mx;
mod outbox;
pub mod relay;
pub mod runner;
pub mod transport;
mod unrecorded;

pub use dkim::{DkimKeys, SigningTransport};
pub use mx::{MxSettings, MxTransport};
pub use outbox::run_outbox;
pub use relay::{RelaySettings, RelayTransport};
pub use runner::{QueueSettings, Runner, run_queue};
pub use transport::{Diagnostic, Outcome, Outgoing, Transport};
