//! Wire types of the panel API (`/v1`): what clients send and what the control plane answers.
//! Request types reject unknown fields so a typo is an error instead of a silent no-op.
//! Plan prices and invoice amounts are integers in micro-units of `currency` (1 USD =
//! 1 000 000), so sub-cent overage prices (per listener hour) are exact. What end users pay
//! (wallets, tips, subscription, call and pay-per-view prices) is integers in minor units of the
//! tenant's currency (cents for USD), as the ledger counts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod calls;
mod chat;
mod ledger;
mod notifications;
mod realtime;
mod requests;
mod sessions;
mod turn;
mod users;
mod watch;
mod webhooks;
pub use calls::*;
pub use chat::*;
pub use ledger::*;
pub use notifications::*;
pub use realtime::*;
pub use requests::*;
pub use sessions::*;
pub use turn::*;
pub use users::*;
pub use watch::*;
pub use webhooks::*;

pub use crate::domain::{AudioFormat, PlayOrder, PlaylistKind, TimeOfDay, TimeZoneName};

/// What a plan allows a tenant to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Stations a tenant on this plan may have.
    pub max_stations: u32,
    /// Mounts (output streams) per station.
    pub max_mounts_per_station: u32,
    /// Formats a mount may use.
    pub allowed_formats: Vec<AudioFormat>,
    /// Highest mount bitrate, in kbit/s.
    pub max_bitrate_kbps: u32,
    /// Concurrent listeners per station, across all nodes.
    pub max_listeners_per_station: u32,
    /// Media library size, in bytes.
    pub storage_bytes: u64,
    /// Live video streams a tenant may have.
    pub max_live_streams: u32,
    /// The ABR ladder of the tenant's live streams: each rung is an H.264 encode the origin
    /// edge makes while the stream is published, listed with the source in its master playlist
    /// (`/hls/{slug}/master.m3u8`). Empty: the source only, no transcoding.
    #[serde(default)]
    pub live_renditions: Vec<LiveRendition>,
    /// The largest single media attachment (image, audio or video) one of the tenant's end
    /// users may upload for a message, in bytes (`POST /v1/me/attachments`).
    #[serde(default = "default_attachment_bytes")]
    pub attachment_bytes: u64,
    /// Socket.io connections of the tenant's end users at once, over every control-plane
    /// replica; a handshake beyond it is refused. Absent: 1000.
    #[serde(default = "default_max_realtime_connections")]
    pub max_realtime_connections: u32,
}

/// `attachment_bytes` of a plan that does not say: 10 MiB.
pub const DEFAULT_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;

fn default_attachment_bytes() -> u64 {
    DEFAULT_ATTACHMENT_BYTES
}

/// The realtime connection limit of a plan created without one (and of plans that existed
/// before the limit did).
pub const DEFAULT_MAX_REALTIME_CONNECTIONS: u32 = 1000;

fn default_max_realtime_connections() -> u32 {
    DEFAULT_MAX_REALTIME_CONNECTIONS
}

/// The most rungs a live ABR ladder may have (each is an x264 encode on the origin edge).
pub const MAX_LIVE_RENDITIONS: usize = 4;

/// One rung of a live ABR ladder; its name in URLs is `{height}p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LiveRendition {
    /// Picture height in pixels (even, 144–2160); the width keeps the source's aspect.
    pub height: u32,
    /// Video bitrate in kbit/s (100–20000).
    pub video_kbps: u32,
}

/// Features a plan switches on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct PlanFeatures {
    pub autodj: bool,
    pub scheduling: bool,
    pub hls: bool,
    pub live_video: bool,
    /// End users' realtime gateway and conversations.
    pub messaging: bool,
    /// Fans pay creators (tips) and creators request payouts.
    pub monetization: bool,
    /// Viewers chat in live streams' rooms on the gateway.
    pub live_chat: bool,
    /// Fans make paid 1-to-1 video calls to creators (signalling over the gateway, TURN).
    #[serde(default)]
    pub calls: bool,
    /// Listeners request songs from a station's library (the station turns them on).
    #[serde(default)]
    pub requests: bool,
}

