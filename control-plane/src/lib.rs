//! The Onda control plane: panel API over a SQLite or PostgreSQL database. Later issues add the
//! scheduler, the coordinator, the QUIC control channel, billing, the media store and the
//! listener redirector here.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod coordinator;
pub mod db;
pub mod dev;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod validate;
