//! keyward: a Redis-protocol proxy that guards deletes.
//!
//! The path of one request: [`protocol::request`] scans client bytes, [`commands`] says what the
//! command is, [`guard`] decides whether it may run, [`session`] forwards it upstream and returns
//! the replies in request order.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod fnv;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod keyops;
pub mod metrics;
pub mod net;
pub mod prefix_table;
pub mod printable;
pub mod protocol;
pub mod rate_limit;
pub mod reload;
pub mod sentinel;
pub mod server;
pub mod session;
pub mod tls;
pub mod upstream;
