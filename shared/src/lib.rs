//! Types shared by every Onda crate: the domain vocabulary (audio formats, playlist kinds, play
//! orders, times of day, time-zone names) that the API, the control protocol and the edge's
//! configuration all speak, the panel API's wire types (so the control plane and its
//! clients cannot drift; their OpenAPI schemas only with the `openapi` feature, which the control
//! plane alone enables), and configuration loading (TOML plus `ONDA_...` overrides) used by each
//! component.
#![forbid(unsafe_code)]

pub mod api;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod domain;
#[cfg(feature = "http")]
pub mod http;
pub mod paths;
pub mod playback;
pub mod secret;
pub mod signal;
pub mod sync;
