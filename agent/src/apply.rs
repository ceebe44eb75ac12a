//! Turns a desired state into the edge's configuration (each station's mounts under its slug;
//! relays pulling from the origin edge) and, until the AutoDJ exists, keeps one ffmpeg tone
//! source running per mount of stations whose desired state asks for it.

use onda_edge::config::{EdgeConfig, MountConfig, RelayConfig};
use onda_shared::cluster::edge_mount_path;
use onda_shared::cluster::proto::{DesiredState, StationRole};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The edge configuration for `desired`, on top of the node's own HTTP/admin/limits settings.
pub fn edge_config(base: &EdgeConfig, desired: &DesiredState) -> EdgeConfig {
    let mut cfg = base.clone();
    cfg.mounts.clear();
    cfg.relays.clear();
    for s in &desired.stations {
        for m in &s.mounts {
            let path = edge_mount_path(&s.slug, &m.path);
            match (s.role, &s.origin_url) {
                (StationRole::Relay, Some(origin)) => cfg.relays.push(RelayConfig {
                    url: format!("{}{path}", origin.trim_end_matches('/')),
                    path,
                    max_listeners: s.max_listeners,
                }),
                // A relay without an origin URL has nothing to pull: skip it.
                (StationRole::Relay, None) => {}
                _ => {
                    let mut mc = MountConfig::new(&path, &m.source_password);
                    mc.max_listeners = s.max_listeners;
                    mc.name = Some(s.name.clone());
                    cfg.mounts.push(mc);
                }
            }
        }
    }
    cfg
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
                let args = tone_args(&m.format, m.bitrate_kbps, freq, &url);
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

fn tone_args(format: &str, kbps: u32, freq: u64, url: &str) -> Vec<String> {
    let (codec, content_type, muxer) = match format {
        "aac" => ("aac", "audio/aac", "adts"),
        "opus" => ("libopus", "audio/ogg", "ogg"),
        _ => ("libmp3lame", "audio/mpeg", "mp3"),
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
