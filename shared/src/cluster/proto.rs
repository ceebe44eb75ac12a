//! Control-channel messages. Each QUIC connection carries one bidirectional stream of frames:
//! a 4-byte big-endian length, then one JSON message. JSON because the volume is small (a desired
//! state per change, a heartbeat a second) and a human can read a captured frame; the length
//! prefix bounds what a peer can make us buffer.
//!
//! Versioning: the node opens with [`NodeMessage::Hello`] (or [`NodeMessage::Join`]) naming the
//! range of protocol versions it speaks; the control plane answers [`ControlMessage::Welcome`]
//! with the version both use, or [`ControlMessage::Refused`] with code `version` and a sentence
//! naming both ranges. Message types a peer does not know are a protocol error naming the type,
//! never a crash. Version 2 adds usage reports ([`NodeMessage::Usage`], acknowledged by
//! [`ControlMessage::UsageAck`]); a node sends them only in a version-2 session and spools them
//! meanwhile. Version 3 adds [`Heartbeat::rejected`]: the stations and live streams of the desired
//! state the node could not take (it applies everything else); a node fills it only in a
//! version-3 session, and a control plane reads it only there (the field is absent otherwise, so
//! older peers are unaffected).
//!
//! Audio formats, playlist kinds, play orders, times of day and time-zone names travel as the
//! [`crate::domain`] types, each the same string as ever. A value this build does not know (a
//! playlist kind a newer control plane added) makes the whole message a decode error that names
//! it, never a playlist silently left out; adding one is a protocol change.

use crate::domain::{AudioFormat, PlayOrder, PlaylistKind, TimeOfDay, TimeZoneName};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Versions this build speaks.
pub const MIN_VERSION: u32 = 1;
pub const MAX_VERSION: u32 = 3;
/// The first version with usage reports.
pub const USAGE_VERSION: u32 = 2;
/// The longest usage report interval an agent may be configured with.
pub const MAX_USAGE_INTERVAL_MS: u64 = 5 * 60 * 1000;
/// The longest period a usage report's amounts are believed for (three intervals: a report
/// may run on while checkpoints fail); the control plane counts a longer one over its last
/// stretch of this length only.
pub const MAX_USAGE_PERIOD_MS: u64 = 3 * MAX_USAGE_INTERVAL_MS;
/// The first version in which heartbeats name what the node could not apply.
pub const REJECTED_VERSION: u32 = 3;
/// ALPN of the control channel; a peer that is not Onda fails the TLS handshake.
pub const ALPN: &[u8] = b"onda-control";
/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// What a node says about itself, at join and on every connection (so a changed config updates
/// the node record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAdvert {
    pub name: String,
    pub region: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Public base URL of the node's edge (`http://edge1.example.com:8000`).
    pub edge_url: String,
    /// `rtmp://host:port` where publishers reach the node's RTMP ingest; empty without one.
    #[serde(default)]
    pub rtmp_url: String,
    /// Where WebRTC peers reach the node's TURN relay (`turn:host:3478?transport=udp`, the
    /// same over TCP, and `turns:host:5349?transport=tcp` with TLS); empty without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_urls: Vec<String>,
    pub capacity_listeners: u64,
    pub capacity_mbps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// First message of a joined node (mutual TLS).
    Hello {
        min_version: u32,
        max_version: u32,
        software: String,
        node: NodeAdvert,
        /// The generation the node is serving (from before a reconnect), 0 if none.
        applied_generation: u64,
    },
    /// First and only message of a joining node (no client certificate yet).
    Join {
        min_version: u32,
        max_version: u32,
        token_id: String,
        token_secret: String,
        /// PKCS#10 request for the node certificate; the node keeps its private key.
        csr_pem: String,
        node: NodeAdvert,
    },
    /// The node applied this generation of its desired state.
    Ack {
        generation: u64,
        error: Option<String>,
    },
    Heartbeat(Heartbeat),
    /// Something changed on the node that the control plane should know now, not at the next
    /// heartbeat (a source connected or left).
    Event(NodeEvent),
    /// What the node's listeners used in one interval; resent until acknowledged.
    Usage(UsageReport),
}