/// Prices of a plan, in micro-units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanPrices {
    /// ISO 4217 code, e.g. "USD".
    pub currency: String,
    pub monthly_micros: u64,
    /// Per GB (10^9 bytes) delivered beyond what the plan includes.
    pub overage_per_gb_micros: u64,
    /// Per listener hour beyond what the plan includes.
    pub overage_per_listener_hour_micros: u64,
    /// GB (10^9 bytes) delivered per month that the monthly price includes; billing prorates it
    /// by active days like the price.
    #[serde(default)]
    pub included_gb: u64,
    /// Listener hours per month that the monthly price includes, prorated the same way.
    #[serde(default)]
    pub included_listener_hours: u64,
    /// Minutes of end users' realtime connections (every socket's connected time) per month
    /// that the monthly price includes, prorated the same way.
    #[serde(default)]
    pub included_connection_minutes: u64,
    /// Per 1000 realtime connection minutes beyond what the plan includes.
    #[serde(default)]
    pub overage_per_1000_connection_minutes_micros: u64,
    /// Messages end users send per month that the monthly price includes, prorated the same way.
    #[serde(default)]
    pub included_messages: u64,
    /// Per 1000 messages beyond what the plan includes.
    #[serde(default)]
    pub overage_per_1000_messages_micros: u64,
    /// Payments end users make per month (tips, purchases, subscription periods, calls) that
    /// the monthly price includes, prorated the same way.
    #[serde(default)]
    pub included_transactions: u64,
    /// Per 1000 payments beyond what the plan includes.
    #[serde(default)]
    pub overage_per_1000_transactions_micros: u64,
    /// Minutes of 1-to-1 calls (as charged to the callers) per month that the monthly price
    /// includes, prorated the same way.
    #[serde(default)]
    pub included_call_minutes: u64,
    /// Per 1000 call minutes beyond what the plan includes.
    #[serde(default)]
    pub overage_per_1000_call_minutes_micros: u64,
    /// GB (10^9 bytes) relayed by the TURN relays for calls per month that the monthly price
    /// includes, prorated the same way.
    #[serde(default)]
    pub included_turn_gb: u64,
    /// Per GB relayed beyond what the plan includes.
    #[serde(default)]
    pub overage_per_turn_gb_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    pub limits: PlanLimits,
    pub features: PlanFeatures,
    pub prices: PlanPrices,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub limits: PlanLimits,
    #[serde(default)]
    pub features: PlanFeatures,
    pub prices: PlanPrices,
}

/// A partial update: absent fields stay as they are; `limits`, `features` and `prices` are
/// patched field by field too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    pub name: Option<String>,
    pub description: Option<String>,
    pub limits: Option<PlanLimitsPatch>,
    pub features: Option<PlanFeaturesPatch>,
    pub prices: Option<PlanPricesPatch>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanLimitsPatch {
    pub max_stations: Option<u32>,
    pub max_mounts_per_station: Option<u32>,
    pub allowed_formats: Option<Vec<AudioFormat>>,
    pub max_bitrate_kbps: Option<u32>,
    pub max_listeners_per_station: Option<u32>,
    pub storage_bytes: Option<u64>,
    pub max_live_streams: Option<u32>,
    pub live_renditions: Option<Vec<LiveRendition>>,
    pub attachment_bytes: Option<u64>,
    pub max_realtime_connections: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanFeaturesPatch {
    pub autodj: Option<bool>,
    pub scheduling: Option<bool>,
    pub hls: Option<bool>,
    pub live_video: Option<bool>,
    pub messaging: Option<bool>,
    pub monetization: Option<bool>,
    pub live_chat: Option<bool>,
    pub calls: Option<bool>,
    pub requests: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanPricesPatch {
    pub currency: Option<String>,
    pub monthly_micros: Option<u64>,
    pub overage_per_gb_micros: Option<u64>,
    pub overage_per_listener_hour_micros: Option<u64>,
    pub included_gb: Option<u64>,
    pub included_listener_hours: Option<u64>,
    pub included_connection_minutes: Option<u64>,
    pub overage_per_1000_connection_minutes_micros: Option<u64>,
    pub included_messages: Option<u64>,
    pub overage_per_1000_messages_micros: Option<u64>,
    pub included_transactions: Option<u64>,
    pub overage_per_1000_transactions_micros: Option<u64>,
    pub included_call_minutes: Option<u64>,
    pub overage_per_1000_call_minutes_micros: Option<u64>,
    pub included_turn_gb: Option<u64>,
    pub overage_per_turn_gb_micros: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Contact address for invoices and notices; may be empty.
    pub email: String,
    pub plan_id: String,
    pub status: TenantStatus,
    /// ISO 4217 code of the currency its ledger counts in (minor units: cents for USD).
    pub currency: String,
    /// Commission split off every fan-to-creator payment, in basis points (2000 = 20 %).
    pub platform_fee_bps: u32,
    pub created_at: String,
    pub updated_at: String,
}

/// Default of `Tenant::currency`.
pub const DEFAULT_CURRENCY: &str = "USD";
/// Default of `Tenant::platform_fee_bps`.
pub const DEFAULT_PLATFORM_FEE_BPS: u32 = 2000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    #[serde(default)]
    pub email: String,
    pub plan_id: String,
    /// ISO 4217 code, three upper-case letters (default "USD").
    #[serde(default)]
    pub currency: Option<String>,
    /// 0 to 10000 basis points (default 2000).
    #[serde(default)]
    pub platform_fee_bps: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub email: Option<String>,
    pub plan_id: Option<String>,
    /// ISO 4217 code; only while the tenant's ledger has no transaction.
    pub currency: Option<String>,
    /// 0 to 10000; applies to payments from then on.
    pub platform_fee_bps: Option<u32>,
}

/// An API key as listed: the secret itself is never shown again after creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the secret, to recognise a key.
    pub prefix: String,
    pub created_at: String,
    /// Set once the key is revoked; a revoked key is refused at once.
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label such as "website" or "billing sync".
    #[serde(default)]
    pub name: String,
}

/// The answer to creating a key: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Use as `Authorization: Bearer <secret>`. Stored hashed; it cannot be shown again.
    pub secret: String,
}

