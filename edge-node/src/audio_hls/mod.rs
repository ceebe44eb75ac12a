//! The mounts' audio as HLS, for players that want HLS (iOS and Safari, hls.js) and for CDN
//! caching: every MP3 or AAC mount is also served at `/hls-audio{mount}/index.m3u8`, the
//! `hls-audio` segment being reserved (`onda_shared::paths`) so the path never collides with a
//! mount's. Each mount's stream is cut once, on this node, by a task that hears the mount as a
//! listener would (its fallback when its source is gone, back home when the source returns)
//! and feeds a [`packer::Packer`]; every HLS listener reads the same segments (shared `Bytes`,
//! a bounded window per mount). A relay's copy of a mount is segmented by the relay itself, so
//! relays and failover work as for the Icecast stream.
//!
//! HLS listeners are sessions ([`sessions`]) that take places in the mount's listener table, so
//! the limits, counts and usage of Icecast listeners apply to them unchanged.

pub(crate) mod packer;
pub(crate) mod serve;
mod sessions;

use crate::config::{AudioHlsConfig, Current};
use crate::metrics::EdgeMetrics;
use crate::mount::{Mount, Read};
use crate::registry::Registry;
use crate::sync::lock;
use packer::Packer;
use sessions::Sessions;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often silent sessions are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// The audio HLS of every mount of the node.
pub(crate) struct AudioHls {
    registry: Arc<Registry>,
    config: Arc<Current>,
    metrics: Arc<EdgeMetrics>,
    shutdown: CancellationToken,
    mounts: Mutex<HashMap<String, Arc<MountHls>>>,
}

/// One mount's HLS: its packer, its listeners, and the task feeding the packer.
pub(crate) struct MountHls {
    mount: Arc<Mount>,
    settings: AudioHlsConfig,
    packer: Mutex<Packer>,
    /// Bumped at every segment and change of feed, for playlist requests waiting for the first
    /// segment.
    progress: tokio::sync::watch::Sender<u64>,
    sessions: Sessions,
    stop: CancellationToken,
}

impl AudioHls {
    pub(crate) fn new(
        registry: Arc<Registry>,
        config: Arc<Current>,
        metrics: Arc<EdgeMetrics>,
        shutdown: CancellationToken,
    ) -> AudioHls {
        AudioHls {
            registry,
            config,
            metrics,
            shutdown,
            mounts: Mutex::new(HashMap::new()),
        }
    }

    /// Follows the registry (applied first) and `audio_hls`: each mount gets its HLS; a mount
    /// removed or replaced, or new settings, end the old one with its sessions.
    pub(crate) fn sync(&self) {
        let config = self.config.get();
        let settings = config.audio_hls.clone();
        let wanted: Vec<Arc<Mount>> = if settings.enabled {
            self.registry
                .all()
                .into_iter()
                .filter(|m| m.config().hls)
                .collect()
        } else {
            Vec::new()
        };
        let mut mounts = lock(&self.mounts);
        mounts.retain(|_, h| {
            let keep = h.settings == settings && wanted.iter().any(|m| Arc::ptr_eq(m, &h.mount));
            if !keep {
                h.close(&self.metrics);
            }
            keep
        });
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for m in wanted {
            if mounts.contains_key(&m.path) {
                continue;
            }
            let h = Arc::new(MountHls::new(m, &settings, self.shutdown.child_token()));
            rt.spawn(follow(
                h.clone(),
                self.registry.clone(),
                config.limits.burst_bytes,
                self.metrics.clone(),
            ));
            mounts.insert(h.mount.path.clone(), h);
        }
    }

    pub(crate) fn get(&self, path: &str) -> Option<Arc<MountHls>> {
        lock(&self.mounts).get(path).cloned()
    }

    /// Whether the node has a mount at `path` (with or without HLS).
    pub(crate) fn has_mount(&self, path: &str) -> bool {
        self.registry.get(path).is_some()
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.get().audio_hls.enabled
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.registry.next_id()
    }