/// Listener usage of one node over one interval. `seq` numbers a node's reports (1, 2, …, never
/// reused, also across restarts); the control plane stores each (node, seq) once and answers
/// [`ControlMessage::UsageAck`] once it is durably stored, duplicate or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub seq: u64,
    /// Unix milliseconds on the node's clock: the interval is [start, end).
    pub period_start_ms: u64,
    pub period_end_ms: u64,
    pub mounts: Vec<MountUsage>,
    /// Bytes the node's TURN relay relayed for each tenant's end users in the interval; left
    /// out when there are none, so a node without TURN writes the report it always wrote. No
    /// protocol version marks it: a control plane that predates it ignores it (and the bytes),
    /// so control planes are upgraded first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn: Vec<TurnUsage>,
}

/// One tenant's TURN relay traffic in a report: what coturn logged as its allocations' usage
/// (the client side of each allocation, `rb + sb` of its `usage:` lines: bytes the relay
/// received from and sent to the tenant's end users, data and TURN messages alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnUsage {
    pub tenant_id: String,
    pub relayed_bytes: u64,
}

/// One station mount's usage in a report. Relay pulls between edges are not listeners and are
/// not in here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountUsage {
    pub station_id: String,
    /// The station's mount path (`/radio.mp3`).
    pub mount: String,
    /// Listener time in the interval, summed over listeners.
    pub listener_ms: u64,
    /// Most listeners at once in the interval.
    pub peak_listeners: u64,
    /// Listener connections admitted in the interval.
    pub sessions: u64,
    /// Audio bytes sent to listeners in the interval.
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub host: HostMetrics,
    /// Observed state: every mount the edge serves.
    pub mounts: Vec<MountReport>,
    /// Stations and live streams of the applied desired state that the node's edge refused
    /// (everything else is applied). Version 3 and later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
}

/// A station or live stream of a desired state that a node could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rejected {
    /// The station's or the live stream's id.
    pub id: String,
    /// The edge's sentence (the configuration rule it breaks).
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    /// Busy share of all CPUs since the previous heartbeat, 0–100.
    pub cpu_percent: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Totals over every interface but loopback, since boot.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountReport {
    pub station_id: String,
    /// The edge path (`/slug/radio.mp3`).
    pub path: String,
    /// Listeners on the mount; relay edges pulling it are not listeners and not counted.
    pub listeners: u64,
    /// A source (or the relay's upstream) is on the air.
    pub on_air: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    SourceConnected {
        station_id: String,
        path: String,
    },
    SourceLeft {
        station_id: String,
        path: String,
    },
    /// The station's AutoDJ started a track, or a live DJ's show began or changed its title.
    TrackChanged(TrackPlaying),
}

/// What a station plays since `started_at_ms`, as its origin node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackPlaying {
    pub station_id: String,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    /// The ICY title (`Artist - Title`, or the DJ's).
    pub title: String,
    pub artist: String,
    pub track_title: String,
    /// The media file, for AutoDJ tracks.
    pub media_sha256: Option<String>,
    pub duration_ms: Option<u64>,
    pub live: bool,
    /// The live DJ's account name.
    #[serde(default)]
    pub streamer: String,
    /// The ICY title of the track prepared to play next.
    pub next_title: Option<String>,
    /// The listener request this track plays for (an id from [`AutoDjSpec::requests`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request the track prepared to play next is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_request_id: Option<String>,
}