/// An output stream of a station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Path on the edge, e.g. "/radio.mp3": a slash, then letters, digits, '.', '_' or '-'.
    pub path: String,
    pub format: AudioFormat,
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Station {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// Short unique name used in public URLs (`/listen/{slug}/...`).
    pub slug: String,
    pub description: String,
    pub genre: String,
    pub autodj_enabled: bool,
    /// Concurrent listeners across all mounts and nodes; at most the plan's limit.
    pub max_listeners: u32,
    pub mounts: Vec<Mount>,
    /// Password for Icecast source clients (user `source`).
    pub source_password: String,
    /// Region the station must be served from (empty: any).
    pub region: String,
    /// Labels a node must carry to serve the station (e.g. {"tier": "premium"}).
    pub node_labels: BTreeMap<String, String>,
    /// Song requests from listeners.
    #[serde(default)]
    pub requests: RequestSettings,
    /// The web player plays the mounts' HLS (`hls_url` in the now-playing JSON) even where the
    /// browser could stream MP3 or AAC itself.
    pub hls_preferred: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateStation {
    pub name: String,
    /// Derived from `name` when absent.
    pub slug: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub genre: String,
    #[serde(default)]
    pub autodj_enabled: bool,
    /// Defaults to the plan's listener limit.
    pub max_listeners: Option<u32>,
    pub mounts: Vec<Mount>,
    /// Region the station must be served from; empty or absent: any.
    #[serde(default)]
    pub region: String,
    /// Labels a node must carry to serve the station.
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    /// Song requests (off unless given).
    #[serde(default)]
    pub requests: RequestSettings,
    /// The web player prefers the mounts' HLS; default false.
    #[serde(default)]
    pub hls_preferred: bool,
}

/// A partial update; `mounts`, when present, replaces the whole list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateStation {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub autodj_enabled: Option<bool>,
    pub max_listeners: Option<u32>,
    pub mounts: Option<Vec<Mount>>,
    pub region: Option<String>,
    pub node_labels: Option<BTreeMap<String, String>>,
    /// Song requests: absent fields stay.
    pub requests: Option<RequestSettingsPatch>,
    pub hls_preferred: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Ready,
    Unreachable,
    Draining,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Node {
    pub id: String,
    pub name: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    /// Base URL listeners use to reach this node's edge.
    pub public_url: String,
    /// `rtmp://host:port` where publishers reach this node's RTMP ingest; empty without one.
    pub rtmp_url: String,
    /// Where WebRTC peers reach this node's TURN relay (`turn:host:3478?transport=udp`, …);
    /// empty without one.
    #[serde(default)]
    pub turn_urls: Vec<String>,
    pub capacity_listeners: u32,
    pub capacity_mbps: u32,
    pub status: NodeStatus,
    pub last_heartbeat_at: Option<String>,
    pub created_at: String,
    /// Set once an admin revoked the node: its certificate is refused from then on.
    pub revoked_at: Option<String>,
}

/// A one-time join token. `token` (with the CA fingerprint) is shown only in the answer to
/// its creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenInfo {
    pub id: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub node_id: Option<String>,
    /// `onda1.<id>.<secret>.<ca-sha256>`: only in the creation answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The command a node runs to join (`onda agent --config agent.toml --join …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    #[serde(default)]
    pub description: String,
    /// Seconds until the token expires; default 3600, at most 7 days.
    pub ttl_seconds: Option<u64>,
}

/// Where a station is served right now, from the scheduler's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StationPlacementInfo {
    pub station_id: String,
    /// Node running the station's source; null while unplaced.
    pub origin: Option<String>,
    pub relays: Vec<String>,
    pub leaving: Vec<String>,
    /// `unplaced` (no node carries it), `placed`, or `failed` (a node it is placed on refused
    /// it; `failures` says why).
    pub status: PlacementStatus,
    /// Nodes that could not take the station, each with the edge's sentence.
    #[serde(default)]
    pub failures: Vec<PlacementFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlacementStatus {
    Unplaced,
    Placed,
    Failed,
}

/// A node that could not take a station or live stream it was given, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacementFailure {
    /// The node's id.
    pub node: String,
    /// The edge's sentence: the rule the station or stream breaks there.
    pub reason: String,
}

/// Who the bearer token belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// "admin", "tenant" (an API key) or "user" (a user token).
    pub role: String,
    pub tenant: Option<Tenant>,
    pub plan: Option<Plan>,
    /// The tenant's media storage against its plan (tenants only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageUsage>,
    /// The end user a user token acts as (users only): their profile, and nothing of the
    /// tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EndUser>,
}

/// A tenant's storage: the media files' bytes, the estimated size of the renditions the edges
/// make of them, and its end users' message attachments, against the plan's `storage_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageUsage {
    pub media_bytes: u64,
    pub rendition_bytes: u64,
    /// Message attachments its end users uploaded (`POST /v1/me/attachments`).
    #[serde(default)]
    pub attachment_bytes: u64,
    /// `media_bytes + rendition_bytes + attachment_bytes`: what counts against the limit.
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// One page of a list. Pass `next_cursor` as `cursor` to get the next page; it is null on the
/// last page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Paging parameters accepted by every list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An RFC 9457 problem document: every error of the API has this shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. "https://onda.dev/problems/plan-limit".
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// A sentence a person understands.
    pub detail: String,
    /// For plan-limit problems: the limit that was hit (e.g. "max_stations").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// For a viewer refused access (402, 403): what would grant it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<AccessGrant>,
}

