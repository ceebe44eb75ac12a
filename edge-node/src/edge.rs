//! One edge node, composed: the HTTP layer serving the Icecast handlers over the mount
//! registry and the live streams' HLS, the RTMP ingest, the relays and AutoDJs, all reading one
//! current configuration. [`Edge`] is what the agent and `onda edge` use.

use crate::audio_hls::{self, AudioHls};
use crate::autodj::{AutoDjs, NowPlaying};
use crate::config::{ConfigError, Current, EdgeConfig};
use crate::http::{self, Answer, Request, reply, respond};
use crate::icecast::{self, Icecast, relay::Relays};
use crate::live::{self, Live, rtmp::Ingest};
use crate::metrics::EdgeMetrics;
use crate::registry::{Feeds, Registry};
use crate::usage::MountUsage;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// What a source feeding a mount looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStats {
    pub connected_since: SystemTime,
    pub content_type: String,
    pub bitrate: u32,
    pub title: String,
    pub relay: bool,
    pub bytes_received: u64,
}

/// One mount's numbers, for the agent and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStats {
    pub path: String,
    /// Connections on the mount, relay edges pulling it included (what Icecast counts).
    pub listeners: u64,
    /// Listeners proper: relay pulls presenting the mount's relay key left out.
    pub audience: u64,
    pub peak: u64,
    pub bytes_sent: u64,
    pub connections: u64,
    pub dropped_slow: u64,
    pub refused_full: u64,
    pub source: Option<SourceStats>,
}

/// One live stream's numbers, for the agent and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStats {
    pub name: String,
    /// Playback sessions active now.
    pub viewers: u64,
    /// A publisher streams into it now.
    pub publishing: bool,
}

/// Why an edge cannot start or take a configuration: the configuration (which key, and what is
/// wrong with it), or the machine (an address it cannot listen on, its metrics registry).
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{message}")]
    Listen {
        message: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the edge's metrics: {0:#}")]
    Metrics(anyhow::Error),
    #[error("{message}")]
    Storage {
        message: String,
        #[source]
        source: std::io::Error,
    },
}

fn local_addr(l: &tokio::net::TcpListener) -> Result<SocketAddr, EdgeError> {
    l.local_addr().map_err(|e| EdgeError::Listen {
        message: format!("cannot read the address listened on: {e}"),
        source: e,
    })
}

/// The live segments' directory (`hls.segment_dir`; empty: a temporary one).
fn segment_store(dir: &std::path::Path) -> Result<live::store::Store, EdgeError> {
    let empty = dir.as_os_str().is_empty();
    live::store::Store::open((!empty).then_some(dir)).map_err(|e| EdgeError::Storage {
        message: format!(
            "cannot keep live segments in {}: {e}; choose another directory with \
             hls.segment_dir or ONDA_HLS_SEGMENT_DIR",
            if empty {
                "the temporary directory".to_string()
            } else {
                dir.display().to_string()
            }
        ),
        source: e,
    })
}

/// The parts of a running edge, each with its own state; the HTTP layer serves requests
/// through [`Front`].
struct Front {
    config: Arc<Current>,
    metrics: Arc<EdgeMetrics>,
    registry: Arc<Registry>,
    icecast: Arc<Icecast>,
    live: Arc<Live>,
    audio_hls: AudioHls,
    relays: Relays,
    autodjs: AutoDjs,
    shutdown: CancellationToken,
}

