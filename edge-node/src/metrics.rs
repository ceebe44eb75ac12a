//! Prometheus metrics of an edge node (`onda_edge_…`), in a registry of its own. Per-mount
//! series are handles held by each mount, so the hot path is one atomic add.

use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub(crate) struct EdgeMetrics {
    registry: Registry,
    listeners: IntGaugeVec,
    peak: IntGaugeVec,
    source: IntGaugeVec,
    source_since: IntGaugeVec,
    mount_bytes: IntCounterVec,
    mount_drops: IntCounterVec,
    mount_connects: IntCounterVec,
    mount_refused: IntCounterVec,
    pub bytes_sent: IntCounter,
    pub slow_drops: IntCounter,
    pub listener_connects: IntCounter,
    pub refused_connections: IntCounter,
    /// HTTP connections accepted, and requests read on them (more than one per connection
    /// where clients keep it alive).
    pub http_connections: IntCounter,
    pub http_requests: IntCounter,
    live_publishing: IntGaugeVec,
    live_ingest: IntCounterVec,
    live_segments: IntCounterVec,
    live_sent: IntCounterVec,
    live_requests: IntCounterVec,
    live_viewers: IntGaugeVec,
    /// Live parts kept in memory because their file could not be written.
    live_unstored: IntCounter,
    /// RTMP publishes refused (unknown key, stream already live, bad media).
    pub rtmp_refused: IntCounter,
    /// Argon2 password checks run (DJ logins not answered from memory).
    pub password_verifications: IntCounter,
    /// Source logins refused because every password check was busy or a lockout held.
    pub login_throttled: IntCounter,
    pub audio_hls: AudioHlsCounters,
}

/// The mounts' audio HLS, over every mount (per-mount listeners and bytes are in the mount's
/// own series, HLS listeners counted with Icecast ones).
#[derive(Debug, Clone)]
pub(crate) struct AudioHlsCounters {
    pub sessions: IntGauge,
    pub playlists: IntCounter,
    pub segments_served: IntCounter,
    pub segments_made: IntCounter,
    pub bytes_sent: IntCounter,
    pub refused: IntCounter,
}

/// One live stream's series.
#[derive(Debug, Clone)]
pub(crate) struct LiveCounters {
    pub publishing: IntGauge,
    pub ingest_bytes: IntCounter,
    pub segments: IntCounter,
    pub bytes_sent: IntCounter,
    pub requests: IntCounter,
    pub viewers: IntGauge,
    /// Over every stream: parts kept in memory because their file could not be written.
    pub unstored: IntCounter,
}

/// One mount's series.
#[derive(Debug, Clone)]
pub(crate) struct Counters {
    pub listeners: IntGauge,
    pub peak: IntGauge,
    pub source_connected: IntGauge,
    /// Unix time the current source connected; 0 without one.
    pub source_since: IntGauge,
    pub bytes_sent: IntCounter,
    pub dropped_slow: IntCounter,
    pub connections: IntCounter,
    pub refused_full: IntCounter,
}

impl Counters {
    /// Series registered nowhere (for unit tests and mounts outside a server).
    #[cfg(test)]
    pub(crate) fn detached() -> Counters {
        // The names are fixed and valid; construction cannot fail.
        let g = |n: &str| IntGauge::new(n, n).expect("valid metric name");
        let c = |n: &str| IntCounter::new(n, n).expect("valid metric name");
        Counters {
            listeners: g("l"),
            peak: g("p"),
            source_connected: g("s"),
            source_since: g("t"),
            bytes_sent: c("b"),
            dropped_slow: c("d"),
            connections: c("c"),
            refused_full: c("r"),
        }
    }
}

fn live_gauge(registry: &Registry, name: &str, help: &str) -> anyhow::Result<IntGaugeVec> {
    let v = IntGaugeVec::new(Opts::new(name, help), &["stream"])?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

fn live_counter(registry: &Registry, name: &str, help: &str) -> anyhow::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), &["stream"])?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

