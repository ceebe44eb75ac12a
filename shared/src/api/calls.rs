//! Wire types of 1-to-1 calls (docs/calls.md): the call record, its states and end reasons, and
//! the ICE servers (STUN/TURN) a call's peers use.

use serde::{Deserialize, Serialize};

/// An ICE server for a WebRTC peer connection, in the shape of the browser's `RTCIceServer`:
/// `new RTCPeerConnection({ iceServers })` takes a list of these unchanged. TURN servers carry
/// time-limited credentials (the TURN REST API scheme: `username` is `expiry:user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    /// `turn:host:port?transport=udp`, `turns:host:port?transport=tcp`, `stun:host:port`.
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