/// A running edge node.
pub struct Edge {
    front: Arc<Front>,
    addr: SocketAddr,
    rtmp_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Edge {
    /// Binds and starts serving `config`.
    pub async fn start(config: EdgeConfig) -> Result<Edge, EdgeError> {
        let v = config.validate()?;
        let listener = tokio::net::TcpListener::bind(v.listen)
            .await
            .map_err(|e| {
                let message = if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "cannot listen on {}: port {} is already in use; choose another with http.listen or ONDA_HTTP_LISTEN",
                        v.listen,
                        v.listen.port()
                    )
                } else {
                    format!("cannot listen on {}: {e}", v.listen)
                };
                EdgeError::Listen { message, source: e }
            })?;
        let addr = local_addr(&listener)?;
        let rtmp = match v.rtmp {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
                EdgeError::Listen {
                    message: format!(
                        "cannot listen for RTMP on {a}: {e}; choose another address with rtmp.listen or ONDA_RTMP_LISTEN"
                    ),
                    source: e,
                }
            })?),
            None => None,
        };
        let rtmp_addr = rtmp.as_ref().map(local_addr).transpose()?;
        let metrics = Arc::new(EdgeMetrics::new().map_err(EdgeError::Metrics)?);
        let segments = segment_store(&v.config.hls.segment_dir)?;
        tracing::debug!("live segments in {}", segments.path().display());
        let config = Arc::new(Current::default());
        config.set(v.config.clone());
        let registry = Arc::new(Registry::new(metrics.clone()));
        let shutdown = CancellationToken::new();
        let front = Arc::new(Front {
            icecast: Arc::new(Icecast::new(
                registry.clone(),
                config.clone(),
                metrics.clone(),
                shutdown.clone(),
            )),
            live: Arc::new(Live::new(Some(segments))),
            audio_hls: AudioHls::new(
                registry.clone(),
                config.clone(),
                metrics.clone(),
                shutdown.clone(),
            ),
            relays: Relays::default(),
            autodjs: AutoDjs::default(),
            config,
            metrics,
            registry,
            shutdown,
        });
        front.apply(v.config);
        let task = tokio::spawn(http::serve(
            listener,
            front.clone(),
            front.shutdown.clone(),
            http::Counters {
                refused: front.metrics.refused_connections.clone(),
                connections: front.metrics.http_connections.clone(),
                requests: front.metrics.http_requests.clone(),
            },
        ));
        tracing::info!("edge listening on http://{addr}");
        if let (Some(l), Some(a)) = (rtmp, rtmp_addr) {
            let ingest = Ingest::new(
                front.live.clone(),
                front.config.clone(),
                front.metrics.clone(),
                front.shutdown.clone(),
            );
            tokio::spawn(live::rtmp::serve(l, Arc::new(ingest)));
            tracing::info!("RTMP ingest on rtmp://{a}");
        }
        Ok(Edge {
            front,
            addr,
            rtmp_addr,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where RTMP publishers connect; None without `rtmp.listen`.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp_addr
    }

    /// Applies a new configuration at runtime: added mounts appear, removed ones end, changed
    /// ones take the new settings; listeners of unchanged mounts are not disturbed. The listen
    /// address cannot change at runtime.
    pub fn apply(&self, config: EdgeConfig) -> Result<(), EdgeError> {
        let v = config.validate()?;
        self.front.apply(v.config);
        Ok(())
    }

    pub fn stats(&self) -> Vec<MountStats> {
        self.front
            .registry
            .all()
            .iter()
            .map(|m| MountStats {
                path: m.path.clone(),
                listeners: m.listener_count(),
                audience: m.usage.current(),
                peak: u64::try_from(m.counters.peak.get()).unwrap_or(0),
                bytes_sent: m.counters.bytes_sent.get(),
                connections: m.counters.connections.get(),
                dropped_slow: m.counters.dropped_slow.get(),
                refused_full: m.counters.refused_full.get(),
                source: m.session().map(|s| SourceStats {
                    connected_since: s.connected_at,
                    content_type: s.info.content_type.clone(),
                    bitrate: s.info.bitrate,
                    title: s.metadata().title.clone(),
                    relay: s.info.relay,
                    bytes_received: s.end(),
                }),
            })
            .collect()
    }

    pub fn live_stats(&self) -> Vec<LiveStats> {
        let now = std::time::Instant::now();
        self.front
            .live
            .streams()
            .iter()
            // Renditions are part of their stream.
            .filter(|s| s.parent.is_none())
            .map(|s| LiveStats {
                name: s.name.clone(),
                viewers: s.viewers.current(now),
                publishing: s.is_live(),
            })
            .collect()
    }

    /// Serves another component's metrics (the agent's) on this edge's `/metrics` too.
    pub fn register_metric(&self, c: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.front.metrics.register(c)
    }

    /// Listener usage of every mount and viewer usage of every live stream since the previous
    /// call (see `usage`): the agent meters with it. Relay pulls are not in it.
    pub fn take_usage(&self) -> Vec<MountUsage> {
        self.front.take_usage()
    }

    /// [`Edge::take_usage`] as a function that outlives a borrow of the edge (for a metering
    /// task, and for the last take after [`Edge::shutdown`]).
    pub fn usage_taker(&self) -> impl Fn() -> Vec<MountUsage> + Send + Sync + 'static {
        let front = self.front.clone();
        move || front.take_usage()
    }

    /// What each AutoDJ plays now, by AutoDJ name.
    pub fn now_playing(&self) -> Vec<(String, NowPlaying)> {
        self.front.autodjs.now_playing()
    }

    /// Stops accepting and disconnects everyone.
    pub async fn shutdown(self) {
        self.front.shutdown.cancel();
        self.front.registry.kill_all();
        let _ = self.task.await;
    }
}