    pub(crate) fn metrics(&self) -> &EdgeMetrics {
        &self.metrics
    }
}

impl MountHls {
    fn new(mount: Arc<Mount>, settings: &AudioHlsConfig, stop: CancellationToken) -> MountHls {
        let target = Duration::from_millis(settings.segment_ms);
        // Numbered from the clock, so a restarted edge never reuses a number a cache may hold.
        let first_seq = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        MountHls {
            sessions: Sessions::new(
                mount.clone(),
                Duration::from_millis(settings.session_timeout_ms),
                target,
            ),
            packer: Mutex::new(Packer::new(
                target,
                usize::try_from(settings.window).unwrap_or(6),
                first_seq,
            )),
            mount,
            settings: settings.clone(),
            progress: tokio::sync::watch::Sender::new(0),
            stop,
        }
    }

    fn close(&self, metrics: &EdgeMetrics) {
        self.stop.cancel();
        let n = self.sessions.len();
        self.sessions.close(Instant::now());
        metrics
            .audio_hls
            .sessions
            .sub(i64::try_from(n).unwrap_or(0));
    }

    fn progressed(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn sweep(&self, metrics: &EdgeMetrics) {
        let ended = self.sessions.sweep(Instant::now());
        if ended > 0 {
            metrics
                .audio_hls
                .sessions
                .sub(i64::try_from(ended).unwrap_or(0));
        }
    }

    /// Packs what a session published.
    fn pack(&self, chunks: &[bytes::Bytes], title: &str, metrics: &EdgeMetrics) {
        let now = SystemTime::now();
        let mut packer = lock(&self.packer);
        let made: usize = chunks.iter().map(|c| packer.push(c, title, now)).sum();
        drop(packer);
        if made > 0 {
            metrics.audio_hls.segments_made.inc_by(made as u64);
            self.progressed();
        }
    }

    fn begin(&self, content_type: &str) {
        lock(&self.packer).begin(content_type);
        self.progressed();
    }
}

/// Feeds `hls`'s packer with what a listener of its mount would hear, until stopped; sweeps
/// its silent sessions meanwhile.
async fn follow(
    hls: Arc<MountHls>,
    registry: Arc<Registry>,
    burst: u64,
    metrics: Arc<EdgeMetrics>,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first source is packed from its burst back, so a playlist has a segment at once;
    // later ones from their live edge, as a listener that changes over hears them.
    let mut back = burst;
    loop {
        let mut home = hls.mount.generation.subscribe();
        let Some((current, session)) = registry.resolve(&hls.mount.path) else {
            {
                let mut p = lock(&hls.packer);
                if *p.feed() != packer::Feed::Silent {
                    p.end();
                    drop(p);
                    hls.progressed();
                }
            }
            tokio::select! {
                () = hls.stop.cancelled() => return,
                _ = home.changed() => {}
                _ = sweep.tick() => hls.sweep(&metrics),
            }
            continue;
        };
        hls.begin(&session.info.content_type);
        let mut pos = session.burst_start(back);
        back = 0;
        let on_fallback = !Arc::ptr_eq(&current, &hls.mount);
        loop {
            tokio::select! {
                biased;
                () = hls.stop.cancelled() => return,
                _ = sweep.tick() => hls.sweep(&metrics),
                // The home mount's source returned: back to it.
                _ = home.changed(), if on_fallback => break,
                () = session.wait(pos) => match session.read(&mut pos) {
                    Read::Data(chunks) => {
                        let title = session.metadata().title.clone();
                        hls.pack(&chunks, &title, &metrics);
                    }
                    Read::Pending => {}
                    Read::Lagged => {
                        // Cannot happen to a task this quick; if it does, a clean restart.
                        pos = session.burst_start(0);
                        hls.begin(&session.info.content_type);
                    }
                    Read::Ended => break,
                },
            }
        }
    }
}
