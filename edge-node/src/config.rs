//! The edge node's configuration: the TOML file of `onda edge --config edge.toml` and, identically,
//! the typed value the agent hands to [`crate::Edge::apply`] at runtime.

use onda_shared::config::{empty_is_none, parsed};
use onda_shared::domain::{AudioFormat, PlayOrder, PlaylistKind, TimeOfDay, TimeZoneName};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// A configuration value the edge cannot use: the key it is under (`limits.queue_bytes`,
/// `mounts`, `autodj`, `live_streams`, …) and a sentence that names the value, and the mount,
/// AutoDJ or stream it belongs to.
pub use onda_shared::config::ConfigError;

/// Returns a [`ConfigError`] under `key` with a formatted message.
macro_rules! invalid {
    ($key:expr, $($message:tt)+) => {
        return Err(ConfigError::new($key, format!($($message)+)))
    };
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub mounts: Vec<MountConfig>,
    pub relays: Vec<RelayConfig>,
    pub media: MediaConfig,
    /// Stations played by the AutoDJ, each into one or more of `mounts`.
    pub autodj: Vec<AutoDjConfig>,
    /// Listener limits shared by several mounts (a station's share of its plan's limit on this
    /// node): group name → most listeners at once over every mount naming the group.
    pub listener_groups: std::collections::BTreeMap<String, u64>,
    /// RTMP ingest of live video (off unless `rtmp.listen` is set).
    pub rtmp: RtmpConfig,
    /// How live streams are cut into HLS.
    pub hls: HlsConfig,
    /// The mounts' audio as HLS (packed MP3/AAC segments), beside the Icecast stream.
    pub audio_hls: AudioHlsConfig,
    /// Live video streams publishers may push over RTMP, each with its stream key.
    pub live_streams: Vec<LiveStreamConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Listen address for RTMP publishers, e.g. "0.0.0.0:1935"; empty: no RTMP. `ONDA_RTMP_LISTEN`.
    #[serde(with = "empty_is_none")]
    pub listen: Option<SocketAddr>,
    /// nginx-rtmp's `on_publish`: an http:// URL POSTed (form) before a publish with a known key
    /// is accepted; a 2xx answer allows it, anything else or no answer within
    /// `webhook_timeout_ms` refuses it. Empty: no call.
    #[serde(with = "empty_is_none")]
    pub on_publish: Option<Url>,
    /// nginx-rtmp's `on_publish_done`: POSTed when a publisher leaves (the answer is ignored).
    /// Empty: no call.
    #[serde(with = "empty_is_none")]
    pub on_publish_done: Option<Url>,
    pub webhook_timeout_ms: u64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: None,
            on_publish: None,
            on_publish_done: None,
            webhook_timeout_ms: 3000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Target segment duration; segments are cut at the first keyframe after it, so set the
    /// encoder's keyframe interval to it or a divisor of it (OBS: 2 s).
    pub segment_ms: u64,
    /// Low-latency HLS: each segment is also published as partial segments of at most this
    /// long (`EXT-X-PART`), with blocking playlist reloads and preload hints; players that know
    /// LL-HLS (hls.js, Safari) then play about 3 parts behind live. 0: plain HLS only.
    pub part_ms: u64,
    /// Segments the playlist lists per stream.
    pub window: u64,
    /// A viewer (playback session) ends after this long without a playlist or segment request.
    pub viewer_timeout_ms: u64,
    /// Where segments are kept, one file each (a part is written as it completes), so that
    /// the window sits in the page cache rather than in the edge's memory. The
    /// edge makes a directory of its own in it and removes what an earlier edge left there, so
    /// give each edge its own. Empty: a private directory under the system's temporary
    /// directory (which is memory where `/tmp` is a tmpfs). Read at start only.
    /// `ONDA_HLS_SEGMENT_DIR`.
    pub segment_dir: PathBuf,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_ms: 2000,
            part_ms: 500,
            window: 6,
            viewer_timeout_ms: 15_000,
            segment_dir: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioHlsConfig {
    /// Serve every MP3 and AAC mount as HLS too, at `/hls-audio{mount}/index.m3u8` (Ogg mounts
    /// answer 404 there, saying why).
    pub enabled: bool,
    /// Target segment duration: segments are cut on a frame boundary at or below it, and where
    /// the title changes.
    pub segment_ms: u64,
    /// Segments the playlist lists (memory holds three more per mount).
    pub window: u64,
    /// An HLS listener (a session) ends after this long without a playlist request; at least
    /// twice `segment_ms`, since players reload the playlist about once per segment.
    pub session_timeout_ms: u64,
}

impl Default for AudioHlsConfig {
    fn default() -> Self {
        AudioHlsConfig {
            enabled: true,
            segment_ms: 4000,
            window: 6,
            session_timeout_ms: 12_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveStreamConfig {
    /// The stream's name in URLs: `/hls/{name}/index.m3u8`.
    pub name: String,
    /// The RTMP stream key (the publish name after the application, as OBS sends it).
    pub key: String,
    /// When set, every playlist and segment request needs a playback token signed with this
    /// secret (`onda_shared::playback`, `?token=`); absent, the stream is public.
    #[serde(default)]
    pub playback_secret: Option<String>,
    /// Relay: pull the stream's HLS from this origin edge (`http://edge1:8000`) and serve it
    /// from a local copy, instead of taking RTMP publishes.
    #[serde(default)]
    pub origin_url: Option<Url>,
    /// An ABR ladder: each rendition is made from the publish by one ffmpeg per stream
    /// (H.264, audio copied) and played at `/hls/{name}/{rendition}/index.m3u8`; the master
    /// playlist `/hls/{name}/master.m3u8` lists the source and them. Needs `rtmp.listen`: the
    /// renditions come back into this node over RTMP on loopback.
    #[serde(default)]
    pub renditions: Vec<RenditionConfig>,
}

/// One rung of a live stream's ABR ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionConfig {
    /// Its name in URLs, e.g. "480p".
    pub name: String,
    /// Picture height in pixels (even, 144–2160); the width keeps the source's aspect.
    pub height: u32,
    /// Video bitrate in kbit/s (100–20000).
    pub video_kbps: u32,
}

/// The most renditions a stream may have (each is an x264 encode on the node).
pub const MAX_RENDITIONS: usize = onda_shared::api::MAX_LIVE_RENDITIONS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Where AutoDJ renditions are cached, one file per (content hash, format, bitrate).
    pub cache_dir: PathBuf,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            cache_dir: PathBuf::from("renditions"),
        }
    }
}