impl Front {
    /// Makes `config` current in every part, in the order the parts read each other: mounts
    /// and live streams first, then the configuration they read, then the mounts' HLS, the
    /// relays and the AutoDJs that feed the mounts.
    fn apply(&self, config: EdgeConfig) {
        self.registry.apply(&config);
        self.live.sync(&config, &self.metrics);
        self.config.set(config);
        self.audio_hls.sync();
        self.relays.sync(&self.icecast);
        let feeds = Feeds::new(self.registry.clone(), self.config.clone());
        self.autodjs
            .sync(&self.config.get(), &feeds, &self.shutdown);
    }

    fn take_usage(&self) -> Vec<MountUsage> {
        let mut out = self.live.take_usage();
        out.extend(self.registry.take_usage());
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// `/metrics`, `/healthz` and `/readyz`: the node's own routes, beside Icecast's.
    async fn node_route(&self, req: &mut Request) -> bool {
        let (ctype, body) = match req.head.path.as_str() {
            "/healthz" => ("text/plain", b"ok\n".to_vec()),
            "/readyz" => ("text/plain", b"ready\n".to_vec()),
            "/metrics" => ("text/plain; version=0.0.4; charset=utf-8", {
                // Viewers are sessions that time out without a request: count them now.
                self.live.refresh_viewers();
                self.metrics.render().into_bytes()
            }),
            _ => return false,
        };
        let answer = Answer {
            status: 200,
            content_type: ctype,
            cache_control: "no-cache",
            headers: &[],
            body: &body,
            head_only: req.head.method == "HEAD",
        };
        let _ = reply(req, &answer).await;
        true
    }
}

impl http::Service for Front {
    fn limits(&self) -> http::Limits {
        let l = &self.config.get().limits;
        http::Limits {
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            max_header_bytes: usize::try_from(l.max_header_bytes).unwrap_or(8192),
            max_headers: usize::try_from(l.max_headers).unwrap_or(64),
            header_timeout: l.header_timeout(),
        }
    }

    /// A pull by another node of the cluster (`X-Onda-Relay` with the relay key of what it
    /// asks for), not a listener.
    fn exempt(&self, head: &http::head::RequestHead) -> bool {
        let Some(key) = head.header(live::pull::RELAY_HEADER) else {
            return false;
        };
        match head.path.strip_prefix("/hls/") {
            Some(rest) => {
                let name = rest.split('/').next().unwrap_or_default();
                self.live
                    .get(name)
                    .filter(|s| s.parent.is_none())
                    .is_some_and(|s| s.is_relay(Some(key)))
            }
            None => self
                .registry
                .get(&head.path)
                .is_some_and(|m| m.is_relay_key(key)),
        }
    }

