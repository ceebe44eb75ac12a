//! Wire types of stream sessions (`GET /v1/streams/{id}/sessions`): each RTMP publish of a live
//! stream with its audience and the money it brought in.

use serde::{Deserialize, Serialize};

/// A count of payments and their sum, in minor units of the tenant's currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentTotals {
    pub count: u64,
    /// What the fans paid, before the tenant's fee.
    pub amount: i64,
}

/// One publish of a live stream: from the leader seeing it on the air until it was off the air
/// for a few seconds. An open session (`ended_at` null) shows its figures so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamSession {
    /// `ses_…`, time-ordered.
    pub id: String,
    pub stream_id: String,
    /// The stream's creator when the session opened (whose tips it counts), if any.
    pub creator_id: Option<String>,
    /// RFC 3339, millisecond precision.
    pub started_at: String,
    /// RFC 3339: the last moment the stream was seen on the air; null while open.
    pub ended_at: Option<String>,
    pub live: bool,
    /// Whole seconds from the start to the end (to now while open).
    pub duration_secs: u64,
    /// The most viewers sampled at once (the edges' playback sessions, sampled each second).
    pub peak_viewers: u64,
    /// The sampled viewer counts integrated over the session, in minutes (two decimals).
    pub viewer_minutes: f64,
    /// Distinct signed-in users who got a playback token while it was open.
    pub unique_viewers: u64,
    /// Messages said in the stream's chat while it was open (deleted ones included; tips shown
    /// in the chat are in `tips`).
    pub chat_messages: u64,
    /// Tips to the creator while the session was open (until it closed, a few seconds after
    /// `ended_at`).
    pub tips: PaymentTotals,
    /// Purchases of this (pay-per-view) stream while the session was open.
    pub pay_per_view: PaymentTotals,
    /// The tenant's currency (ISO 4217) of the amounts.
    pub currency: String,
}