/// One station's AutoDJ: a playlist played in real time into one or more mounts, each in its own
/// format and bitrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDjConfig {
    /// The station's name (logs, `icy-name`).
    pub name: String,
    pub outputs: Vec<AutoDjOutput>,
    /// A configured mount live DJs connect to with any source client: while one is on it, the
    /// outputs carry the live show (converted where format or bitrate differ), and the AutoDJ
    /// resumes when the DJ leaves. Listeners of the outputs stay connected throughout.
    #[serde(default)]
    pub live_mount: Option<String>,
    /// IANA time zone the schedules are in (the station's), e.g. "Europe/Berlin"; "UTC" when
    /// absent.
    #[serde(default)]
    pub timezone: TimeZoneName,
    /// Crossfade between tracks, in milliseconds (0 = off, at most 10000). It decodes and
    /// re-encodes continuously (one ffmpeg per output and one per track), so it costs CPU; off,
    /// the AutoDJ copies pre-encoded frames.
    #[serde(default)]
    pub crossfade_ms: u64,
    /// Shorthand for one rotation playlist: its order and tracks.
    #[serde(default)]
    pub order: PlayOrder,
    #[serde(default)]
    pub tracks: Vec<TrackConfig>,
    #[serde(default)]
    pub playlists: Vec<PlaylistConfig>,
    /// Listeners' requests, oldest first: each plays once, after the current track and before
    /// the playlists go on (the agent fills this from the control plane's queue).
    #[serde(default)]
    pub requests: Vec<RequestConfig>,
}

/// A requested track and the id its play is reported with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    pub id: String,
    pub track: TrackConfig,
}

/// Name of the rotation playlist that the shorthand `tracks` and `order` stand for.
pub const DEFAULT_PLAYLIST: &str = "default";

impl AutoDjConfig {
    /// Every playlist, the shorthand `tracks` last as a rotation playlist of weight 1 named
    /// [`DEFAULT_PLAYLIST`] when there are any.
    pub fn all_playlists(&self) -> Vec<std::borrow::Cow<'_, PlaylistConfig>> {
        let mut all: Vec<_> = self
            .playlists
            .iter()
            .map(std::borrow::Cow::Borrowed)
            .collect();
        if !self.tracks.is_empty() {
            all.push(std::borrow::Cow::Owned(PlaylistConfig {
                name: DEFAULT_PLAYLIST.to_string(),
                kind: PlaylistKind::Rotation,
                order: self.order,
                weight: 1,
                days: Vec::new(),
                start: None,
                end: None,
                every_songs: None,
                tracks: self.tracks.clone(),
            }));
        }
        all
    }

    /// Checks the time zone and the playlists; every error names the AutoDJ, the playlist and
    /// the key.
    fn validate_playlists(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        self.timezone
            .zone()
            .map_err(|e| ConfigError::new("autodj", format!("autodj {name:?}: {e}")))?;
        if self.crossfade_ms > 10_000 {
            invalid!(
                "autodj",
                "autodj {name:?}: crossfade_ms = {} must be at most 10000",
                self.crossfade_ms
            );
        }
        let rotation_tracks = self.tracks.len()
            + self
                .playlists
                .iter()
                .filter(|p| p.kind == PlaylistKind::Rotation)
                .map(|p| p.tracks.len())
                .sum::<usize>();
        if rotation_tracks == 0 {
            invalid!(
                "autodj",
                "autodj {name:?}: no rotation track: set tracks, or a playlist of kind \"rotation\" \
                 with tracks, so the station never runs out of music"
            );
        }
        let mut names = HashSet::new();
        if !self.tracks.is_empty() {
            names.insert(DEFAULT_PLAYLIST);
        }
        for (i, p) in self.playlists.iter().enumerate() {
            if p.name.trim().is_empty() {
                invalid!("autodj", "autodj {name:?}: playlists[{i}]: name is empty");
            }
            let at = format!("autodj {name:?}: playlist {:?}", p.name);
            if !names.insert(p.name.as_str()) {
                if p.name == DEFAULT_PLAYLIST && !self.tracks.is_empty() {
                    invalid!(
                        "autodj",
                        "{at}: name is taken by the shorthand tracks (the playlist \"{DEFAULT_PLAYLIST}\")"
                    );
                }
                invalid!("autodj", "{at}: name is used twice");
            }
            if p.tracks.is_empty() {
                invalid!("autodj", "{at}: tracks is empty");
            }
            if p.weight == 0 {
                invalid!("autodj", "{at}: weight must be at least 1");
            }
            let scheduled = p.kind == PlaylistKind::Scheduled;
            for (key, set) in [
                ("days", !p.days.is_empty()),
                ("start", p.start.is_some()),
                ("end", p.end.is_some()),
            ] {
                if set && !scheduled {
                    invalid!("autodj", "{at}: {key} is only for kind = \"scheduled\"");
                }
            }
            if p.every_songs.is_some() && p.kind != PlaylistKind::Interval {
                invalid!(
                    "autodj",
                    "{at}: every_songs is only for kind = \"interval\""
                );
            }
            match p.kind {
                PlaylistKind::Scheduled => {
                    for (key, v) in [("start", &p.start), ("end", &p.end)] {
                        if v.is_none() {
                            invalid!(
                                "autodj",
                                "{at}: {key} is missing: a scheduled playlist needs start and end (\"HH:MM\")"
                            );
                        }
                    }
                    if let Some(d) = p.days.iter().find(|d| !(1..=7).contains(*d)) {
                        invalid!(
                            "autodj",
                            "{at}: days contains {d}: days are 1 (Monday) to 7 (Sunday)"
                        );
                    }
                }
                PlaylistKind::Interval => {
                    if p.every_songs.unwrap_or(0) == 0 {
                        invalid!("autodj", "{at}: every_songs must be at least 1");
                    }
                }
                PlaylistKind::Rotation | PlaylistKind::StationId => {}
            }
        }
        let shorthand = (format!("autodj {name:?}: tracks"), &self.tracks);
        let lists = self
            .playlists
            .iter()
            .map(|p| (format!("autodj {name:?}: playlist {:?}", p.name), &p.tracks));
        for (at, tracks) in std::iter::once(shorthand).chain(lists) {
            for t in tracks {
                if t.file.to_string_lossy().trim().is_empty() {
                    invalid!("autodj", "{at}: a track has an empty file");
                }
                if t.weight == 0 {
                    invalid!(
                        "autodj",
                        "{at}: track {}: weight must be at least 1",
                        t.file.display()
                    );
                }
            }
        }
        Ok(())
    }
}