    async fn call(self: Arc<Self>, mut req: Request) -> Option<Request> {
        // Every connection's task holds this future for its whole life, sized by its largest
        // state: the rare handlers are boxed, and a listener (ten thousand at once, for hours)
        // gets a task of its own, so it holds neither an admin request's state nor this one.
        // Icecast's own exchanges (sources, listeners) answer over HTTP/1.0 and close, as
        // Icecast does; the other answers may keep the connection.
        match (req.head.method.as_str(), route(&req.head.path)) {
            ("SOURCE" | "PUT", _) => {
                let span = mount_span(&req);
                Box::pin(icecast::source::serve(req, self.icecast.clone()).instrument(span)).await;
                return None;
            }
            // A mount or nothing; the listener code answers 404 for nothing.
            // A task of its own: the connection's task (with room for every other kind of
            // request) ends, and the listener's holds only what a listener needs. No span
            // either: a span's data in the subscriber (and its parent's, kept alive by it)
            // would stay as long as the listener; its one log line names its mount.
            ("GET" | "HEAD", Route::Mount) => {
                tokio::spawn(icecast::listener::serve(
                    Box::new(req),
                    self.icecast.clone(),
                ));
                return None;
            }
            ("GET" | "HEAD", Route::Admin) => {
                if !Box::pin(self.node_route(&mut req)).await {
                    Box::pin(icecast::admin::serve(&mut req, self.icecast.clone())).await;
                }
            }
            ("GET" | "HEAD", Route::AudioHls) => {
                let span = tracing::info_span!("hls-audio", path = %req.head.path);
                Box::pin(audio_hls::serve::serve(&mut req, &self.audio_hls).instrument(span)).await;
            }
            ("GET" | "HEAD", Route::Hls) => {
                let name = req.head.path.split('/').nth(2).unwrap_or_default();
                let span = tracing::info_span!("hls", stream = %name);
                Box::pin(live::serve_hls(&mut req, &self.live).instrument(span)).await;
            }
            ("OPTIONS", _) => {
                let answer = Answer {
                    status: 204,
                    content_type: "text/plain",
                    cache_control: "no-cache",
                    headers: http::cors::PREFLIGHT,
                    body: b"",
                    head_only: false,
                };
                let _ = Box::pin(reply(&mut req, &answer)).await;
            }
            _ => {
                let _ = Box::pin(respond(
                    &mut req.stream,
                    405,
                    "text/plain",
                    &[("Allow", "GET, HEAD, OPTIONS, PUT, SOURCE")],
                    b"Method not allowed\n",
                ))
                .await;
                return None;
            }
        }
        req.persist.then_some(req)
    }
}

/// The span of a source's connection to a mount (a listener has none: see `Front::call`).
fn mount_span(req: &Request) -> tracing::Span {
    tracing::info_span!("mount", mount = %req.head.path)
}

/// `onda edge --config edge.toml`: serve until SIGINT/SIGTERM.
pub async fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config: EdgeConfig = onda_shared::config::load(config_path)?;
    let edge = Edge::start(config)
        .await
        .context("cannot start the edge node")?;
    onda_shared::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Who answers a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Admin,
    AudioHls,
    Hls,
    Mount,
}

