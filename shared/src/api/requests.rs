//! Wire types of song requests: the station's settings (on the station), the public routes
//! listeners call (`/api/station/{station}/requests`, `/api/station/{station}/request/{id}`, in
//! AzuraCast's shape) and the tenant's view of the queue (`/v1/stations/{id}/requests`).

use super::Song;
use serde::{Deserialize, Serialize};

/// Whether and how a station takes song requests from its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RequestSettings {
    /// Listeners may request tracks (the plan needs the feature `requests`).
    pub enabled: bool,
    /// A track played or requested within this many minutes is refused (0: no gap).
    pub track_gap_minutes: u32,
    /// A track whose artist was played or requested within this many minutes is refused
    /// (0: no gap).
    pub artist_gap_minutes: u32,
    /// One listener (client address; an IPv6 client by its /64) may make this many requests …
    pub per_ip_limit: u32,
    /// … in this many minutes.
    pub per_ip_minutes: u32,
}

impl Default for RequestSettings {
    fn default() -> Self {
        RequestSettings {
            enabled: false,
            track_gap_minutes: 60,
            artist_gap_minutes: 0,
            per_ip_limit: 2,
            per_ip_minutes: 10,
        }
    }
}

/// A partial change of a station's request settings; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestSettingsPatch {
    pub enabled: Option<bool>,
    pub track_gap_minutes: Option<u32>,
    pub artist_gap_minutes: Option<u32>,
    pub per_ip_limit: Option<u32>,
    pub per_ip_minutes: Option<u32>,
}

impl RequestSettingsPatch {
    /// `s` with this patch's fields put in.
    pub fn apply(&self, s: RequestSettings) -> RequestSettings {
        RequestSettings {
            enabled: self.enabled.unwrap_or(s.enabled),
            track_gap_minutes: self.track_gap_minutes.unwrap_or(s.track_gap_minutes),
            artist_gap_minutes: self.artist_gap_minutes.unwrap_or(s.artist_gap_minutes),
            per_ip_limit: self.per_ip_limit.unwrap_or(s.per_ip_limit),
            per_ip_minutes: self.per_ip_minutes.unwrap_or(s.per_ip_minutes),
        }
    }
}

/// A track a listener may request: `request_id` is what `POST …/request/{request_id}` takes,
/// `song.id` the opaque id the now-playing JSON shows for the same track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestableSong {
    pub request_id: String,
    /// The path to `POST` to request it (`/api/station/{slug}/request/{request_id}`).
    pub request_url: String,
    pub song: Song,
}

/// One page of a station's requestable tracks, sorted by artist and title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestableSongs {
    pub items: Vec<RequestableSong>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
}

/// Query of the public list: `q` searches artist, title, album and file name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct RequestableParams {
    pub q: Option<String>,
    /// 1-based page (default 1).
    pub page: Option<u32>,
    /// 1 to 100 (default 25).
    pub per_page: Option<u32>,
}

/// The answer to an accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestAccepted {
    pub ok: bool,
    pub message: String,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for the AutoDJ.
    Pending,
    /// The AutoDJ played it.
    Played,
    /// The tenant cleared it before it played.
    Cleared,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Played => "played",
            RequestState::Cleared => "cleared",
        }
    }
}

impl std::str::FromStr for RequestState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(RequestState::Pending),
            "played" => Ok(RequestState::Played),
            "cleared" => Ok(RequestState::Cleared),
            other => Err(format!("{other:?} is not a request state")),
        }
    }
}

/// A listener's request as the tenant sees it (the client address is kept only as a hash and
/// never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SongRequest {
    pub id: String,
    pub station_id: String,
    pub media_id: String,
    pub artist: String,
    pub title: String,
    pub state: RequestState,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339, once played.
    pub played_at: Option<String>,
}

/// Query of the panel list: one page, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SongRequestParams {
    /// Only requests in this state.
    pub state: Option<RequestState>,
    /// 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The panel's answer to clearing the pending requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestsCleared {
    pub cleared: u64,
}