/// What would let a viewer in who is refused: subscribing to a creator, or buying a
/// pay-per-view stream, at a price in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AccessGrant {
    /// `subscribe` (`POST /v1/me/subscriptions`), `purchase`
    /// (`POST /v1/me/streams/{id}/purchase`), or `tenant` (only the tenant can let the viewer
    /// in: a token stream, or a creator who sells no subscription).
    pub action: String,
    pub creator_id: Option<String>,
    pub stream_id: Option<String>,
    /// None when nothing is for sale.
    pub price: Option<i64>,
    pub currency: String,
}

/// What a station plays now, in the shape web players written for AzuraCast read
/// (`station`, `listeners`, `live`, `now_playing`, `playing_next`, `song_history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NowPlaying {
    pub station: NowPlayingStation,
    pub listeners: NowPlayingListeners,
    pub live: NowPlayingLive,
    /// Absent while nothing has been reported yet.
    pub now_playing: Option<CurrentSong>,
    pub playing_next: Option<NextSong>,
    /// Newest first, without the current one.
    pub song_history: Vec<PlayedSong>,
    /// Some edge has the station on the air.
    pub is_online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NowPlayingStation {
    pub id: String,
    pub name: String,
    /// The station's slug.
    pub shortcode: String,
    /// The first mount's public URL (through the redirector).
    pub listen_url: String,
    pub mounts: Vec<NowPlayingMount>,
    /// The station prefers HLS in web players (each mount's `hls_url`).
    #[serde(default)]
    pub hls_preferred: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NowPlayingMount {
    pub name: String,
    pub url: String,
    /// The mount as HLS through the redirector (`{url}.m3u8`), for MP3 and AAC mounts; none
    /// for Ogg (Opus) mounts.
    #[serde(default)]
    pub hls_url: Option<String>,
    pub format: AudioFormat,
    pub bitrate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NowPlayingListeners {
    /// Listeners on every edge carrying the station.
    pub total: u64,
    pub current: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NowPlayingLive {
    pub is_live: bool,
    /// The live show's title (what the DJ's source client sent).
    pub streamer_name: String,
    /// Unix seconds.
    pub broadcast_start: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Song {
    /// The media file's SHA-256 (empty for live shows).
    pub id: String,
    /// `Artist - Title`.
    pub text: String,
    pub artist: String,
    pub title: String,
    pub album: String,
    pub art: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CurrentSong {
    /// Unix seconds.
    pub played_at: i64,
    /// Seconds; 0 when unknown (live).
    pub duration: u64,
    pub elapsed: u64,
    pub remaining: u64,
    /// `autodj` or `live`.
    pub source: String,
    /// A listener requested it.
    #[serde(default)]
    pub is_request: bool,
    pub song: Song,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NextSong {
    /// A listener requested it.
    #[serde(default)]
    pub is_request: bool,
    pub song: Song,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlayedSong {
    pub played_at: i64,
    pub duration: u64,
    pub source: String,
    /// A listener requested it.
    #[serde(default)]
    pub is_request: bool,
    pub song: Song,
}

/// A live DJ account of a station. The password is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Streamer {
    pub id: String,
    pub station_id: String,
    /// What the DJ enters as the user name in the source client.
    pub username: String,
    /// Shown as the streamer in now-playing.
    pub display_name: String,
    pub created_at: String,
    pub updated_at: String,
}

/// An audio file in a station's media library. The bytes are stored once per content (by
/// `sha256`) however many stations hold the same file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaFile {
    pub id: String,
    pub tenant_id: String,
    pub station_id: String,
    /// SHA-256 of the file's bytes, lowercase hex: the name nodes fetch it by.
    pub sha256: String,
    /// Counted against the plan's `storage_bytes` for each station that holds the file.
    pub size_bytes: u64,
    /// What the AutoDJ's renditions of the file take on the edge, estimated as its playing time
    /// at the bitrates of the station's mounts (one rendition per distinct format and bitrate);
    /// counted against `storage_bytes` too, and updated when the mounts change.
    #[serde(default)]
    pub rendition_bytes: u64,
    /// The name it was uploaded with (without any directory).
    pub filename: String,
    pub artist: String,
    /// From the file's tags; the file name without its extension when it has no title tag.
    pub title: String,
    pub album: String,
    /// Playing time measured by decoding the whole file.
    pub duration_ms: u64,
    /// The audio codec as ffmpeg names it: "mp3", "aac", "flac", "vorbis", "opus", …
    pub codec: String,
    pub bitrate_kbps: u32,
    /// The cover picture the file embeds, by the SHA-256 of its 500 px JPEG; served at
    /// `/art/{art_sha256}/500.jpg` and `/art/{art_sha256}/100.jpg`. None when it has none.
    #[serde(default)]
    pub art_sha256: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateStreamer {
    /// 1–64 of a–z, 0–9, '.', '_', '-' (not `source`).
    pub username: String,
    /// 12–128 characters, no control characters or ':'.
    pub password: String,
    /// Defaults to the user name.
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateStreamer {
    /// 12–128 characters, as when created.
    pub password: Option<String>,
    pub display_name: Option<String>,
}

/// Where a station's live DJs connect: any Icecast source client (BUTT, Mixxx, Liquidsoap,
/// ffmpeg) with a streamer account's user name and password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveIngest {
    /// The edge to connect to (the station's origin node); absent while the station is not
    /// placed.
    pub server_url: Option<String>,
    /// The mount to send to.
    pub mount: String,
    /// `icecast://USER:PASSWORD@host:port/mount` with placeholders, for ffmpeg.
    pub icecast_url: Option<String>,
}

/// `POST /v1/stations/{id}/media?filename=NAME`: the raw file is the body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct UploadMediaParams {
    /// The file's name, e.g. "song.mp3" (required; a directory part is dropped).
    pub filename: Option<String>,
}

/// Paging and search of a station's media library.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct MediaListParams {
    /// Items per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only files whose artist, title, album or file name contains this text (any case).
    pub q: Option<String>,
}

/// How an embedded player looks (`GET /v1/stations/{id}/embed`); absent options take their
/// defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct EmbedParams {
    /// `light` (default) or `dark`.
    pub theme: Option<String>,
    /// The accent colour, `#rgb` or `#rrggbb` (the `#` may be left out).
    pub accent: Option<String>,
    /// `full` (default: cover, progress, next song) or `compact` (one line).
    pub layout: Option<String>,
    /// Show the last songs played (default: true in the full layout).
    pub history: Option<bool>,
    /// Show song requests (default false; the station must take them).
    pub requests: Option<bool>,
    /// Show the volume control (default true).
    pub volume: Option<bool>,
    /// Show the cover picture (default true).
    pub cover: Option<bool>,
}

/// An embeddable player: its URL and the `<iframe>` to paste in a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmbedSnippet {
    /// `/embed/{slug}?…` on the control plane (absolute when `http.public_url` is set or the
    /// request named its host).
    pub url: String,
    /// `<iframe src="…" width="…" height="…" …></iframe>`
    pub snippet: String,
    pub width: u32,
    pub height: u32,
}

/// Edits a media file's tags; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateMedia {
    pub artist: Option<String>,
    pub title: Option<String>,
    pub album: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Playlist {
    pub id: String,
    pub station_id: String,
    pub name: String,
    pub kind: PlaylistKind,
    pub order: PlayOrder,
    /// Rotation: chosen this often relative to the station's other rotation playlists.
    pub weight: u32,
    /// Scheduled: ISO weekdays (1 = Monday … 7 = Sunday); empty = every day.
    pub days: Vec<u8>,
    /// Scheduled: "HH:MM" in the station's time zone; an end at or before the start crosses
    /// midnight.
    pub start: Option<TimeOfDay>,
    pub end: Option<TimeOfDay>,
    /// Interval: one track after every this many songs.
    pub every_songs: Option<u32>,
    /// The station's media files, in order.
    pub media_ids: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePlaylist {
    pub name: String,
    pub kind: PlaylistKind,
    /// Defaults to `shuffle`.
    #[serde(default)]
    pub order: Option<PlayOrder>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub days: Vec<u8>,
    #[serde(default)]
    pub start: Option<TimeOfDay>,
    #[serde(default)]
    pub end: Option<TimeOfDay>,
    #[serde(default)]
    pub every_songs: Option<u32>,
    #[serde(default)]
    pub media_ids: Vec<String>,
}

/// A partial update; `media_ids`, when present, replaces the whole list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdatePlaylist {
    pub name: Option<String>,
    pub order: Option<PlayOrder>,
    pub weight: Option<u32>,
    pub days: Option<Vec<u8>>,
    pub start: Option<TimeOfDay>,
    pub end: Option<TimeOfDay>,
    pub every_songs: Option<u32>,
    pub media_ids: Option<Vec<String>>,
}

/// A station's AutoDJ settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutoDjSettings {
    /// IANA time zone of the station's schedules, e.g. "Europe/Berlin" (default "UTC").
    pub timezone: TimeZoneName,
    /// Crossfade between tracks in milliseconds, 0 (off, the default) to 10000. It decodes and
    /// re-encodes the station continuously, so it costs CPU on its node.
    #[serde(default)]
    pub crossfade_ms: u32,
}

/// Query of a station's usage history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct UsageParams {
    /// Start (RFC 3339, inclusive); default: 24 hours before `to`.
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<String>,
    /// `hour` (default) or `day`; buckets are aligned to UTC.
    pub granularity: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// One hour or day of a station's usage, over every node and mount that carried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageBucket {
    /// RFC 3339 start of the bucket.
    pub start: String,
    /// Listener time summed over listeners, in seconds (milliseconds exact in `listener_ms`).
    pub listener_seconds: f64,
    pub listener_ms: u64,
    /// Listener connections admitted.
    pub sessions: u64,
    /// Audio bytes delivered to listeners.
    pub bytes_sent: u64,
    /// Most listeners at once (per report interval, summed over nodes and mounts).
    pub peak_listeners: u64,
}

