//! One integration test binary: every test starts the real server on
//! ephemeral ports and talks to it over TCP/TLS.

mod aliases;
mod assembly;
mod autoconfig;
mod browser;
mod cli;
mod common;
mod crash;
mod dovecot;
mod files;
mod fuzz_corpus;
mod guide;
mod headers;
mod layering;
mod limits;
mod lockout;
mod logs;
mod mx;
mod pipelining;
mod policy;
mod portal;
mod postgres;
mod proxy;
mod readiness;
mod real_clients;
mod recovery;
mod relay;
mod replies;
mod scorer;
mod security;
mod several_nodes_contrib;
mod spool;
mod store_compat;
mod store_identity;
mod submission;