impl EdgeMetrics {
    pub(crate) fn new() -> anyhow::Result<EdgeMetrics> {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str| -> anyhow::Result<IntGaugeVec> {
            let v = IntGaugeVec::new(Opts::new(name, help), &["mount"])?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let counter_vec = |name: &str, help: &str| -> anyhow::Result<IntCounterVec> {
            let v = IntCounterVec::new(Opts::new(name, help), &["mount"])?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let audio_hls = AudioHlsCounters {
            sessions: {
                let g = IntGauge::new(
                    "onda_edge_audio_hls_sessions",
                    "HLS listeners of the mounts now (sessions with a playlist request within audio_hls.session_timeout_ms)",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            playlists: counter(
                "onda_edge_audio_hls_playlist_requests_total",
                "Audio HLS playlists served",
            )?,
            segments_served: counter(
                "onda_edge_audio_hls_segment_requests_total",
                "Audio HLS segments served",
            )?,
            segments_made: counter(
                "onda_edge_audio_hls_segments_total",
                "Audio HLS segments cut from the mounts' streams",
            )?,
            bytes_sent: counter(
                "onda_edge_audio_hls_bytes_sent_total",
                "Audio HLS bytes (playlists and segments) sent",
            )?,
            refused: counter(
                "onda_edge_audio_hls_refusals_total",
                "Audio HLS listeners refused by a mount's or station's listener limit",
            )?,
        };
        Ok(EdgeMetrics {
            listeners: gauge_vec("onda_edge_listeners", "Listeners connected to a mount")?,
            peak: gauge_vec(
                "onda_edge_listener_peak",
                "Most listeners a mount had at once",
            )?,
            source: gauge_vec(
                "onda_edge_source_connected",
                "1 while a source (or relay) feeds the mount",
            )?,
            source_since: gauge_vec(
                "onda_edge_source_connected_since_seconds",
                "Unix time the mount's current source connected (0 without one)",
            )?,
            mount_bytes: counter_vec(
                "onda_edge_mount_bytes_sent_total",
                "Audio bytes sent to a mount's listeners",
            )?,
            mount_drops: counter_vec(
                "onda_edge_mount_slow_listener_drops_total",
                "Listeners of a mount dropped for falling behind",
            )?,
            mount_connects: counter_vec(
                "onda_edge_mount_listener_connects_total",
                "Listeners admitted to a mount",
            )?,
            mount_refused: counter_vec(
                "onda_edge_mount_listener_refusals_total",
                "Listeners refused because the mount was full",
            )?,
            bytes_sent: counter(
                "onda_edge_bytes_sent_total",
                "Audio bytes sent to all listeners",
            )?,
            slow_drops: counter(
                "onda_edge_slow_listener_drops_total",
                "Listeners dropped for falling behind",
            )?,
            listener_connects: counter("onda_edge_listener_connects_total", "Listeners admitted")?,
            refused_connections: counter(
                "onda_edge_refused_connections_total",
                "Connections refused by the connection limits",
            )?,
            http_connections: counter(
                "onda_edge_http_connections_total",
                "HTTP connections accepted",
            )?,
            http_requests: counter(
                "onda_edge_http_requests_total",
                "HTTP requests read (a kept-alive connection carries several)",
            )?,
            live_publishing: live_gauge(
                &registry,
                "onda_edge_live_publishing",
                "1 while a publisher streams into the live stream over RTMP",
            )?,
            live_ingest: live_counter(
                &registry,
                "onda_edge_live_ingest_bytes_total",
                "Media bytes (FLV tag bodies) received from the live stream's publisher",
            )?,
            live_segments: live_counter(
                &registry,
                "onda_edge_live_segments_total",
                "HLS segments the live stream produced",
            )?,
            live_sent: live_counter(
                &registry,
                "onda_edge_live_bytes_sent_total",
                "HLS bytes (playlists and segments) sent to the live stream's viewers",
            )?,
            live_requests: live_counter(
                &registry,
                "onda_edge_live_requests_total",
                "HLS playlist and segment requests answered for the live stream",
            )?,
            live_viewers: live_gauge(
                &registry,
                "onda_edge_live_viewers",
                "Viewers of the live stream: playback sessions with a request within hls.viewer_timeout_ms",
            )?,
            live_unstored: counter(
                "onda_edge_live_parts_unstored_total",
                "Live parts (or relayed segments) kept in memory because their file could not be written (too many writes waiting, or a write error)",
            )?,
            rtmp_refused: counter(
                "onda_edge_rtmp_publish_refusals_total",
                "RTMP publishes refused (unknown or rotated key, stream already live, unsupported media)",
            )?,
            password_verifications: counter(
                "onda_edge_password_verifications_total",
                "Argon2 password checks run for source logins",
            )?,
            login_throttled: counter(
                "onda_edge_login_throttled_total",
                "Source logins refused unchecked: every password check busy, or a lockout after failures",
            )?,
            audio_hls,
            registry,
        })
    }

    pub(crate) fn live_counters(&self, stream: &str) -> LiveCounters {
        LiveCounters {
            publishing: self.live_publishing.with_label_values(&[stream]),
            ingest_bytes: self.live_ingest.with_label_values(&[stream]),
            segments: self.live_segments.with_label_values(&[stream]),
            bytes_sent: self.live_sent.with_label_values(&[stream]),
            requests: self.live_requests.with_label_values(&[stream]),
            viewers: self.live_viewers.with_label_values(&[stream]),
            unstored: self.live_unstored.clone(),
        }
    }

    pub(crate) fn forget_live(&self, stream: &str) {
        let _ = self.live_publishing.remove_label_values(&[stream]);
        let _ = self.live_ingest.remove_label_values(&[stream]);
        let _ = self.live_segments.remove_label_values(&[stream]);
        let _ = self.live_sent.remove_label_values(&[stream]);
        let _ = self.live_requests.remove_label_values(&[stream]);
        let _ = self.live_viewers.remove_label_values(&[stream]);
    }

    pub(crate) fn mount_counters(&self, mount: &str) -> Counters {
        Counters {
            listeners: self.listeners.with_label_values(&[mount]),
            peak: self.peak.with_label_values(&[mount]),
            source_connected: self.source.with_label_values(&[mount]),
            source_since: self.source_since.with_label_values(&[mount]),
            bytes_sent: self.mount_bytes.with_label_values(&[mount]),
            dropped_slow: self.mount_drops.with_label_values(&[mount]),
            connections: self.mount_connects.with_label_values(&[mount]),
            refused_full: self.mount_refused.with_label_values(&[mount]),
        }
    }

    /// Removes a deleted mount's series.
    pub(crate) fn forget_mount(&self, mount: &str) {
        let _ = self.listeners.remove_label_values(&[mount]);
        let _ = self.peak.remove_label_values(&[mount]);
        let _ = self.source.remove_label_values(&[mount]);
        let _ = self.source_since.remove_label_values(&[mount]);
        let _ = self.mount_bytes.remove_label_values(&[mount]);
        let _ = self.mount_drops.remove_label_values(&[mount]);
        let _ = self.mount_connects.remove_label_values(&[mount]);
        let _ = self.mount_refused.remove_label_values(&[mount]);
    }

    /// Adds another component's metrics (the agent's) to this edge's `/metrics`.
    pub(crate) fn register(&self, c: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.registry.register(c)?;
        Ok(())
    }

    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