/// A station's usage history, as nodes reported and the control plane stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StationUsage {
    pub station_id: String,
    pub granularity: String,
    pub from: String,
    pub to: String,
    pub buckets: Vec<UsageBucket>,
    /// Sums over the buckets (the peak is the largest bucket peak).
    pub total: UsageTotal,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageTotal {
    pub listener_ms: u64,
    pub listener_hours: f64,
    pub sessions: u64,
    pub bytes_sent: u64,
    pub peak_listeners: u64,
}

/// Query of a tenant's realtime usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct RealtimeUsageParams {
    /// The tenant (the admin must name one; a tenant key reads only its own).
    pub tenant_id: Option<String>,
    /// Start (RFC 3339); the UTC day that holds it is the first. Default: 30 days before `to`.
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<String>,
}

/// A tenant's end users' realtime usage on one UTC day (or the sum of the days).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RealtimeUsageDay {
    /// RFC 3339 start of the day (empty on the total).
    pub start: String,
    /// Time every socket of the tenant's users was connected, summed (as replicas wrote it:
    /// up to `realtime.usage_flush_secs` behind).
    pub connection_ms: u64,
    pub connection_minutes: f64,
    /// Messages sent (stored).
    pub messages: u64,
    /// Payments made (tips, purchases, subscription periods, calls).
    #[serde(default)]
    pub transactions: u64,
    /// Time of 1-to-1 calls charged to the callers (each charged unit's length).
    #[serde(default)]
    pub call_ms: u64,
    #[serde(default)]
    pub call_minutes: f64,
    /// Bytes the TURN relays relayed for the tenant's end users' calls: what each relay
    /// received from and sent to them (coturn's per-allocation usage, `rb + sb`), counted on
    /// the day the node's usage report period starts.
    #[serde(default)]
    pub turn_bytes: u64,
}

