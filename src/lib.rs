//! mailwarden: an SMTP submission server with built-in outbound-abuse
//! blocking. docs/architecture.md describes the data flow, the layers and
//! where each rule lives; `app` assembles the application.

pub mod accounts;
pub mod address;
pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod cms;
pub mod config;
pub mod delivery;
pub mod dovecot;
pub mod events;
pub mod files;
#[cfg(any(feature = "fuzzing", feature = "testing"))]
pub mod fuzz_api;
pub mod locks;
pub mod memory;
pub mod policy;
pub mod portal;
pub mod replay;
pub mod secrets;
pub mod server;
pub mod simulate;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod tls;
