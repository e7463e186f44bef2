//! One integration test binary: every test starts the real server on
//! ephemeral ports and talks to it over TCP/TLS.

mod browser;
mod cli;
mod common;
mod crash;
mod portal;
mod real_clients;
mod security;
mod spool;
mod submission;