/// A tenant's realtime usage per UTC day: what billing prices as connection minutes and
/// messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantRealtimeUsage {
    pub tenant_id: String,
    pub from: String,
    pub to: String,
    pub days: Vec<RealtimeUsageDay>,
    pub total: RealtimeUsageDay,
}

/// Listeners of a station right now, as its nodes last reported them (relay pulls left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StationListeners {
    pub station_id: String,
    pub listeners: u64,
    /// Per station mount, over every node.
    pub mounts: Vec<MountListeners>,
    /// Per node carrying the station.
    pub nodes: Vec<NodeListeners>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MountListeners {
    /// The station's mount path (`/radio.mp3`).
    pub mount: String,
    pub listeners: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeListeners {
    pub node_id: String,
    pub name: String,
    /// `origin`, `relay` or `leaving`.
    pub role: String,
    pub listeners: u64,
    pub mounts: Vec<MountListeners>,
}

/// One Prometheus HTTP service-discovery target group (`http_sd_configs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SdTargetGroup {
    /// `host:port` of the node's edge, which serves `/metrics` (the agent's own series too).
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Whether an invoice may still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum InvoiceStatus {
    /// Recomputed by each billing run of its period.
    Draft,
    /// Never changes again.
    Finalized,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Finalized => "finalized",
        }
    }
}

/// One line of an invoice. `amount_micros` is `unit_price_micros` × the exact quantity, rounded
/// half up to a micro-unit (`quantity` is exact for GB and for days as a fraction of the month
/// up to six places; listener hours are shown to six places).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceLine {
    /// `plan`, `bandwidth_overage` or `listener_hours_overage`.
    pub kind: String,
    pub description: String,
    pub plan_id: String,
    /// The month the line's days or usage belong to (`YYYY-MM`): earlier than the invoice's
    /// own period for usage that arrived after its month was finalized.
    pub usage_period: String,
    pub quantity: String,
    /// `month`, `GB` (10^9 bytes) or `listener hour`.
    pub unit: String,
    pub unit_price_micros: u64,
    pub amount_micros: u64,
}

/// A tenant's invoice for one calendar month (UTC). Taxes are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invoice {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    /// `YYYY-MM`.
    pub period: String,
    /// RFC 3339, inclusive.
    pub period_start: String,
    /// RFC 3339, exclusive.
    pub period_end: String,
    pub status: InvoiceStatus,
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
    pub total_micros: u64,
    pub created_at: String,
    pub updated_at: String,
    pub finalized_at: Option<String>,
}

/// Generate (and optionally finalize) the invoices of one month.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBillingRun {
    /// `YYYY-MM`, UTC; a month that has begun.
    pub period: String,
    /// Finalize every invoice of the period as well; refused until the period has ended.
    #[serde(default)]
    pub finalize: bool,
}

/// A tenant the run could not bill, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedTenant {
    pub tenant_id: String,
    pub reason: String,
}

