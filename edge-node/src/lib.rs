//! The Onda edge node: the data plane every listener touches. An Icecast 2.4-compatible server
//! (sources by PUT/SOURCE, listeners with ICY metadata, admin and status routes, fallback mounts,
//! relays) with one shared buffer per mount. It takes a typed [`EdgeConfig`] and knows nothing of
//! QUIC or the control plane: the agent drives it through [`Edge::apply`] and [`Edge::stats`],
//! and `onda edge --config edge.toml` runs it alone as a drop-in Icecast replacement. Live video
//! comes in over RTMP and goes out as HLS.
//!
//! Layers, each using only those below it (`scripts/modcycles.py edge-node/src` checks):
//! - [`edge`]: one `Edge` composing the rest, and the routing of requests;
//! - `icecast` (sources, listeners, admin, relays) over `registry` (the mounts); `live` (RTMP
//!   ingest, HLS, its own registry of streams); `audio_hls` (the mounts cut into HLS segments,
//!   HLS listeners as sessions in the mounts' listener tables); `autodj`, feeding mounts through
//!   `registry::Feeds`;
//! - `mount` (one mount's sessions and listeners), `auth` (source logins);
//! - `http` (accept loop, limits, request heads, responses), `config`, `metrics`, `usage`,
//!   the codecs (`frames`, `ogg`, `icy`) and `sync`.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod audio_hls;
mod auth;
mod autodj;
pub mod config;
mod edge;
pub mod frames;
mod http;
mod icecast;
pub mod icy;
mod live;
mod metrics;
mod mount;
mod ogg;
mod registry;
mod sync;
mod usage;

pub use autodj::NowPlaying;
pub use config::{ConfigError, EdgeConfig, MountConfig, RelayConfig};
pub use edge::{Edge, EdgeError, LiveStats, MountStats, SourceStats, run};
pub use usage::MountUsage;

use onda_shared::secret::constant_time_eq;

/// What the fuzz targets in `fuzz/` drive; not an API.
#[doc(hidden)]
pub mod fuzz {
    pub use crate::live::hls::Segmenter;
    pub use crate::live::rtmp::fuzz_connection;
}