/// The first frame of a media stream: a node opens a further bidirectional stream on its session
/// to fetch one media file by hash. The answer is a [`MediaReply`] frame, then (when found)
/// exactly `size_bytes` raw bytes, which the node checks against the hash before using them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRequest {
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaReply {
    Found { size_bytes: u64 },
    NotFound { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    Welcome {
        version: u32,
        node_id: String,
        control_plane: String,
        /// How often the node should send heartbeats.
        heartbeat_ms: u64,
    },
    /// Answer to a join: the node's identity and certificate, then the connection closes and the
    /// node reconnects with mutual TLS.
    Joined {
        node_id: String,
        cert_pem: String,
        ca_pem: String,
    },
    Desired(DesiredState),
    /// The usage report with this sequence number is stored: the node may forget it.
    UsageAck {
        seq: u64,
    },
    /// The control plane will not talk to this node; `code` is machine-readable, `message` says why.
    Refused {
        code: RefusalCode,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    Version,
    TokenUnknown,
    TokenUsed,
    TokenExpired,
    BadRequest,
    Revoked,
    UnknownNode,
    Protocol,
    Internal,
}

impl RefusalCode {
    /// Refusals that retrying cannot fix: the node should stop and say so.
    pub fn is_permanent(self) -> bool {
        !matches!(self, RefusalCode::Internal)
    }
}

/// Everything a node should carry. Sent whole (never as a diff) so a node that missed messages
/// converges from the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub generation: u64,
    pub stations: Vec<StationSpec>,
    /// Live video streams this node takes RTMP publishes for and serves as HLS.
    #[serde(default)]
    pub live_streams: Vec<LiveStreamSpec>,
    /// The TURN relay's shared secrets, for nodes that advertise TURN URLs; absent for the
    /// others and from control planes that predate TURN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnSpec>,
}

/// What a node's TURN relay (coturn, `use-auth-secret`) checks credentials against: the
/// TURN REST API scheme, where a client's password is base64(HMAC-SHA1(secret, username)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnSpec {
    /// The realm of the cluster's TURN relays.
    pub realm: String,
    /// Every secret a credential still valid may have been made with, newest first: a rotated
    /// secret stays until the last credential made with it has expired.
    pub secrets: Vec<String>,
}

impl DesiredState {
    /// Every media file the state's AutoDJs play (on stations the node originates), with its
    /// size: what the node fetches, and all the control plane serves it.
    pub fn media(&self) -> BTreeMap<String, u64> {
        self.stations
            .iter()
            .filter(|s| matches!(s.role, StationRole::Origin | StationRole::Leaving))
            .filter_map(|s| s.autodj.as_ref())
            .flat_map(|a| {
                let requested = a.requests.iter().map(|r| &r.track);
                a.playlists.iter().flat_map(|p| &p.tracks).chain(requested)
            })
            .map(|t| (t.sha256.clone(), t.size_bytes))
            .collect()
    }

    /// Whether the state names this station or live stream.
    pub fn carries(&self, id: &str) -> bool {
        self.stations.iter().any(|s| s.station_id == id)
            || self.live_streams.iter().any(|l| l.stream_id == id)
    }
}

/// A live stream the node ingests: publishers present `stream_key`; viewers play
/// `/hls/{slug}/index.m3u8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStreamSpec {
    pub stream_id: String,
    pub slug: String,
    pub stream_key: String,
    /// Token streams: the secret playback tokens are signed with; None for public streams.
    #[serde(default)]
    pub playback_secret: Option<String>,
    /// Relays: the origin edge's base URL the node pulls the stream's HLS from.
    #[serde(default)]
    pub origin_url: Option<String>,
    /// The origin's ABR ladder (from the tenant's plan); relays carry the source only.
    #[serde(default)]
    pub renditions: Vec<RenditionSpec>,
}

/// One rung of a live stream's ABR ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionSpec {
    /// Its name in URLs: `{height}p`.
    pub name: String,
    pub height: u32,
    pub video_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationSpec {
    pub station_id: String,
    pub slug: String,
    pub name: String,
    pub role: StationRole,
    /// For relays: the origin edge's base URL to pull each mount from.
    #[serde(default)]
    pub origin_url: Option<String>,
    pub mounts: Vec<MountSpec>,
    /// Listeners this node may admit for the station (its share of the plan's limit).
    pub max_listeners: Option<u64>,
    /// The origin feeds the station a generated tone (test clusters without media).
    #[serde(default)]
    pub demo_tone: bool,
    /// The origin plays these playlists when the station has the AutoDJ on.
    #[serde(default)]
    pub autodj: Option<AutoDjSpec>,
    /// The station's plan includes HLS: its MP3 and AAC mounts are also served as HLS. Absent
    /// (a control plane from before audio HLS, or no HLS): no. Left out when false, so a station
    /// without it is written as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hls: bool,
}