/// What a billing run did. Running it again with nothing changed creates and updates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingRun {
    pub period: String,
    /// New draft (or, with `finalize`, finalized) invoices.
    pub created: u32,
    /// Drafts whose lines changed (new usage, a plan change).
    pub updated: u32,
    pub unchanged: u32,
    /// Invoices this run finalized.
    pub finalized: u32,
    /// Invoices that were already finalized and were left as they are.
    pub already_finalized: u32,
    /// Every invoice of the period after the run.
    pub invoice_ids: Vec<String>,
    pub skipped: Vec<SkippedTenant>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct InvoiceParams {
    /// Items per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this month (`YYYY-MM`).
    pub period: Option<String>,
    /// Only this tenant (admin; a tenant key sees its own invoices only).
    pub tenant_id: Option<String>,
    /// `draft` or `finalized`.
    pub status: Option<String>,
    /// `json` (default) or `csv` (one row per invoice line).
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct FormatParams {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct HistoryParams {
    /// Start (RFC 3339, inclusive); default: 24 hours before `to`.
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<String>,
    /// Most entries, newest first: 1 to 1000 (default 100).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// One track (AutoDJ) or live show a station played.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// RFC 3339 (milliseconds exact in `started_at_ms`).
    pub started_at: String,
    pub started_at_ms: u64,
    /// Known for AutoDJ tracks; none for live shows.
    pub duration_ms: Option<u64>,
    /// `autodj` or `live`.
    pub source: String,
    /// The live DJ's display name, when one was on.
    pub streamer: String,
    /// "Artist - Title" as listeners saw it in the stream metadata.
    pub text: String,
    pub artist: String,
    pub title: String,
    /// The media file played (AutoDJ).
    pub media_sha256: Option<String>,
    /// The listener request it played for (`/v1/stations/{id}/requests`).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// What a station played in a time range, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StationHistory {
    pub station_id: String,
    pub from: String,
    pub to: String,
    pub items: Vec<HistoryEntry>,
}

/// Who may watch a live stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StreamAccess {
    /// Anyone with the URL.
    #[default]
    Public,
    /// Viewers with a playback token the tenant mints (`POST /v1/streams/{id}/playback-tokens`).
    Token,
    /// Subscribers of the stream's creator (`creator_id`); they get their token from
    /// `POST /v1/me/streams/{id}/playback`.
    Subscribers,
    /// Viewers who bought the stream once at `price` (`POST /v1/me/streams/{id}/purchase`).
    PayPerView,
}

impl StreamAccess {
    pub const ALL: [StreamAccess; 4] = [
        StreamAccess::Public,
        StreamAccess::Token,
        StreamAccess::Subscribers,
        StreamAccess::PayPerView,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamAccess::Public => "public",
            StreamAccess::Token => "token",
            StreamAccess::Subscribers => "subscribers",
            StreamAccess::PayPerView => "pay_per_view",
        }
    }
}

impl std::str::FromStr for StreamAccess {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        StreamAccess::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an access mode"))
    }
}

/// A tenant's live video stream: published over RTMP with `stream_key` to the node carrying it,
/// watched over HLS at `/watch/{slug}.m3u8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveStream {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// Short unique name in public URLs (changing it invalidates its playback tokens).
    pub slug: String,
    pub access: StreamAccess,
    /// The creator (an end user of the tenant) whose stream it is: `subscribers` streams admit
    /// this creator's subscribers, and pay-per-view purchases pay this creator.
    #[serde(default)]
    pub creator_id: Option<String>,
    /// `pay_per_view`: what one viewer pays once, in minor units of the tenant's currency.
    #[serde(default)]
    pub price: Option<i64>,
    /// The RTMP stream key (OBS: "Stream Key"); rotate it with `POST …/stream-key`.
    pub stream_key: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateLiveStream {
    pub name: String,
    /// Derived from the name when absent.
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub access: StreamAccess,
    /// Required for `subscribers` and `pay_per_view`: a creator of the tenant.
    #[serde(default)]
    pub creator_id: Option<String>,
    /// Required for `pay_per_view`: 1 to 10^12 minor units.
    #[serde(default)]
    pub price: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateLiveStream {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub access: Option<StreamAccess>,
    /// The stream's creator (a creator of the tenant).
    pub creator_id: Option<String>,
    /// The pay-per-view price, 1 to 10^12 minor units.
    pub price: Option<i64>,
}

/// Mint a playback token for one viewer of a token stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePlaybackToken {
    /// How long it plays, 60 s to 7 days (default 3600).
    pub ttl_seconds: Option<u64>,
    /// The viewer (subscriber, buyer) as the tenant's site knows them: letters, digits, `_`,
    /// `-`, at most 64; default none.
    #[serde(default)]
    pub viewer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlaybackToken {
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// `/watch/{slug}.m3u8?token=…` through the redirector.
    pub watch_path: String,
}

/// A live stream's audience right now (a heartbeat behind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveStreamViewers {
    pub stream_id: String,
    /// Playback sessions active on the edges carrying it.
    pub viewers: u64,
    /// A publisher streams into it.
    pub publishing: bool,
    /// The node carrying it.
    pub node: Option<String>,
}

