//! Turns a desired state into the edge's configuration (each station's mounts under its slug,
//! sharing one listener group of the node's share of the station's limit; relays pulling from
//! the origin edge; on the origin (and a node handing the station over), the station's AutoDJ
//! over the media files already in the node's cache, and its live mount open to the DJ
//! accounts' Argon2 hashes; live streams with their keys, playback secrets and renditions as
//! the desired state gives them) and keeps one ffmpeg tone source running per mount of stations
//! whose desired state asks for one (test clusters without media).
//!
//! One station or live stream the edge refuses must not stop the others: [`admit`] keeps what
//! the edge's own configuration check accepts and names the rest with the edge's reason, which
//! the node reports back (so a tenant's mistake, or a control plane that let it through, costs
//! only that station).

use crate::media::MediaCache;
use onda_edge::config::{
    AutoDjConfig, AutoDjOutput, ConfigError, EdgeConfig, MountConfig, PlaylistConfig, RelayConfig,
    RequestConfig, SourceUser, TrackConfig,
};
use onda_shared::cluster::edge_mount_path;
use onda_shared::cluster::proto::{
    AutoDjSpec, DesiredState, Rejected, StationRole, StationSpec, TrackSpec,
};
use onda_shared::domain::{AudioFormat, PlaylistKind};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The edge configuration for `desired`, on top of the node's own HTTP/admin/limits settings.
/// Fails only when an origin URL in `desired` is not a URL (the control plane writes them as
/// strings; they become typed here, once).
pub fn edge_config(
    base: &EdgeConfig,
    desired: &DesiredState,
    media: &MediaCache,
) -> Result<EdgeConfig, ConfigError> {
    let mut cfg = base.clone();
    cfg.mounts.clear();
    cfg.relays.clear();
    cfg.autodj.clear();
    cfg.listener_groups.clear();
    cfg.live_streams = desired
        .live_streams
        .iter()
        .map(|l| {
            Ok(onda_edge::config::LiveStreamConfig {
                name: l.slug.clone(),
                key: l.stream_key.clone(),
                playback_secret: l.playback_secret.clone(),
                origin_url: l
                    .origin_url
                    .as_deref()
                    .map(|o| origin_url("live_streams", &l.slug, o))
                    .transpose()?,
                renditions: l
                    .renditions
                    .iter()
                    .map(|r| onda_edge::config::RenditionConfig {
                        name: r.name.clone(),
                        height: r.height,
                        video_kbps: r.video_kbps,
                    })
                    .collect(),
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    for s in &desired.stations {
        // The station's limit holds over all its mounts on this node together.
        let group = s.max_listeners.map(|max| {
            cfg.listener_groups.insert(s.slug.clone(), max);
            s.slug.clone()
        });
        let relay_key = Some(relay_key(s));
        let autodj = match (&s.autodj, s.role) {
            (Some(spec), StationRole::Origin | StationRole::Leaving) => {
                autodj_config(s, spec, media)
            }
            _ => None,
        };
        if let Some(a) = &autodj
            && let Some(live) = &a.live_mount
        {
            let source_password = s.mounts.first().map(|m| m.source_password.as_str());
            let mut mc = MountConfig::new(live, source_password.unwrap_or_default());
            mc.name = Some(format!("{} (live)", s.name));
            mc.hls = s.hls;
            mc.listener_group = group.clone();
            mc.source_users = s
                .autodj
                .iter()
                .flat_map(|a| &a.djs)
                .map(|d| SourceUser {
                    user: d.username.clone(),
                    password_hash: d.password_hash.clone(),
                })
                .collect();
            cfg.mounts.push(mc);
        }
        for m in &s.mounts {
            let path = edge_mount_path(&s.slug, &m.path);
            match (s.role, &s.origin_url) {
                (StationRole::Relay, Some(origin)) => cfg.relays.push(RelayConfig {
                    url: origin_url(
                        "relays",
                        &s.slug,
                        &format!("{}{path}", origin.trim_end_matches('/')),
                    )?,
                    path,
                    max_listeners: None,
                    listener_group: group.clone(),
                    relay_key: relay_key.clone(),
                    hls: s.hls,
                }),
                // A relay without an origin URL has nothing to pull: skip it.
                (StationRole::Relay, None) => {}
                _ => {
                    // Mounts the AutoDJ feeds take no source clients: DJs use the live mount.
                    let fed = autodj
                        .as_ref()
                        .is_some_and(|a| a.outputs.iter().any(|o| o.mount == path));
                    let password = if fed { "" } else { m.source_password.as_str() };
                    let mut mc = MountConfig::new(&path, password);
                    mc.listener_group = group.clone();
                    mc.relay_key = relay_key.clone();
                    mc.name = Some(s.name.clone());
                    mc.hls = s.hls;
                    cfg.mounts.push(mc);
                }
            }
        }
        cfg.autodj.extend(autodj);
    }
    Ok(cfg)
}

/// An origin edge's URL from a desired state, as the edge takes it.
fn origin_url(key: &str, slug: &str, url: &str) -> Result<Url, ConfigError> {
    Url::parse(url).map_err(|e| {
        ConfigError::new(
            key,
            format!("{key}: {slug}: origin URL {url:?} is not a URL: {e}"),
        )
    })
}

/// What of a desired state the edge takes: the same desired state without the stations and live
/// streams that the edge's configuration check refuses, and those with the edge's reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admitted {
    pub desired: DesiredState,
    pub rejected: Vec<Rejected>,
}

/// Splits `desired` into what the edge accepts and what it refuses. Usually everything passes at
/// once; otherwise each live stream and station is added in turn and kept only if the edge's
/// check still passes with it (so a station that collides with one before it is the one
/// refused). Fails only when the node's own settings (`base`) do not pass.
pub fn admit(
    base: &EdgeConfig,
    desired: &DesiredState,
    media: &MediaCache,
) -> anyhow::Result<Admitted> {
    let check = |d: &DesiredState| {
        edge_config(base, d, media)
            .and_then(EdgeConfig::validate)
            .map(|_| ())
    };
    if check(desired).is_ok() {
        return Ok(Admitted {
            desired: desired.clone(),
            rejected: Vec::new(),
        });
    }
    let mut ok = DesiredState {
        generation: desired.generation,
        stations: Vec::new(),
        live_streams: Vec::new(),
        turn: desired.turn.clone(),
    };
    check(&ok).map_err(|e| anyhow::Error::new(e).context("the node's own edge settings"))?;
    let mut rejected = Vec::new();
    for l in &desired.live_streams {
        ok.live_streams.push(l.clone());
        if let Err(e) = check(&ok) {
            ok.live_streams.pop();
            rejected.push(Rejected {
                id: l.stream_id.clone(),
                reason: format!("live stream {}: {e:#}", l.slug),
            });
        }
    }
    for s in &desired.stations {
        ok.stations.push(s.clone());
        if let Err(e) = check(&ok) {
            ok.stations.pop();
            rejected.push(Rejected {
                id: s.station_id.clone(),
                reason: format!("station {}: {e:#}", s.slug),
            });
        }
    }
    Ok(Admitted {
        desired: ok,
        rejected,
    })
}

/// The key a relay edge of the station presents to its origin so that its pull is not counted
/// as a listener (nor limited as one). Derived from the station's source password, which every
/// node carrying the station has and listeners do not, so no new secret needs handing out.
fn relay_key(s: &StationSpec) -> String {
    use sha2::Digest as _;
    let password = s.mounts.first().map_or("", |m| m.source_password.as_str());
    let mut h = sha2::Sha256::new();
    h.update(b"onda-relay\0");
    h.update(s.station_id.as_bytes());
    h.update(b"\0");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// Every media hash the AutoDJs the edge took play, with its size: a station the edge refused
/// plays nothing, so its media is not fetched.
pub fn wanted_media(admitted: &Admitted) -> BTreeMap<String, u64> {
    admitted.desired.media()
}

/// The station's AutoDJ over the tracks already cached; `None` while no rotation track is
/// (the station then waits for its media instead of failing the whole configuration).
fn autodj_config(s: &StationSpec, spec: &AutoDjSpec, media: &MediaCache) -> Option<AutoDjConfig> {
    let outputs: Vec<AutoDjOutput> = s
        .mounts
        .iter()
        .map(|m| AutoDjOutput {
            mount: edge_mount_path(&s.slug, &m.path),
            format: m.format,
            bitrate_kbps: m.bitrate_kbps,
        })
        .collect();
    let cached = |t: &TrackSpec| {
        media.has(&t.sha256).then(|| TrackConfig {
            file: media.path(&t.sha256),
            artist: t.artist.clone(),
            title: t.title.clone(),
            weight: t.weight.max(1),
            sha256: Some(t.sha256.clone()),
            duration_ms: t.duration_ms,
        })
    };
    let playlists: Vec<PlaylistConfig> = spec
        .playlists
        .iter()
        .filter_map(|p| {
            let tracks: Vec<TrackConfig> = p.tracks.iter().filter_map(cached).collect();
            if tracks.is_empty() {
                return None;
            }
            Some(PlaylistConfig {
                name: p.name.clone(),
                kind: p.kind,
                order: p.order,
                weight: p.weight.max(1),
                days: p.days.clone(),
                start: p.start,
                end: p.end,
                every_songs: p.every_songs,
                tracks,
            })
        })
        .collect();
    if outputs.is_empty() || !playlists.iter().any(|p| p.kind == PlaylistKind::Rotation) {
        return None;
    }
    Some(AutoDjConfig {
        name: s.slug.clone(),
        outputs,
        live_mount: spec
            .live_mount
            .as_ref()
            .map(|p| edge_mount_path(&s.slug, p)),
        timezone: spec.timezone.clone(),
        crossfade_ms: spec.crossfade_ms,
        order: Default::default(),
        tracks: Vec::new(),
        playlists,
        // A request whose file is still on its way waits; those behind it play meanwhile.
        requests: spec
            .requests
            .iter()
            .filter_map(|r| {
                Some(RequestConfig {
                    id: r.request_id.clone(),
                    track: cached(&r.track)?,
                })
            })
            .collect(),
    })
}

/// Which station each edge path belongs to.
pub fn station_of_paths(desired: &DesiredState) -> BTreeMap<String, String> {
    desired
        .stations
        .iter()
        .flat_map(|s| {
            s.mounts
                .iter()
                .map(move |m| (edge_mount_path(&s.slug, &m.path), s.station_id.clone()))
        })
        .collect()
}

/// One tone per (edge path, format, bitrate), each a supervised ffmpeg process.
#[derive(Debug, Default)]
pub struct Tones {
    running: BTreeMap<String, (String, CancellationToken)>,
}

impl Tones {
    /// Starts tones `desired` asks for and stops the others; unchanged ones keep running.
    pub fn sync(&mut self, desired: &DesiredState, edge_port: u16) {
        let mut wanted = BTreeMap::new();
        for s in desired.stations.iter().filter(|s| s.demo_tone) {
            if s.role == StationRole::Relay {
                continue;
            }
            for (i, m) in s.mounts.iter().enumerate() {
                let path = edge_mount_path(&s.slug, &m.path);
                // A different pitch per station, so a listener can tell them apart.
                let freq = 220 + (fnv(&s.station_id) % 40) * 20 + i as u64 * 5;
                let url = format!(
                    "icecast://source:{}@127.0.0.1:{edge_port}{path}",
                    m.source_password
                );
                let args = tone_args(m.format, m.bitrate_kbps, freq, &url);
                wanted.insert(path, args);
            }
        }
        self.running.retain(|path, (args, stop)| {
            let keep = wanted.get(path).is_some_and(|w| w.join(" ") == *args);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (path, args) in wanted {
            if self.running.contains_key(&path) {
                continue;
            }
            let stop = CancellationToken::new();
            tokio::spawn(supervise(path.clone(), args.clone(), stop.clone()));
            self.running.insert(path, (args.join(" "), stop));
        }
    }

    pub fn stop_all(&mut self) {
        for (_, (_, stop)) in std::mem::take(&mut self.running) {
            stop.cancel();
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn tone_args(format: AudioFormat, kbps: u32, freq: u64, url: &str) -> Vec<String> {
    let (codec, content_type, muxer) = match format {
        AudioFormat::Mp3 => ("libmp3lame", "audio/mpeg", "mp3"),
        AudioFormat::Aac => ("aac", "audio/aac", "adts"),
        AudioFormat::Opus => ("libopus", "audio/ogg", "ogg"),
    };
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency={freq}:sample_rate=44100"),
        "-c:a",
        codec,
        "-b:a",
        &format!("{kbps}k"),
        "-content_type",
        content_type,
        "-f",
        muxer,
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn supervise(path: String, args: Vec<String>, stop: CancellationToken) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let child = tokio::process::Command::new("ffmpeg")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot start ffmpeg for the tone on {path}: {e}");
                failures += 1;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
        };
        tokio::select! {
            status = child.wait() => {
                failures += 1;
                tracing::warn!("the tone source of {path} ended ({status:?}); restarting");
            }
            () = stop.cancelled() => {
                let _ = child.kill().await;
                return;
            }
        }
        // Back off a little when ffmpeg keeps failing (mount refused, codec missing).
        let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use onda_shared::cluster::proto::{
        LiveStreamSpec, MountSpec, PlaylistSpec, RequestSpec, TrackSpec,
    };
    use std::net::SocketAddr;

    fn station(id: &str, slug: &str, mounts: &[&str]) -> StationSpec {
        StationSpec {
            station_id: id.to_string(),
            slug: slug.to_string(),
            name: id.to_string(),
            role: StationRole::Origin,
            origin_url: None,
            mounts: mounts
                .iter()
                .map(|p| MountSpec {
                    path: p.to_string(),
                    format: AudioFormat::Mp3,
                    bitrate_kbps: 64,
                    source_password: "pw".to_string(),
                })
                .collect(),
            max_listeners: Some(10),
            demo_tone: false,
            autodj: None,
            hls: true,
        }
    }

    fn stream(id: &str, slug: &str, key: &str) -> LiveStreamSpec {
        LiveStreamSpec {
            stream_id: id.to_string(),
            slug: slug.to_string(),
            stream_key: key.to_string(),
            playback_secret: None,
            origin_url: None,
            renditions: Vec::new(),
        }
    }

    fn base() -> EdgeConfig {
        let mut b = EdgeConfig::default();
        b.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        b
    }

    #[test]
    fn what_the_edge_refuses_is_left_out_and_named() {
        let media = MediaCache::new(std::env::temp_dir().join("onda-admit-test"));
        let desired = DesiredState {
            generation: 7,
            stations: vec![
                station("s1", "administration-radio", &["/x.mp3"]),
                station("bad", "hls", &["/x.mp3"]),
                station("s2", "after", &["/a.mp3", "/b.mp3"]),
            ],
            live_streams: vec![
                stream("l1", "demo-live", "key-one-0123456789"),
                // The same key twice: the second stream is refused, not the first.
                stream("l2", "other-live", "key-one-0123456789"),
            ],
            turn: Some(onda_shared::cluster::proto::TurnSpec {
                realm: "onda".into(),
                secrets: vec!["s".into()],
            }),
        };
        let a = admit(&base(), &desired, &media).unwrap();
        assert_eq!(a.desired.generation, 7);
        // What the edge refuses does not take the TURN secrets with it.
        assert_eq!(a.desired.turn, desired.turn);
        let ids: Vec<&str> = a
            .desired
            .stations
            .iter()
            .map(|s| s.station_id.as_str())
            .collect();
        assert_eq!(ids, ["s1", "s2"]);
        assert_eq!(a.desired.live_streams.len(), 1);
        assert_eq!(a.desired.live_streams[0].stream_id, "l1");
        let rejected: Vec<&str> = a.rejected.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(rejected, ["l2", "bad"]);
        assert!(
            a.rejected[1].reason.contains("reserved"),
            "{:?}",
            a.rejected
        );
        // What is admitted passes the edge's check as a whole.
        assert!(
            edge_config(&base(), &a.desired, &media)
                .expect("origin URLs")
                .validate()
                .is_ok()
        );
        // Only the AutoDJ media of what the edge took is fetched.
        let with_media = |mut s: StationSpec, sha: &str| {
            s.autodj = Some(AutoDjSpec {
                timezone: onda_shared::domain::TimeZoneName::utc(),
                crossfade_ms: 0,
                live_mount: None,
                djs: Vec::new(),
                playlists: vec![PlaylistSpec {
                    name: "p".into(),
                    kind: PlaylistKind::Rotation,
                    order: onda_shared::domain::PlayOrder::Sequential,
                    weight: 1,
                    days: Vec::new(),
                    start: None,
                    end: None,
                    every_songs: None,
                    tracks: vec![TrackSpec {
                        sha256: sha.into(),
                        size_bytes: 1,
                        artist: "a".into(),
                        title: "t".into(),
                        duration_ms: None,
                        weight: 1,
                    }],
                }],
                requests: Vec::new(),
            });
            s
        };
        let desired = DesiredState {
            stations: vec![
                with_media(station("s1", "one", &["/x.mp3"]), "aa"),
                with_media(station("bad", "hls", &["/x.mp3"]), "bb"),
            ],
            ..DesiredState::default()
        };
        let a = admit(&base(), &desired, &media).unwrap();
        assert_eq!(a.rejected.len(), 1);
        let wanted: Vec<String> = wanted_media(&a).into_keys().collect();
        assert_eq!(wanted, ["aa"]);

        // A clean state passes whole; bad node settings fail the whole state.
        let clean = DesiredState {
            stations: vec![station("s1", "one", &["/x.mp3"])],
            ..DesiredState::default()
        };
        let a = admit(&base(), &clean, &media).unwrap();
        assert_eq!((a.desired, a.rejected.len()), (clean.clone(), 0));
        let mut broken = base();
        broken.limits.burst_bytes = broken.limits.queue_bytes;
        assert!(admit(&broken, &clean, &media).is_err());
    }

    /// Every playlist of the desired state reaches the edge with its kind, order and window,
    /// every mount is an AutoDJ output in its format, and the edge takes the result.
    #[test]
    fn an_autodj_reaches_the_edge_whole() {
        use onda_shared::domain::{PlayOrder, TimeOfDay, TimeZoneName};
        let dir = tempfile::tempdir().unwrap();
        let media = MediaCache::new(dir.path().to_path_buf());
        let sha = "ab".repeat(32);
        std::fs::write(media.path(&sha), b"x").unwrap();
        let track = TrackSpec {
            sha256: sha.clone(),
            size_bytes: 1,
            artist: "a".into(),
            title: "t".into(),
            duration_ms: None,
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
            tracks: vec![track.clone()],
        };
        let playlists = vec![
            playlist("music", PlaylistKind::Rotation, PlayOrder::Shuffle),
            PlaylistSpec {
                days: vec![5],
                start: TimeOfDay::new(22, 0),
                end: TimeOfDay::new(2, 0),
                ..playlist("night", PlaylistKind::Scheduled, PlayOrder::Sequential)
            },
            PlaylistSpec {
                every_songs: Some(3),
                ..playlist("jingles", PlaylistKind::Interval, PlayOrder::Random)
            },
            playlist("ids", PlaylistKind::StationId, PlayOrder::Sequential),
        ];
        let mut s = station("s1", "one", &["/a.mp3", "/a.aac", "/a.opus"]);
        for (m, format) in s.mounts.iter_mut().zip(AudioFormat::ALL) {
            m.format = format;
        }
        s.autodj = Some(AutoDjSpec {
            timezone: TimeZoneName::new("Europe/Berlin"),
            crossfade_ms: 0,
            live_mount: Some("/live".into()),
            djs: Vec::new(),
            playlists: playlists.clone(),
            // The second request's file is not cached yet: it waits, the first goes through.
            requests: vec![
                RequestSpec {
                    request_id: "req_1".into(),
                    track: track.clone(),
                },
                RequestSpec {
                    request_id: "req_2".into(),
                    track: TrackSpec {
                        sha256: "cd".repeat(32),
                        ..track.clone()
                    },
                },
            ],
        });
        let desired = DesiredState {
            stations: vec![s],
            ..DesiredState::default()
        };
        let cfg = edge_config(&base(), &desired, &media).expect("origin URLs");
        let a = &cfg.autodj[0];
        assert_eq!(a.timezone.as_str(), "Europe/Berlin");
        let formats: Vec<AudioFormat> = a.outputs.iter().map(|o| o.format).collect();
        assert_eq!(formats, AudioFormat::ALL);
        let got: Vec<_> = a
            .playlists
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.kind,
                    p.order,
                    p.start,
                    p.end,
                    p.every_songs,
                )
            })
            .collect();
        let sent: Vec<_> = playlists
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.kind,
                    p.order,
                    p.start,
                    p.end,
                    p.every_songs,
                )
            })
            .collect();
        assert_eq!(got, sent);
        let requests: Vec<(&str, Option<&str>)> = a
            .requests
            .iter()
            .map(|r| (r.id.as_str(), r.track.sha256.as_deref()))
            .collect();
        assert_eq!(requests, [("req_1", Some(sha.as_str()))]);
        // The node fetches the requested files too.
        assert!(desired.media().contains_key(&"cd".repeat(32)));
        assert!(cfg.validate().is_ok());
    }
}