/// A station's AutoDJ as the origin node runs it (the edge's `[[autodj]]` configuration; see
/// `onda_edge::config::AutoDjConfig` for what each field means).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoDjSpec {
    /// IANA time zone of the schedules.
    pub timezone: TimeZoneName,
    /// Crossfade between tracks (0: off).
    #[serde(default)]
    pub crossfade_ms: u64,
    /// The station's mount live DJs connect to (`/live`), not one of `mounts`.
    pub live_mount: Option<String>,
    /// Accounts that may go live on it (besides user `source` with the station's password).
    #[serde(default)]
    pub djs: Vec<DjSpec>,
    pub playlists: Vec<PlaylistSpec>,
    /// Listeners' pending requests, oldest first: played after the current track, in this
    /// order, before the playlists go on. Absent from control planes without requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestSpec>,
}

/// A listener's request: its id (reported back in [`TrackPlaying::request_id`]) and the track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub request_id: String,
    pub track: TrackSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DjSpec {
    pub username: String,
    /// Argon2 PHC string; the node never sees the password.
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaylistSpec {
    pub name: String,
    pub kind: PlaylistKind,
    pub order: PlayOrder,
    pub weight: u32,
    #[serde(default)]
    pub days: Vec<u8>,
    #[serde(default)]
    pub start: Option<TimeOfDay>,
    #[serde(default)]
    pub end: Option<TimeOfDay>,
    #[serde(default)]
    pub every_songs: Option<u32>,
    pub tracks: Vec<TrackSpec>,
}

/// A media file to play, fetched from the control plane by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSpec {
    pub sha256: String,
    pub size_bytes: u64,
    pub artist: String,
    pub title: String,
    pub duration_ms: Option<u64>,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StationRole {
    Origin,
    Relay,
    /// Still serving while the station's new origin comes up (drain without a gap).
    Leaving,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// The station's mount path (`/radio.mp3`); the edge serves it under the station's slug.
    pub path: String,
    pub format: AudioFormat,
    pub bitrate_kbps: u32,
    pub source_password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("control channel I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent a frame of {0} bytes, more than the {MAX_FRAME_BYTES} allowed")]
    TooLarge(usize),
    #[error("peer sent a message this build does not understand: {0}")]
    Decode(#[from] serde_json::Error),
}

pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one message; `Ok(None)` when the peer finished the stream cleanly between frames.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Reads messages from `r` on a task of its own until the stream ends or fails (the end or the
/// error is the last item), each whole, into a channel. A `read_frame` inside a `select!` loses
/// the part of a frame already read whenever another branch wins, and the next read starts
/// mid-frame; the channel's `recv` can be cancelled without losing a byte.
pub fn read_frames<R, T>(mut r: R) -> tokio::sync::mpsc::Receiver<Result<Option<T>, FrameError>>
where
    R: AsyncRead + Unpin + Send + 'static,
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let frame = read_frame::<_, T>(&mut r).await;
            let last = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

/// The version both ends use, or the sentence explaining why there is none.
pub fn negotiate(peer_min: u32, peer_max: u32) -> Result<u32, String> {
    let v = peer_max.min(MAX_VERSION);
    if v < peer_min.max(MIN_VERSION) {
        return Err(format!(
            "protocol version mismatch: the node speaks versions {peer_min}..={peer_max}, \
             this control plane {MIN_VERSION}..={MAX_VERSION}; upgrade the older side"
        ));
    }
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bound() {
        let msg = NodeMessage::Ack {
            generation: 7,
            error: None,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).await.unwrap();
        let got: NodeMessage = read_frame(&mut buf.as_slice()).await.unwrap().unwrap();
        assert_eq!(got, msg);
        // Clean end between frames.
        let none: Option<NodeMessage> = read_frame(&mut [].as_slice()).await.unwrap();
        assert!(none.is_none());
        // A declared size beyond the bound is refused before anything is allocated.
        let huge = (u32::MAX).to_be_bytes();
        let err = read_frame::<_, NodeMessage>(&mut huge.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));
        // An unknown message type names itself.
        let body = br#"{"type":"usage_summary","seq":1}"#;
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(body);
        let err = read_frame::<_, NodeMessage>(&mut framed.as_slice())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("usage_summary"), "{err}");
        // Truncated body.
        let mut cut = 10u32.to_be_bytes().to_vec();
        cut.extend_from_slice(b"{\"ty");
        assert!(
            read_frame::<_, NodeMessage>(&mut cut.as_slice())
                .await
                .is_err()
        );
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(1, 1), Ok(1));
        assert_eq!(negotiate(1, 2), Ok(2));
        assert_eq!(negotiate(1, 5), Ok(3));
        let err = negotiate(4, 5).unwrap_err();
        assert!(err.contains("4..=5") && err.contains("1..=3"), "{err}");
    }

    /// A desired state using every audio format, playlist kind and play order, a scheduled
    /// window and a time zone.
    fn every_kind_of_desired_state() -> DesiredState {
        let track = |n: &str| TrackSpec {
            sha256: format!("{n}{n}"),
            size_bytes: 1234,
            artist: "Artist".into(),
            title: format!("Title {n}"),
            duration_ms: Some(180_000),
            weight: 1,
        };
        let playlist = |name: &str, kind, order| PlaylistSpec {
            name: name.into(),
            kind,
            order,
            weight: 1,
            days: Vec::new(),
            start: None,
            end: None,
            every_songs: None,
            tracks: vec![track(name)],
        };
        DesiredState {
            generation: 42,
            stations: vec![StationSpec {
                station_id: "stn_1".into(),
                slug: "test-fm".into(),
                name: "Test FM".into(),
                role: StationRole::Origin,
                origin_url: None,
                mounts: AudioFormat::ALL
                    .into_iter()
                    .map(|format| MountSpec {
                        path: format!("/radio.{format}"),
                        format,
                        bitrate_kbps: 128,
                        source_password: "pw".into(),
                    })
                    .collect(),
                max_listeners: Some(100),
                demo_tone: false,
                autodj: Some(AutoDjSpec {
                    timezone: TimeZoneName::new("Europe/Berlin"),
                    crossfade_ms: 2000,
                    live_mount: Some("/live".into()),
                    djs: vec![DjSpec {
                        username: "dj".into(),
                        password_hash: "$argon2id$x".into(),
                    }],
                    playlists: vec![
                        PlaylistSpec {
                            weight: 3,
                            ..playlist("music", PlaylistKind::Rotation, PlayOrder::Shuffle)
                        },
                        PlaylistSpec {
                            days: vec![5, 6],
                            start: TimeOfDay::new(22, 0),
                            end: TimeOfDay::new(2, 30),
                            ..playlist("night", PlaylistKind::Scheduled, PlayOrder::Sequential)
                        },
                        PlaylistSpec {
                            every_songs: Some(3),
                            ..playlist("jingles", PlaylistKind::Interval, PlayOrder::Random)
                        },
                        playlist("ids", PlaylistKind::StationId, PlayOrder::Sequential),
                    ],
                    requests: Vec::new(),
                }),
                hls: true,
            }],
            live_streams: Vec::new(),
            turn: None,
        }
    }

    /// The frame body of [`every_kind_of_desired_state`] as the protocol has always written it
    /// (formats, kinds, orders, times and time zones as strings). Nodes and control planes of
    /// different builds talk to each other during an upgrade, so how these fields are typed in
    /// Rust must not change a byte.
    const DESIRED_JSON: &str = concat!(
        r#"{"type":"desired","generation":42,"stations":[{"station_id":"stn_1","#,
        r#""slug":"test-fm","name":"Test FM","role":"origin","origin_url":null,"#,
        r#""mounts":[{"path":"/radio.mp3","format":"mp3","bitrate_kbps":128,"#,
        r#""source_password":"pw"},{"path":"/radio.aac","format":"aac","bitrate_kbps":128,"#,
        r#""source_password":"pw"},{"path":"/radio.opus","format":"opus","bitrate_kbps":128,"#,
        r#""source_password":"pw"}],"max_listeners":100,"demo_tone":false,"#,
        r#""autodj":{"timezone":"Europe/Berlin","crossfade_ms":2000,"live_mount":"/live","#,
        r#""djs":[{"username":"dj","password_hash":"$argon2id$x"}],"#,
        r#""playlists":[{"name":"music","kind":"rotation","order":"shuffle","weight":3,"#,
        r#""days":[],"start":null,"end":null,"every_songs":null,"#,
        r#""tracks":[{"sha256":"musicmusic","size_bytes":1234,"artist":"Artist","#,
        r#""title":"Title music","duration_ms":180000,"weight":1}]},{"name":"night","#,
        r#""kind":"scheduled","order":"sequential","weight":1,"days":[5,6],"start":"22:00","#,
        r#""end":"02:30","every_songs":null,"tracks":[{"sha256":"nightnight","size_bytes":1234,"#,
        r#""artist":"Artist","title":"Title night","duration_ms":180000,"weight":1}]},"#,
        r#"{"name":"jingles","kind":"interval","order":"random","weight":1,"days":[],"#,
        r#""start":null,"end":null,"every_songs":3,"tracks":[{"sha256":"jinglesjingles","#,
        r#""size_bytes":1234,"artist":"Artist","title":"Title jingles","duration_ms":180000,"#,
        r#""weight":1}]},{"name":"ids","kind":"station_id","order":"sequential","weight":1,"#,
        r#""days":[],"start":null,"end":null,"every_songs":null,"tracks":[{"sha256":"idsids","#,
        r#""size_bytes":1234,"artist":"Artist","title":"Title ids","duration_ms":180000,"#,
        r#""weight":1}]}]}}],"live_streams":[]}"#,
    );

    #[test]
    fn the_wire_json_of_a_desired_state_is_unchanged() {
        let mut state = every_kind_of_desired_state();
        // Newer than the pinned frame: audio HLS, written only when on.
        state.stations[0].hls = false;
        let msg = ControlMessage::Desired(state.clone());
        assert_eq!(serde_json::to_string(&msg).unwrap(), DESIRED_JSON);
        let decoded: ControlMessage = serde_json::from_str(DESIRED_JSON).unwrap();
        assert_eq!(decoded, msg);
        state.stations[0].hls = true;
        let with_hls =
            DESIRED_JSON.replace(r#"}}],"live_streams""#, r#"},"hls":true}],"live_streams""#);
        let msg = ControlMessage::Desired(state);
        assert_eq!(serde_json::to_string(&msg).unwrap(), with_hls);
        assert_eq!(
            serde_json::from_str::<ControlMessage>(&with_hls).unwrap(),
            msg
        );
    }

    #[tokio::test]
    async fn an_unknown_name_in_a_desired_state_is_a_decode_error_naming_it() {
        for (from, to, named) in [
            (r#""kind":"interval""#, r#""kind":"weekly""#, "weekly"),
            (
                r#""order":"random""#,
                r#""order":"alphabetical""#,
                "alphabetical",
            ),
            (r#""format":"aac""#, r#""format":"flac""#, "flac"),
            (r#""start":"22:00""#, r#""start":"25:00""#, "25:00"),
        ] {
            assert!(DESIRED_JSON.contains(from), "{from}");
            let body = DESIRED_JSON.replace(from, to);
            let mut framed = (body.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(body.as_bytes());
            let err = read_frame::<_, ControlMessage>(&mut framed.as_slice())
                .await
                .unwrap_err();
            assert!(matches!(err, FrameError::Decode(_)), "{err}");
            assert!(err.to_string().contains(named), "{err}");
        }
    }

    /// TURN secrets travel only to nodes that run TURN: a state without them is the bytes it
    /// always was (above), and one with them decodes on this build.
    #[test]
    fn a_desired_state_carries_turn_secrets_when_given() {
        let mut state = every_kind_of_desired_state();
        state.turn = Some(TurnSpec {
            realm: "onda".into(),
            secrets: vec!["new".into(), "old".into()],
        });
        let json = serde_json::to_string(&ControlMessage::Desired(state.clone())).unwrap();
        assert!(
            json.ends_with(r#""turn":{"realm":"onda","secrets":["new","old"]}}"#),
            "{json}"
        );
        let decoded: ControlMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, ControlMessage::Desired(state));
    }

    /// Requests travel only when there are some (a state without them is the bytes above), and
    /// their media are what the node fetches too; a track report names its request only when
    /// it plays one.
    #[test]
    fn requests_travel_in_the_autodj_and_back_in_track_reports() {
        let mut state = every_kind_of_desired_state();
        let autodj = state.stations[0].autodj.as_mut().unwrap();
        let mut track = autodj.playlists[0].tracks[0].clone();
        track.sha256 = "requested".into();
        autodj.requests = vec![RequestSpec {
            request_id: "req_1".into(),
            track,
        }];
        assert!(state.media().contains_key("requested"));
        let json = serde_json::to_string(&ControlMessage::Desired(state.clone())).unwrap();
        assert!(
            json.contains(r#""requests":[{"request_id":"req_1""#),
            "{json}"
        );
        let decoded: ControlMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, ControlMessage::Desired(state));
        let report = r#"{"station_id":"s","started_at_ms":1,"title":"A - B","artist":"A",
            "track_title":"B","media_sha256":null,"duration_ms":null,"live":false,
            "next_title":null}"#;
        let t: TrackPlaying = serde_json::from_str(report).unwrap();
        assert_eq!((t.request_id, t.next_request_id), (None, None));
        let again = serde_json::to_string(&TrackPlaying {
            request_id: Some("req_1".into()),
            ..serde_json::from_str(report).unwrap()
        })
        .unwrap();
        assert!(again.contains(r#""request_id":"req_1""#) && !again.contains("next_request_id"));
    }

    /// A usage report as version 2 has always written it: a node without TURN traffic still
    /// writes exactly this, and a control plane reads it as a report without TURN usage.
    const USAGE_JSON: &str = concat!(
        r#"{"type":"usage","seq":7,"period_start_ms":1000,"period_end_ms":11000,"#,
        r#""mounts":[{"station_id":"stn_1","mount":"/radio.mp3","listener_ms":9000,"#,
        r#""peak_listeners":2,"sessions":3,"bytes_sent":144000}]}"#,
    );

    #[test]
    fn the_wire_json_of_a_usage_report_is_unchanged_and_carries_turn_bytes_when_some() {
        let mut report = UsageReport {
            seq: 7,
            period_start_ms: 1000,
            period_end_ms: 11000,
            mounts: vec![MountUsage {
                station_id: "stn_1".into(),
                mount: "/radio.mp3".into(),
                listener_ms: 9000,
                peak_listeners: 2,
                sessions: 3,
                bytes_sent: 144_000,
            }],
            turn: Vec::new(),
        };
        let msg = NodeMessage::Usage(report.clone());
        assert_eq!(serde_json::to_string(&msg).unwrap(), USAGE_JSON);
        assert_eq!(
            serde_json::from_str::<NodeMessage>(USAGE_JSON).unwrap(),
            msg
        );
        report.turn = vec![TurnUsage {
            tenant_id: "ten_1".into(),
            relayed_bytes: 46_700,
        }];
        let with_turn = format!(
            r#"{},"turn":[{{"tenant_id":"ten_1","relayed_bytes":46700}}]}}"#,
            USAGE_JSON.strip_suffix('}').unwrap()
        );
        let msg = NodeMessage::Usage(report);
        assert_eq!(serde_json::to_string(&msg).unwrap(), with_turn);
        assert_eq!(
            serde_json::from_str::<NodeMessage>(&with_turn).unwrap(),
            msg
        );
    }

    #[test]
    fn heartbeats_of_version_2_still_decode() {
        // A version-2 node's heartbeat has no `rejected`; a version-2 control plane ignores it.
        let v2 = r#"{"type":"heartbeat","host":{"cpu_percent":0.0,"memory_total_bytes":1,
            "memory_available_bytes":1,"net_rx_bytes":0,"net_tx_bytes":0},"mounts":[]}"#;
        let NodeMessage::Heartbeat(hb) = serde_json::from_str(v2).unwrap() else {
            panic!("a heartbeat");
        };
        assert!(hb.rejected.is_empty());
        let json = serde_json::to_string(&NodeMessage::Heartbeat(hb)).unwrap();
        assert!(!json.contains("rejected"), "{json}");
    }
}