/// A playlist of the AutoDJ. What plays next, at each track change: a station ID once the hour
/// has turned since the last one; else an interval playlist whose turn has come; else a
/// scheduled playlist in its window; else a rotation playlist chosen by weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaylistConfig {
    pub name: String,
    #[serde(default)]
    pub kind: PlaylistKind,
    /// Order of the tracks within this playlist.
    #[serde(default)]
    pub order: PlayOrder,
    /// Rotation: how often this playlist is chosen relative to the other rotation playlists.
    #[serde(default = "one")]
    pub weight: u32,
    /// Scheduled: ISO days of the week (1 = Monday … 7 = Sunday); empty = every day.
    #[serde(default)]
    pub days: Vec<u8>,
    /// Scheduled: window start and end, "HH:MM" in `timezone`; an end at or before the start
    /// crosses midnight (the window belongs to the day it starts on).
    #[serde(default)]
    pub start: Option<TimeOfDay>,
    #[serde(default)]
    pub end: Option<TimeOfDay>,
    /// Interval: one track of this playlist after every this many songs.
    #[serde(default)]
    pub every_songs: Option<u32>,
    pub tracks: Vec<TrackConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDjOutput {
    /// A configured mount (not a relay's).
    pub mount: String,
    /// `mp3`, `aac` (ADTS) or `opus` (Ogg).
    pub format: AudioFormat,
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// An audio file in any format ffmpeg reads.
    pub file: PathBuf,
    #[serde(default)]
    pub artist: String,
    #[serde(default)]
    pub title: String,
    /// Relative weight for `order = "random"`.
    #[serde(default = "one")]
    pub weight: u32,
    /// The file's SHA-256 when known (the agent's media arrive by hash); otherwise computed.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Playing time when known (now-playing reports); otherwise estimated from the rendition.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

impl TrackConfig {
    /// `Artist - Title`, or whichever of them is set, or the file name.
    pub fn stream_title(&self) -> String {
        match (self.artist.trim(), self.title.trim()) {
            ("", "") => self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
            (a, "") => a.to_string(),
            ("", t) => t.to_string(),
            (a, t) => format!("{a} - {t}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address for sources, listeners, admin, status and metrics. `ONDA_HTTP_LISTEN`.
    #[serde(with = "parsed")]
    pub listen: SocketAddr,
    /// Host name used in `listenurl` of the status page (defaults to the request's Host).
    pub hostname: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            hostname: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub user: String,
    /// Empty disables the admin routes.
    pub password: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            user: "admin".to_string(),
            password: String::new(),
        }
    }
}

/// Protections and buffer sizes; the defaults follow Icecast 2.4's where it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes sent to a new listener at once so playback starts immediately.
    pub burst_bytes: u64,
    /// How far (bytes) a listener may fall behind the source before it is dropped.
    pub queue_bytes: u64,
    /// A source that sends nothing for this long is dropped.
    pub source_timeout_ms: u64,
    /// A client must finish its request head within this time (slowloris).
    pub header_timeout_ms: u64,
    /// Largest request head.
    pub max_header_bytes: u64,
    /// Most header lines in a request head.
    pub max_headers: u64,
    /// Concurrent connections from one IP address; 0 = no limit. The default (100) leaves room
    /// for many listeners behind one NAT and stops one address from taking every slot. Counted
    /// once the request head is read; a relay pull with the relay key of what it asks for (a
    /// peer node's, all from one address) is not counted. Connections still sending their head
    /// are limited per address to the same number.
    pub max_connections_per_ip: u64,
    /// Concurrent connections in total.
    pub max_connections: u64,
    /// Interval of ICY metadata blocks, in audio bytes.
    pub icy_metaint: u64,
    /// Kernel send buffer of each listener socket; small, so a stalled listener shows up in our
    /// queue within seconds instead of hiding megabytes in the kernel. 0 = the kernel's default.
    pub listener_send_buffer_bytes: u64,
    /// How often new audio is handed to listeners, in milliseconds (also at every 32 KiB); this
    /// adds at most that much latency, which players buffer anyway (Icecast's burst alone is
    /// four seconds). Larger batches mean fewer wake-ups and writes per listener: at 10,000
    /// listeners on two cores, 400 ms cost 34 % CPU, 600 ms 24.5 %, 1000 ms 21.7 %
    /// (BENCHMARKS.md); 0 hands over every source write.
    pub publish_interval_ms: u64,
    /// DJ password checks (Argon2, ~19 MiB each, a buffer per slot kept for reuse) running at
    /// once; 0 = one per CPU core, at most 4. A login beyond them is refused at once (503),
    /// never queued.
    pub password_checks: u64,
    /// Failed source logins from one address, or for one user, before further attempts are
    /// refused for `login_lockout_ms` (429); 0 = no lockout.
    pub login_failures: u64,
    /// How long a lockout lasts after the last failure, in milliseconds.
    pub login_lockout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            burst_bytes: 65_536,
            queue_bytes: 524_288,
            source_timeout_ms: 10_000,
            header_timeout_ms: 15_000,
            max_header_bytes: 8_192,
            max_headers: 64,
            max_connections_per_ip: 100,
            max_connections: 50_000,
            icy_metaint: 16_000,
            listener_send_buffer_bytes: 65_536,
            publish_interval_ms: 600,
            password_checks: 0,
            login_failures: 5,
            login_lockout_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// "/live": a slash and then letters, digits, '.', '_', '-' or '/'; not one of the paths the
    /// server answers itself (`onda_shared::paths`: `/admin`, `/admin/…`, `/hls/…`,
    /// `/status-json.xsl`, `/metrics`, `/healthz`, `/readyz`).
    pub path: String,
    /// Password of user `source` for this mount. Empty refuses every source (relay-only).
    #[serde(default)]
    pub source_password: String,
    /// Concurrent listeners; absent = no limit.
    #[serde(default)]
    pub max_listeners: Option<u64>,
    /// Listeners move here when this mount's source leaves, and back when it returns.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Defaults for the icy-* headers when the source sends none.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub genre: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Listed in directories (`icy-pub`).
    #[serde(default)]
    pub public: Option<bool>,
    /// Further source users (live DJs), each with an Argon2 password hash (PHC string), besides
    /// user `source` with `source_password`.
    #[serde(default)]
    pub source_users: Vec<SourceUser>,
    /// Counts this mount's listeners against a limit of `listener_groups` too.
    #[serde(default)]
    pub listener_group: Option<String>,
    /// Pulls presenting this key in an `X-Onda-Relay` header are relay edges, not listeners:
    /// they are exempt from the group limit and left out of usage.
    #[serde(default)]
    pub relay_key: Option<String>,
    /// Also served as HLS at `/hls-audio{path}/index.m3u8` (when `audio_hls.enabled`; MP3 and
    /// AAC only). Default true; the agent sets it from the station's plan.
    #[serde(default = "yes")]
    pub hls: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceUser {
    pub user: String,
    /// `$argon2id$v=19$...`
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Local mount the relayed stream appears on.
    pub path: String,
    /// Any Icecast-compatible stream URL (http only).
    pub url: Url,
    #[serde(default)]
    pub max_listeners: Option<u64>,
    /// As for mounts: this relay's listeners count against a group limit.
    #[serde(default)]
    pub listener_group: Option<String>,
    /// Sent upstream as `X-Onda-Relay` (so the origin does not count the pull as a listener)
    /// and accepted from relays of this relay.
    #[serde(default)]
    pub relay_key: Option<String>,
    /// As for mounts: the relayed mount is also served as HLS. Default true.
    #[serde(default = "yes")]
    pub hls: bool,
}

impl MountConfig {
    /// A mount with only a path and a source password; everything else unset.
    pub fn new(path: &str, source_password: &str) -> MountConfig {
        MountConfig {
            path: path.to_string(),
            source_password: source_password.to_string(),
            max_listeners: None,
            fallback: None,
            name: None,
            description: None,
            genre: None,
            url: None,
            public: None,
            source_users: Vec::new(),
            listener_group: None,
            relay_key: None,
            hls: true,
        }
    }
}

/// The configuration in force, shared by the parts of a running edge: each reads the current
/// value when it needs it, and [`crate::Edge::apply`] replaces it.
#[derive(Debug, Default)]
pub(crate) struct Current(std::sync::RwLock<std::sync::Arc<EdgeConfig>>);

impl Current {
    pub(crate) fn get(&self) -> std::sync::Arc<EdgeConfig> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, config: EdgeConfig) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(config);
    }
}

