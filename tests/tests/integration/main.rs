//! The integration tests: one binary (one link, and one pool of test threads over every test
//! instead of a pause at the end of each file's), one module per area. Each test starts real
//! `onda` processes and clients through the harness in `onda_tests`.
//!
//! Run one area or test with a filter: `cargo test -p onda-tests --test integration live::`.

mod ansible;
mod api;
mod art;
mod attachments;
mod autodj;
mod billing;
mod binary;
mod browser;
mod calls;
mod cluster;
mod cluster_autodj;
mod coordinator;
mod dj_titles;
mod edge;
mod edge_apply;
mod examples;
mod handover;
mod hls_audio;
mod isolation;
mod ledger;
mod live;
mod logins;
mod media;
mod monetization;
mod money;
mod monitoring;
mod my_streams;
mod notifications;
mod nowplaying;
mod ogg;
mod partition;
mod realtime;
mod realtime_usage;
mod requests;
mod station_pages;
mod stream_chat;
mod stream_sessions;
mod subscriptions;
mod turn;
mod usage;
mod users;
mod web_app;
mod webhooks;