/// Where to publish a live stream and where it is watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveStreamIngest {
    pub stream_id: String,
    /// The node carrying the stream; None until the scheduler placed it.
    pub node: Option<String>,
    /// OBS "Server": `rtmp://HOST:PORT/live` on that node; None until placed.
    pub rtmp_url: Option<String>,
    pub stream_key: String,
    /// `rtmp_url` + `/` + key, for ffmpeg (`-f flv URL`).
    pub publish_url: Option<String>,
    /// The HLS playlist through the control plane's redirector.
    pub watch_path: String,
    /// Nodes that could not take the stream, each with the edge's sentence.
    #[serde(default)]
    pub failures: Vec<PlacementFailure>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Answers of the panel API as clients have always received them: how times, time zones,
    /// kinds, orders and formats are typed in Rust must not change a byte of them.
    const PLAYLIST_JSON: &str = concat!(
        r#"{"id":"pl_1","station_id":"stn_1","name":"Night","kind":"scheduled","#,
        r#""order":"shuffle","weight":1,"days":[5,6],"start":"22:00","end":"02:30","#,
        r#""every_songs":null,"media_ids":["med_1"],"created_at":"2026-01-01T00:00:00Z","#,
        r#""updated_at":"2026-01-01T00:00:00Z"}"#,
    );
    const PLAYLISTS_JSON: &str = concat!(
        r#"[{"id":"pl_1","station_id":"stn_1","name":"Night","kind":"rotation","#,
        r#""order":"sequential","weight":1,"days":[],"start":null,"end":null,"#,
        r#""every_songs":null,"media_ids":["med_1"],"created_at":"2026-01-01T00:00:00Z","#,
        r#""updated_at":"2026-01-01T00:00:00Z"},{"id":"pl_1","station_id":"stn_1","#,
        r#""name":"Night","kind":"interval","order":"random","weight":1,"days":[],"start":null,"#,
        r#""end":null,"every_songs":null,"media_ids":["med_1"],"#,
        r#""created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"},"#,
        r#"{"id":"pl_1","station_id":"stn_1","name":"Night","kind":"station_id","#,
        r#""order":"shuffle","weight":1,"days":[],"start":null,"end":null,"every_songs":null,"#,
        r#""media_ids":["med_1"],"created_at":"2026-01-01T00:00:00Z","#,
        r#""updated_at":"2026-01-01T00:00:00Z"}]"#,
    );
    const SETTINGS_JSON: &str = r#"{"timezone":"Europe/Berlin","crossfade_ms":0}"#;
    const MOUNTS_JSON: &str = concat!(
        r#"[{"path":"/r.mp3","format":"mp3","bitrate_kbps":64},{"path":"/r.aac","format":"aac","#,
        r#""bitrate_kbps":64},{"path":"/r.opus","format":"opus","bitrate_kbps":64}]"#,
    );

    #[test]
    fn the_wire_json_of_playlists_settings_and_mounts_is_unchanged() {
        let night = Playlist {
            id: "pl_1".into(),
            station_id: "stn_1".into(),
            name: "Night".into(),
            kind: PlaylistKind::Scheduled,
            order: PlayOrder::Shuffle,
            weight: 1,
            days: vec![5, 6],
            start: TimeOfDay::new(22, 0),
            end: TimeOfDay::new(2, 30),
            every_songs: None,
            media_ids: vec!["med_1".into()],
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let others: Vec<Playlist> = [
            (PlaylistKind::Rotation, PlayOrder::Sequential),
            (PlaylistKind::Interval, PlayOrder::Random),
            (PlaylistKind::StationId, PlayOrder::Shuffle),
        ]
        .into_iter()
        .map(|(kind, order)| Playlist {
            kind,
            order,
            days: Vec::new(),
            start: None,
            end: None,
            ..night.clone()
        })
        .collect();
        let settings = AutoDjSettings {
            timezone: TimeZoneName::new("Europe/Berlin"),
            crossfade_ms: 0,
        };
        let mounts: Vec<Mount> = AudioFormat::ALL
            .into_iter()
            .map(|format| Mount {
                path: format!("/r.{format}"),
                format,
                bitrate_kbps: 64,
            })
            .collect();
        assert_eq!(serde_json::to_string(&night).unwrap(), PLAYLIST_JSON);
        assert_eq!(serde_json::to_string(&others).unwrap(), PLAYLISTS_JSON);
        assert_eq!(serde_json::to_string(&settings).unwrap(), SETTINGS_JSON);
        assert_eq!(serde_json::to_string(&mounts).unwrap(), MOUNTS_JSON);
        assert_eq!(
            serde_json::from_str::<Playlist>(PLAYLIST_JSON).unwrap(),
            night
        );
        assert_eq!(
            serde_json::from_str::<Vec<Playlist>>(PLAYLISTS_JSON).unwrap(),
            others
        );
        assert_eq!(
            serde_json::from_str::<AutoDjSettings>(SETTINGS_JSON).unwrap(),
            settings
        );
        assert_eq!(
            serde_json::from_str::<Vec<Mount>>(MOUNTS_JSON).unwrap(),
            mounts
        );
    }
}
