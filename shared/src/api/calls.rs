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

/// Where a call is in its life: calling → ringing (on every device of the callee) →
/// in_progress (accepted; billed) → ended (with an [`CallEndReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Calling,
    Ringing,
    InProgress,
    Ended,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Calling => "calling",
            CallState::Ringing => "ringing",
            CallState::InProgress => "in_progress",
            CallState::Ended => "ended",
        }
    }
}

impl std::str::FromStr for CallState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            CallState::Calling,
            CallState::Ringing,
            CallState::InProgress,
            CallState::Ended,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not a call state"))
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// The callee declined.
    Rejected,
    /// Not answered within 30 s.
    Missed,
    /// The caller hung up before it was answered.
    Cancelled,
    /// A party hung up an answered call.
    HungUp,
    /// A party was already in a call.
    Busy,
    /// The caller's wallet could not pay the next unit: ended at its boundary.
    BalanceExhausted,
    /// A party was gone from the gateway for more than 15 s.
    ConnectionLost,
}

impl CallEndReason {
    pub const ALL: [CallEndReason; 7] = [
        CallEndReason::Rejected,
        CallEndReason::Missed,
        CallEndReason::Cancelled,
        CallEndReason::HungUp,
        CallEndReason::Busy,
        CallEndReason::BalanceExhausted,
        CallEndReason::ConnectionLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallEndReason::Rejected => "rejected",
            CallEndReason::Missed => "missed",
            CallEndReason::Cancelled => "cancelled",
            CallEndReason::HungUp => "hung_up",
            CallEndReason::Busy => "busy",
            CallEndReason::BalanceExhausted => "balance_exhausted",
            CallEndReason::ConnectionLost => "connection_lost",
        }
    }
}

impl std::str::FromStr for CallEndReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallEndReason::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a reason a call ends"))
    }
}

/// How a creator's calls are charged: each started minute at its start (the default), or each
/// started second at its start (the price stays per minute; a second costs a sixtieth of it,
/// rounded so that the seconds of a minute add up to its price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallBilling {
    #[default]
    Minute,
    Second,
}

impl CallBilling {
    /// The length of one billed unit, in seconds.
    pub fn unit_secs(self) -> i64 {
        match self {
            CallBilling::Minute => 60,
            CallBilling::Second => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallBilling::Minute => "minute",
            CallBilling::Second => "second",
        }
    }
}

impl std::str::FromStr for CallBilling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minute" => Ok(CallBilling::Minute),
            "second" => Ok(CallBilling::Second),
            _ => Err(format!("{s:?} is not a call billing (minute or second)")),
        }
    }
}

/// A call's record: who called whom, when, for how long and what it cost. camelCase, as the
/// gateway's other objects (messages, tips): the same object in acks, events and REST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub id: String,
    pub caller_id: String,
    pub callee_id: String,
    pub state: CallState,
    /// Set once ended.
    pub reason: Option<CallEndReason>,
    /// Fixed when the call starts, in minor units of `currency`.
    pub price_per_minute: i64,
    pub billing: CallBilling,
    pub currency: String,
    pub created_at: String,
    /// When the callee accepted: billing starts here, by the server's clock.
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// From acceptance to the end, in whole seconds (rounded up); 0 if never answered.
    pub duration_secs: i64,
    /// Units (minutes or seconds, per `billing`) charged to the caller's wallet.
    pub units_charged: i64,
    /// What the caller paid, in minor units; the creator earned it less the tenant's fee.
    pub amount: i64,
    /// From `initiate-call` to media flowing, as the first client reported it.
    pub setup_ms: Option<i64>,
}

/// Parameters of `GET /v1/calls` and `GET /v1/me/calls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct CallListParams {
    /// Items per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only calls this user made or received (tenant key only).
    pub user_id: Option<String>,
}