/// The configuration checked for what serde cannot check.
#[derive(Debug, Clone)]
pub struct Validated {
    pub listen: SocketAddr,
    /// Where RTMP publishers connect; None without RTMP.
    pub rtmp: Option<SocketAddr>,
    pub config: EdgeConfig,
}

impl LimitsConfig {
    pub fn source_timeout(&self) -> Duration {
        Duration::from_millis(self.source_timeout_ms)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}

/// The ranges of the source-login limits (see `auth`).
fn login_limits(l: &LimitsConfig) -> [(&'static str, u64, u64, u64); 3] {
    [
        ("limits.password_checks", l.password_checks, 0, 1_024),
        ("limits.login_failures", l.login_failures, 0, 1_000_000),
        ("limits.login_lockout_ms", l.login_lockout_ms, 1, 86_400_000),
    ]
}

impl EdgeConfig {
    pub fn validate(self) -> Result<Validated, ConfigError> {
        self.check_limits()?;
        self.check_paths()?;
        self.check_autodj()?;
        self.check_relays()?;
        self.check_rtmp_and_hls()?;
        self.check_audio_hls()?;
        self.check_live_streams()?;
        Ok(Validated {
            listen: self.http.listen,
            rtmp: self.rtmp.listen,
            config: self,
        })
    }

    /// The audio HLS settings in their ranges.
    fn check_audio_hls(&self) -> Result<(), ConfigError> {
        let a = &self.audio_hls;
        let checks = [
            ("audio_hls.segment_ms", a.segment_ms, 1000, 10_000),
            ("audio_hls.window", a.window, 3, 30),
            (
                "audio_hls.session_timeout_ms",
                a.session_timeout_ms,
                2 * a.segment_ms,
                600_000,
            ),
        ];
        for (key, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                invalid!(key, "{key} = {v} must be between {lo} and {hi}");
            }
        }
        Ok(())
    }

    /// Each limit in its range, and the burst smaller than the queue.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let checks = [
            ("limits.burst_bytes", l.burst_bytes, 0, 16 << 20),
            ("limits.queue_bytes", l.queue_bytes, 16 << 10, 256 << 20),
            (
                "limits.source_timeout_ms",
                l.source_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "limits.header_timeout_ms",
                l.header_timeout_ms,
                100,
                600_000,
            ),
            ("limits.max_header_bytes", l.max_header_bytes, 512, 1 << 20),
            ("limits.max_headers", l.max_headers, 4, 1024),
            ("limits.max_connections", l.max_connections, 1, 10_000_000),
            ("limits.icy_metaint", l.icy_metaint, 256, 1 << 20),
            (
                "limits.listener_send_buffer_bytes",
                l.listener_send_buffer_bytes,
                0,
                64 << 20,
            ),
            (
                "limits.publish_interval_ms",
                l.publish_interval_ms,
                0,
                2_000,
            ),
        ];
        for (key, v, lo, hi) in checks.into_iter().chain(login_limits(l)) {
            if !(lo..=hi).contains(&v) {
                invalid!(key, "{key} = {v} must be between {lo} and {hi}");
            }
        }
        if l.burst_bytes >= l.queue_bytes {
            invalid!(
                "limits.burst_bytes",
                "limits.burst_bytes = {} must be smaller than limits.queue_bytes = {}",
                l.burst_bytes,
                l.queue_bytes
            );
        }
        Ok(())
    }

    /// Mount and relay paths: allowed, each once; fallbacks name another configured mount.
    fn check_paths(&self) -> Result<(), ConfigError> {
        let mut paths = HashSet::new();
        let all = self
            .mounts
            .iter()
            .map(|m| ("mounts", m.path.as_str()))
            .chain(self.relays.iter().map(|r| ("relays", r.path.as_str())));
        for (section, path) in all {
            if let Err(why) = onda_shared::paths::check_edge_path(path) {
                invalid!(section, "{section}: {why}");
            }
            if !paths.insert(path.to_string()) {
                invalid!(section, "{section}: path {path:?} is configured twice");
            }
        }
        for m in &self.mounts {
            if let Some(f) = &m.fallback {
                if !paths.contains(f) {
                    invalid!(
                        "mounts",
                        "mounts: {}: fallback {f:?} is not a configured mount",
                        m.path
                    );
                }
                if f == &m.path {
                    invalid!(
                        "mounts",
                        "mounts: {}: a mount cannot fall back to itself",
                        m.path
                    );
                }
            }
        }
        Ok(())
    }

    /// AutoDJs: named once, their playlists, outputs on mounts no other AutoDJ feeds, a live mount that is no output.
    fn check_autodj(&self) -> Result<(), ConfigError> {
        let mut fed = HashSet::new();
        let mut names = HashSet::new();
        for a in &self.autodj {
            if a.name.trim().is_empty() {
                invalid!("autodj", "autodj: every AutoDJ needs a name");
            }
            if !names.insert(a.name.as_str()) {
                invalid!("autodj", "autodj: name {:?} is used twice", a.name);
            }
            if a.outputs.is_empty() {
                invalid!(
                    "autodj",
                    "autodj {:?}: outputs is empty: name the mounts it plays into",
                    a.name
                );
            }
            a.validate_playlists()?;
            for o in &a.outputs {
                if !self.mounts.iter().any(|m| m.path == o.mount) {
                    invalid!(
                        "autodj",
                        "autodj {:?}: output mount {:?} is not one of mounts",
                        a.name,
                        o.mount
                    );
                }
                if !fed.insert(o.mount.as_str()) {
                    invalid!(
                        "autodj",
                        "autodj {:?}: mount {:?} is already fed by an AutoDJ",
                        a.name,
                        o.mount
                    );
                }
                if !(8..=320).contains(&o.bitrate_kbps) {
                    invalid!(
                        "autodj",
                        "autodj {:?}: output {}: bitrate_kbps = {} must be between 8 and 320",
                        a.name,
                        o.mount,
                        o.bitrate_kbps
                    );
                }
            }
            if let Some(live) = &a.live_mount {
                if !self.mounts.iter().any(|m| &m.path == live) {
                    invalid!(
                        "autodj",
                        "autodj {:?}: live_mount {live:?} is not one of mounts",
                        a.name
                    );
                }
                if a.outputs.iter().any(|o| &o.mount == live) {
                    invalid!(
                        "autodj",
                        "autodj {:?}: live_mount {live:?} cannot also be an output",
                        a.name
                    );
                }
            }
        }
        if !self.autodj.is_empty() && self.media.cache_dir.to_string_lossy().trim().is_empty() {
            invalid!(
                "media.cache_dir",
                "media.cache_dir must be set for the AutoDJ"
            );
        }
        Ok(())
    }

    /// Relays pull http:// URLs; listener groups named by mounts and relays exist.
    fn check_relays(&self) -> Result<(), ConfigError> {
        for r in &self.relays {
            if r.url.scheme() != "http" {
                invalid!(
                    "relays",
                    "relays: {}: url {:?} must be an http:// URL",
                    r.path,
                    r.url.as_str()
                );
            }
        }
        let groups = self
            .mounts
            .iter()
            .map(|m| ("mounts", &m.path, &m.listener_group))
            .chain(
                self.relays
                    .iter()
                    .map(|r| ("relays", &r.path, &r.listener_group)),
            );
        for (section, path, group) in groups {
            if let Some(g) = group
                && !self.listener_groups.contains_key(g)
            {
                invalid!(
                    section,
                    "{section}: {path}: listener_group {g:?} is not one of listener_groups"
                );
            }
        }
        Ok(())
    }

    /// The RTMP webhooks and the HLS timing.
    fn check_rtmp_and_hls(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("rtmp.on_publish", &self.rtmp.on_publish),
            ("rtmp.on_publish_done", &self.rtmp.on_publish_done),
        ] {
            if let Some(url) = url
                && !matches!(url.scheme(), "http" | "https")
            {
                invalid!(
                    key,
                    "{key} = {:?} must be an http:// or https:// URL (or empty)",
                    url.as_str()
                );
            }
        }
        if !(100..=60_000).contains(&self.rtmp.webhook_timeout_ms) {
            invalid!(
                "rtmp.webhook_timeout_ms",
                "rtmp.webhook_timeout_ms = {} must be between 100 and 60000",
                self.rtmp.webhook_timeout_ms
            );
        }
        if !(500..=20_000).contains(&self.hls.segment_ms) {
            invalid!(
                "hls.segment_ms",
                "hls.segment_ms = {} must be between 500 and 20000",
                self.hls.segment_ms
            );
        }
        if self.hls.part_ms != 0
            && !(100..=1000.min(self.hls.segment_ms / 2)).contains(&self.hls.part_ms)
        {
            invalid!(
                "hls.part_ms",
                "hls.part_ms = {} must be 0 (no low-latency HLS) or between 100 and {} \
                 (at most 1000 and half of hls.segment_ms)",
                self.hls.part_ms,
                1000.min(self.hls.segment_ms / 2)
            );
        }
        if !(1000..=600_000).contains(&self.hls.viewer_timeout_ms) {
            invalid!(
                "hls.viewer_timeout_ms",
                "hls.viewer_timeout_ms = {} must be between 1000 and 600000",
                self.hls.viewer_timeout_ms
            );
        }
        if !(2..=100).contains(&self.hls.window) {
            invalid!(
                "hls.window",
                "hls.window = {} must be between 2 and 100",
                self.hls.window
            );
        }
        Ok(())
    }

    /// Live streams: names and keys once each, secrets long enough, renditions that can be made.
    fn check_live_streams(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for l in &self.live_streams {
            if let Err(why) = onda_shared::paths::check_live_stream_name(&l.name) {
                invalid!("live_streams", "live_streams: {why}");
            }
            if !names.insert(l.name.as_str()) {
                invalid!(
                    "live_streams",
                    "live_streams: name {:?} is used twice",
                    l.name
                );
            }
            let ok = (8..=256).contains(&l.key.len())
                && l.key
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?');
            if !ok {
                invalid!(
                    "live_streams",
                    "live_streams: {}: key must be 8 to 256 printable characters without '/' or '?'",
                    l.name
                );
            }
            if let Some(secret) = &l.playback_secret
                && secret.len() < 16
            {
                invalid!(
                    "live_streams",
                    "live_streams: {}: playback_secret must be at least 16 characters",
                    l.name
                );
            }
            if let Some(o) = &l.origin_url
                && !matches!(o.scheme(), "http" | "https")
            {
                invalid!(
                    "live_streams",
                    "live_streams: {}: origin_url {:?} must be an http:// or https:// URL",
                    l.name,
                    o.as_str()
                );
            }
            if !keys.insert(l.key.as_str()) {
                invalid!(
                    "live_streams",
                    "live_streams: {}: key is used by another stream",
                    l.name
                );
            }
            if !l.renditions.is_empty() && self.rtmp.listen.is_none() {
                invalid!(
                    "live_streams",
                    "live_streams: {}: renditions need rtmp.listen (they come back into the node over RTMP)",
                    l.name
                );
            }
            if l.renditions.len() > MAX_RENDITIONS {
                invalid!(
                    "live_streams",
                    "live_streams: {}: at most {MAX_RENDITIONS} renditions",
                    l.name
                );
            }
            let mut seen = HashSet::new();
            for r in &l.renditions {
                let ok = !r.name.is_empty()
                    && r.name.len() <= 32
                    && r.name != "master.m3u8"
                    && r.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
                if !ok || !seen.insert(r.name.as_str()) {
                    invalid!(
                        "live_streams",
                        "live_streams: {}: rendition name {:?} must be 1 to 32 letters, digits, '_' or '-', once",
                        l.name,
                        r.name
                    );
                }
                if !(144..=2160).contains(&r.height) || r.height % 2 != 0 {
                    invalid!(
                        "live_streams",
                        "live_streams: {}: rendition {}: height {} must be even, 144 to 2160",
                        l.name,
                        r.name,
                        r.height
                    );
                }
                if !(100..=20_000).contains(&r.video_kbps) {
                    invalid!(
                        "live_streams",
                        "live_streams: {}: rendition {}: video_kbps {} must be 100 to 20000",
                        l.name,
                        r.name,
                        r.video_kbps
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid edge with one AutoDJ, whose `[[autodj]]` table ends with `rest`.
    fn edge(rest: &str) -> anyhow::Result<Validated> {
        let toml = format!(
            "[[mounts]]\npath = \"/radio.mp3\"\n\n\
             [[autodj]]\nname = \"Test FM\"\n\
             outputs = [{{ mount = \"/radio.mp3\", format = \"mp3\", bitrate_kbps = 128 }}]\n{rest}"
        );
        let cfg: EdgeConfig = toml::from_str(&toml)?;
        Ok(cfg.validate()?)
    }

    fn error(rest: &str) -> String {
        match edge(rest) {
            Ok(_) => panic!("accepted:\n{rest}"),
            Err(e) => format!("{e:#}"),
        }
    }

    const SONG: &str = "[[autodj.tracks]]\nfile = \"song.mp3\"\n";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<EdgeConfig, String> {
        onda_shared::config::load_from(text, "edge.toml", env(vars)).map_err(|e| e.to_string())
    }

    /// `rtmp.listen` is off by default and when empty, in the file or the environment; the
    /// environment can switch it on over the default and off over the file.
    #[test]
    fn rtmp_listen_is_an_optional_address_in_the_file_and_the_environment() {
        let addr: SocketAddr = "127.0.0.1:1935".parse().expect("address");
        assert_eq!(load("", &[]).expect("loads").rtmp.listen, None);
        let on = load("", &[("ONDA_RTMP_LISTEN", "127.0.0.1:1935")]).expect("loads");
        assert_eq!(on.rtmp.listen, Some(addr));
        let file = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n";
        assert_eq!(load(file, &[]).expect("loads").rtmp.listen, Some(addr));
        let off = load(file, &[("ONDA_RTMP_LISTEN", "")]).expect("loads");
        assert_eq!(off.rtmp.listen, None);
        let off = load("[rtmp]\nlisten = \"\"\n", &[]).expect("loads");
        assert_eq!(off.rtmp.listen, None);
        let hook = load(
            "[rtmp]\non_publish = \"http://auth.example/publish\"\n",
            &[("ONDA_RTMP_ON_PUBLISH_DONE", "")],
        )
        .expect("loads");
        assert_eq!(
            hook.rtmp.on_publish.as_ref().map(Url::as_str),
            Some("http://auth.example/publish")
        );
        assert_eq!(hook.rtmp.on_publish_done, None);
    }

    #[test]
    fn a_bad_address_or_url_names_the_key_and_the_value() {
        for (text, vars, key, message) in [
            (
                "[http]\nlisten = \"localhost\"\n",
                &[][..],
                "http.listen",
                "\"localhost\": invalid socket address syntax",
            ),
            (
                "",
                &[("ONDA_HTTP_LISTEN", "not-an-address")][..],
                "http.listen",
                "\"not-an-address\": invalid socket address syntax",
            ),
            (
                "",
                &[("ONDA_RTMP_LISTEN", "0.0.0.0")][..],
                "rtmp.listen",
                "\"0.0.0.0\": invalid socket address syntax",
            ),
            (
                "[rtmp]\non_publish = \"auth/publish\"\n",
                &[][..],
                "rtmp.on_publish",
                "\"auth/publish\": relative URL without a base",
            ),
            (
                "[[relays]]\npath = \"/r\"\nurl = \"http://[::1/x\"\n",
                &[][..],
                "url",
                "invalid IPv6 address",
            ),
        ] {
            let e = load(text, vars).expect_err(text);
            assert!(
                e.contains(key) && e.contains(message),
                "{e}\n  wanted: {key} … {message}"
            );
        }
    }

    /// Addresses, URLs and paths are strings in JSON as they are in TOML, so what the agent and
    /// the control plane exchange and what a file says read the same; "RTMP off" is "".
    #[test]
    fn typed_values_serialize_as_the_strings_they_were_written_as() {
        let mut cfg = load(
            "[http]\nlisten = \"[::1]:8000\"\n[rtmp]\non_publish = \"https://a.example/p?x=1\"\n\
             [media]\ncache_dir = \"/var/cache/onda\"\n\
             [[relays]]\npath = \"/r\"\nurl = \"http://origin:8000/r\"\n",
            &[],
        )
        .expect("loads");
        cfg.live_streams.push(LiveStreamConfig {
            name: "tv".to_string(),
            key: "0123456789".to_string(),
            playback_secret: None,
            origin_url: Some("http://origin:8000/".parse().expect("URL")),
            renditions: Vec::new(),
        });
        let json = serde_json::to_value(&cfg).expect("json");
        assert_eq!(json["http"]["listen"], "[::1]:8000");
        assert_eq!(json["rtmp"]["listen"], "");
        assert_eq!(json["rtmp"]["on_publish"], "https://a.example/p?x=1");
        assert_eq!(json["rtmp"]["on_publish_done"], "");
        assert_eq!(json["media"]["cache_dir"], "/var/cache/onda");
        assert_eq!(json["relays"][0]["url"], "http://origin:8000/r");
        assert_eq!(json["live_streams"][0]["origin_url"], "http://origin:8000/");
        let back: EdgeConfig = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, cfg);
    }

    #[test]
    fn playlists_of_every_kind_are_accepted() {
        let v = edge(
            "timezone = \"America/New_York\"\n\
             [[autodj.playlists]]\nname = \"music\"\nweight = 3\n\
             tracks = [{ file = \"a.mp3\" }]\n\
             [[autodj.playlists]]\nname = \"night\"\nkind = \"scheduled\"\ndays = [5, 6]\n\
             start = \"22:00\"\nend = \"02:00\"\ntracks = [{ file = \"n.mp3\" }]\n\
             [[autodj.playlists]]\nname = \"jingles\"\nkind = \"interval\"\nevery_songs = 3\n\
             tracks = [{ file = \"j.mp3\" }]\n\
             [[autodj.playlists]]\nname = \"ids\"\nkind = \"station_id\"\n\
             tracks = [{ file = \"id.mp3\" }]\n",
        )
        .expect("valid");
        let a = &v.config.autodj[0];
        assert_eq!(a.playlists.len(), 4);
        // Without shorthand tracks there is no "default" playlist.
        assert_eq!(a.all_playlists().len(), 4);
        // The shorthand alone is one rotation playlist named "default", in UTC.
        let v = edge(SONG).expect("valid");
        let all = v.config.autodj[0].all_playlists();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, DEFAULT_PLAYLIST);
        assert_eq!(v.config.autodj[0].timezone.as_str(), "UTC");
    }

    #[test]
    fn playlist_errors_name_the_autodj_the_playlist_and_the_key() {
        for (rest, expected) in [
            ("", "autodj \"Test FM\": no rotation track"),
            (
                "[[autodj.playlists]]\nname = \"jingles\"\nkind = \"interval\"\nevery_songs = 2\n\
                 tracks = [{ file = \"j.mp3\" }]\n",
                "autodj \"Test FM\": no rotation track",
            ),
            (
                "[[autodj.playlists]]\nname = \"music\"\ntracks = []\n",
                "autodj \"Test FM\": no rotation track",
            ),
            (
                "timezone = \"Mars/Olympus_Mons\"\n[[autodj.tracks]]\nfile = \"a.mp3\"\n",
                "autodj \"Test FM\": timezone = \"Mars/Olympus_Mons\" is not a known IANA time zone",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \" \"\ntracks = [{ file = \"a.mp3\" }]\n",
                "autodj \"Test FM\": playlists[0]: name is empty",
            ),
            (
                "[[autodj.playlists]]\nname = \"x\"\ntracks = [{ file = \"a.mp3\" }]\n\
                 [[autodj.playlists]]\nname = \"x\"\ntracks = [{ file = \"b.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"x\": name is used twice",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \"default\"\ntracks = [{ file = \"b.mp3\" }]\n",
                "playlist \"default\": name is taken by the shorthand tracks",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \"ids\"\nkind = \"station_id\"\ntracks = []\n",
                "autodj \"Test FM\": playlist \"ids\": tracks is empty",
            ),
            (
                "[[autodj.playlists]]\nname = \"music\"\nweight = 0\ntracks = [{ file = \"a.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"music\": weight must be at least 1",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \"night\"\nkind = \"scheduled\"\nend = \"02:00\"\n\
                 tracks = [{ file = \"n.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"night\": start is missing",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \"night\"\nkind = \"scheduled\"\ndays = [0, 1]\n\
                 start = \"22:00\"\nend = \"23:00\"\ntracks = [{ file = \"n.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"night\": days contains 0",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \"jingles\"\nkind = \"interval\"\n\
                 tracks = [{ file = \"j.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"jingles\": every_songs must be at least 1",
            ),
            (
                "[[autodj.tracks]]\nfile = \"a.mp3\"\n\
                 [[autodj.playlists]]\nname = \"jingles\"\nkind = \"interval\"\nevery_songs = 0\n\
                 tracks = [{ file = \"j.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"jingles\": every_songs must be at least 1",
            ),
            (
                "[[autodj.playlists]]\nname = \"music\"\nstart = \"10:00\"\n\
                 tracks = [{ file = \"a.mp3\" }]\n",
                "autodj \"Test FM\": playlist \"music\": start is only for kind = \"scheduled\"",
            ),
            (
                "[[autodj.playlists]]\nname = \"music\"\ntracks = [{ file = \"a.mp3\", weight = 0 }]\n",
                "autodj \"Test FM\": playlist \"music\": track a.mp3: weight must be at least 1",
            ),
            (
                "[[autodj.tracks]]\nfile = \" \"\n",
                "autodj \"Test FM\": tracks: a track has an empty file",
            ),
        ] {
            let e = error(rest);
            assert!(
                e.contains(expected),
                "{e}\n  wanted: {expected}\n  for:\n{rest}"
            );
        }
    }

    /// Formats, kinds and times are decoded as what they are, so a bad one stops the file from
    /// loading with the key and the value, before any other check.
    #[test]
    fn a_bad_format_kind_or_time_names_the_key_and_the_value() {
        let flac = "[[mounts]]\npath = \"/radio.mp3\"\n\n[[autodj]]\nname = \"Test FM\"\n\
                    outputs = [{ mount = \"/radio.mp3\", format = \"flac\", bitrate_kbps = 128 }]\n\
                    tracks = [{ file = \"a.mp3\" }]\n";
        let e = toml::from_str::<EdgeConfig>(flac)
            .expect_err("flac")
            .to_string();
        assert!(e.contains("format = \"flac\""), "{e}");
        assert!(
            e.contains("unknown variant `flac`, expected one of `mp3`, `aac`, `opus`"),
            "{e}"
        );
        for (rest, key, message) in [
            (
                "[[autodj.playlists]]\nname = \"night\"\nkind = \"scheduled\"\nstart = \"25:00\"\n\
                 end = \"02:00\"\ntracks = [{ file = \"n.mp3\" }]\n",
                "start = \"25:00\"",
                "\"25:00\" is not a time of day \"HH:MM\" (00:00 to 23:59)",
            ),
            (
                "[[autodj.playlists]]\nname = \"night\"\nkind = \"scheduled\"\nstart = \"9:00\"\n\
                 end = \"10:00\"\ntracks = [{ file = \"n.mp3\" }]\n",
                "start = \"9:00\"",
                "\"9:00\" is not a time of day \"HH:MM\"",
            ),
            (
                "[[autodj.playlists]]\nname = \"night\"\nkind = \"weekly\"\n\
                 tracks = [{ file = \"n.mp3\" }]\n",
                "kind = \"weekly\"",
                "unknown variant `weekly`",
            ),
            (
                "order = \"alphabetical\"\ntracks = [{ file = \"a.mp3\" }]\n",
                "order = \"alphabetical\"",
                "unknown variant `alphabetical`",
            ),
        ] {
            let e = error(rest);
            assert!(
                e.contains(key) && e.contains(message),
                "{e}\n  wanted: {key} … {message}"
            );
        }
    }
}
