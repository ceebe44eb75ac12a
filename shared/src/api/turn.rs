//! Wire types of TURN credentials handed to apps (`GET /v1/me/ice-servers`): apps that do not
//! use the gateway's call events fetch their ICE servers here.

use super::IceServer;
use serde::{Deserialize, Serialize};

/// ICE servers for a peer connection and when their TURN credentials expire: fetch again
/// before `expiresAt` for a connection that starts later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IceServers {
    /// `new RTCPeerConnection({ iceServers })` takes it unchanged; empty when no node of the
    /// cluster runs TURN.
    pub ice_servers: Vec<IceServer>,
    /// RFC 3339; the TURN relays refuse the credentials from then on.
    pub expires_at: String,
}

/// Query of `GET /v1/me/ice-servers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct IceServersParams {
    /// Prefer relays of this node region (`eu`); relays of any region when none there runs
    /// TURN.
    pub region: Option<String>,
}