/// The edge's own paths are those of `onda_shared::paths` (the rule the API and the edge's
/// configuration check refuse mounts by): its reserved whole paths and everything under the
/// `admin` segment are the admin routes, everything under `hls` the live streams, everything
/// under `hls-audio` the mounts' HLS.
fn route(path: &str) -> Route {
    use onda_shared::paths::{RESERVED_PATHS, reserved};
    let first = path
        .strip_prefix('/')
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if reserved(path).is_none() {
        Route::Mount
    } else if first == "hls" {
        Route::Hls
    } else if first == "hls-audio" {
        Route::AudioHls
    } else {
        debug_assert!(first == "admin" || RESERVED_PATHS.contains(&path), "{path}");
        Route::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::{Edge, EdgeConfig, EdgeError, Route, route};
    use onda_shared::paths::{RESERVED_PATHS, RESERVED_SEGMENTS};

    #[test]
    fn the_edge_routes_exactly_the_shared_reserved_paths_itself() {
        for p in RESERVED_PATHS {
            assert_eq!(route(p), Route::Admin, "{p}");
        }
        for seg in RESERVED_SEGMENTS {
            for p in [
                format!("/{seg}"),
                format!("/{seg}/x"),
                format!("/{seg}/x/y.m3u8"),
            ] {
                assert_ne!(route(&p), Route::Mount, "{p}");
            }
        }
        assert_eq!(route("/admin/metadata"), Route::Admin);
        assert_eq!(route("/hls/show/index.m3u8"), Route::Hls);
        assert_eq!(
            route("/hls-audio/demo/radio.mp3/index.m3u8"),
            Route::AudioHls
        );
        for p in [
            "/administration-radio/x.mp3",
            "/hlsx",
            "/live",
            "/metrics/x",
            "/",
        ] {
            assert_eq!(route(p), Route::Mount, "{p}");
        }
    }

    fn config(toml: &str) -> EdgeConfig {
        toml::from_str(&format!("[http]\nlisten = \"127.0.0.1:0\"\n{toml}")).expect("TOML")
    }

    /// Every connection's task holds its handler's future for as long as the connection lives,
    /// and a listener's task its own: a listener's must stay small (ten thousand of them, for
    /// hours). Unboxed, the handlers of rare requests made it about 10 KB (debug build).
    #[tokio::test]
    async fn a_listeners_task_holds_a_small_future() {
        use crate::http::Service as _;
        let edge = Edge::start(config("")).await.expect("starts");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let request = || async {
            crate::http::Request {
                head: crate::http::head::RequestHead {
                    method: "GET".into(),
                    path: "/live".into(),
                    query: String::new(),
                    minor_version: 0,
                    headers: vec![],
                },
                stream: tokio::net::TcpStream::connect(addr).await.expect("connect"),
                peer: addr,
                leftover: bytes::BytesMut::new(),
                persist: false,
                conn: None,
            }
        };
        let call = edge.front.clone().call(request().await);
        let listener =
            crate::icecast::listener::serve(Box::new(request().await), edge.front.icecast.clone());
        let sizes = (
            std::mem::size_of_val(&call),
            std::mem::size_of_val(&listener),
        );
        // A tokio task is its future plus about 100 bytes, in cells of 128: a listener's
        // future of 384 bytes (release; 392 in a debug build) makes a 512-byte task, one of
        // 432 a 640-byte one (a heap profile of 10,000 listeners shows which).
        assert!(sizes.0 <= 3072 && sizes.1 <= 400, "{sizes:?}");
        drop((call, listener));
        edge.shutdown().await;
    }

    /// A caller can tell a configuration it must fix (with the key) from an address it cannot
    /// listen on or a segment directory it cannot use.
    #[tokio::test]
    async fn start_says_whether_the_configuration_or_the_machine_is_at_fault() {
        match Edge::start(config("[limits]\nqueue_bytes = 1\n")).await {
            Err(EdgeError::Config(e)) => {
                assert_eq!(e.key, "limits.queue_bytes");
                assert!(e.message.contains("must be between"), "{e}");
            }
            other => panic!("not a configuration error: {:?}", other.err()),
        }
        let mounts = "[[mounts]]\npath = \"/a\"\nsource_password = \"x\"\nfallback = \"/b\"\n";
        match Edge::start(config(mounts)).await {
            Err(EdgeError::Config(e)) => assert_eq!(e.key, "mounts", "{e}"),
            other => panic!("not a configuration error: {:?}", other.err()),
        }
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let busy: EdgeConfig =
            toml::from_str(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).expect("TOML");
        match Edge::start(busy).await {
            Err(EdgeError::Listen { message, .. }) => {
                assert!(message.contains("already in use"), "{message}");
            }
            other => panic!("not a listen error: {:?}", other.err()),
        }
        let file = tempfile::NamedTempFile::new().expect("file");
        let segments = format!("[hls]\nsegment_dir = \"{}\"\n", file.path().display());
        match Edge::start(config(&segments)).await {
            Err(EdgeError::Storage { message, .. }) => {
                assert!(message.contains("hls.segment_dir"), "{message}");
            }
            other => panic!("not a storage error: {:?}", other.err()),
        }
        let edge = Edge::start(config("")).await.expect("starts");
        match edge.apply(config("[hls]\nwindow = 1\n")) {
            Err(EdgeError::Config(e)) => assert_eq!(e.key, "hls.window", "{e}"),
            other => panic!("not a configuration error: {other:?}"),
        }
        edge.shutdown().await;
    }
}
