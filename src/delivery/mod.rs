//! Delivery workers drain the spool. The dev outbox writes each message into
//! a folder; the queue runner delivers through a `Transport` (the smarthost
//! relay; direct MX delivery plugs in beside it) with per-recipient state,
//! retries, DSNs and feedback to the scorer (docs/delivery.md).

pub mod dsn;
mod outbox;
pub mod relay;
pub mod runner;
pub mod transport;

pub use outbox::run_outbox;
pub use relay::{RelaySettings, RelayTransport};
pub use runner::{QueueSettings, Runner, run_queue};
pub use transport::{Diagnostic, Outcome, Outgoing, Transport};
