//! Wire types of the signed-in viewer's and creator's view of live streams
//! (`GET /v1/me/streams/{id}` (id or slug), `GET /v1/me/streams`): what the web app's watch page and
//! go-live page read. A viewer's view never carries the stream key; a creator's own view does.

use super::{AccessGrant, StreamAccess};
use serde::{Deserialize, Serialize};

/// The creator of a stream as its viewers see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamCreator {
    pub id: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    /// The 30-day subscription from the wallet, in minor units; None: not sold.
    pub subscription_price: Option<i64>,
    /// The smallest tip the creator accepts, in minor units.
    pub tip_minimum: i64,
}

/// `GET /v1/me/streams/{id}` (id or slug): a live stream of the caller's tenant as a signed-in viewer
/// sees it, with whether the membership check lets the caller watch and, if not, what would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamView {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub access: StreamAccess,
    /// Pay-per-view: the price of one purchase, in minor units of `currency`.
    pub price: Option<i64>,
    /// The tenant's currency (ISO 4217).
    pub currency: String,
    pub creator: Option<StreamCreator>,
    /// The caller may watch: `POST /v1/me/streams/{id}/playback` answers a token.
    pub entitled: bool,
    /// Not entitled: what would grant access (the 402/403 problem's `grant`).
    pub grant: Option<AccessGrant>,
    /// Playback sessions on the edges right now (a heartbeat behind).
    pub viewers: u64,
    /// A publisher streams into it.
    pub publishing: bool,
}

/// `GET /v1/me/streams`: one of the caller's own streams (they are its `creator_id`), with where
/// to publish it and its live figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatorStream {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub access: StreamAccess,
    pub price: Option<i64>,
    pub currency: String,
    /// OBS "Server": `rtmp://HOST:PORT/live` on the node carrying the stream; None until placed.
    pub rtmp_url: Option<String>,
    /// OBS "Stream Key".
    pub stream_key: String,
    /// `rtmp_url` + `/` + key, for ffmpeg.
    pub publish_url: Option<String>,
    /// The web app's watch page of the stream (`/app/watch/{slug}`).
    pub watch_page_path: String,
    pub viewers: u64,
    pub publishing: bool,
}

/// `PATCH /v1/me/streams/{id}`: the creator sells their stream to subscribers or per view.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateCreatorStream {
    /// `subscribers` or `pay_per_view` (`public` and `token` are the tenant's to set).
    pub access: Option<StreamAccess>,
    /// The pay-per-view price in minor units (1 to 10^12).
    pub price: Option<i64>,
}
