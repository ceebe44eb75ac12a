//! The control channel between the control plane and its nodes: the typed, versioned messages
//! ([`proto`]), join tokens that pin the cluster CA ([`token`]) and the QUIC/TLS configuration
//! both ends use ([`tls`]). Behind the `cluster` feature so the standalone edge node links none
//! of it.

pub mod proto;
pub mod tls;
pub mod token;

/// Where a station's mount lives on an edge node: stations share a node, so each station's mounts
/// sit under its slug (`/demo-station/radio.mp3`).
pub fn edge_mount_path(station_slug: &str, mount_path: &str) -> String {
    format!("/{station_slug}{mount_path}")
}
