//! The records the store keeps, in their stored (JSON) encoding.

pub mod account;
pub mod queue;
