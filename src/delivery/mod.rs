//! Delivery workers drain the spool. The first one writes each message into
//! the dev outbox folder; relay and MX delivery come later.

mod outbox;

pub use outbox::run_outbox;
