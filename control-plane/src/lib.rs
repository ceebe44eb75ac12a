//! The Onda control plane: panel API over a SQLite or PostgreSQL database, the cluster (CA and
//! joins, QUIC control channel, coordinator, leader-run scheduler) and the listener redirector.
//! The media store keeps stations' uploaded audio; billing turns metered usage into invoices.
#![forbid(unsafe_code)]

pub mod api;
pub mod billing;
pub mod calls;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod coordinator;
pub mod db;
pub mod dev;
pub mod lanes;
pub mod ledger;
pub mod media;
pub mod memberships;
pub mod metrics;
pub mod notifications;
pub mod nowplaying;
pub mod realtime;
pub mod requests;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod stream_sessions;
pub mod subscriptions;
pub mod ticker;
pub mod tips;
pub mod turn;
pub mod users;
pub mod validate;
pub mod webhooks;
