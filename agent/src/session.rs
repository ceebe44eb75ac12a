//! The agent's connection to the control planes: mutual TLS, hello, then desired states in and
//! heartbeats, acks and events out. Reconnects with exponential backoff and jitter, moving to
//! the next control-plane address after each failure; the edge keeps serving the last desired
//! state the whole time.

use crate::Agent;
use onda_shared::cluster::proto::{
    self, ControlMessage, Heartbeat, MAX_VERSION, MIN_VERSION, MountReport, NodeEvent, NodeMessage,
    RefusalCode,
};
use onda_shared::cluster::tls;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn client_endpoint(peer: SocketAddr) -> anyhow::Result<quinn::Endpoint> {
    let bind: SocketAddr = if peer.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    Ok(quinn::Endpoint::client(bind)?)
}

/// Why a session ended.
#[derive(Debug)]
pub enum Ended {
    /// The agent is stopping.
    Stopped,
    /// The control plane refused this node for good (revoked, unknown).
    Refused(RefusalCode, String),
    /// Anything retrying may fix; `established` says whether the session got as far as welcome.
    Failed {
        established: bool,
        error: anyhow::Error,
    },
}

/// Runs sessions until stopped or permanently refused.
pub async fn run(agent: &mut Agent, stop: &CancellationToken) -> anyhow::Result<()> {
    let max = Duration::from_millis(agent.config.control_plane.max_backoff_ms);
    let mut backoff = Duration::from_millis(100);
    let mut turn = 0usize;
    loop {
        let addrs = &agent.config.control_plane.addresses;
        let addr = addrs[turn % addrs.len()].clone();
        turn += 1;
        let ended = match crate::resolve(&addr).await {
            Ok(sa) => session(agent, sa, stop).await,
            Err(e) => Ended::Failed {
                established: false,
                error: e,
            },
        };
        match ended {
            Ended::Stopped => return Ok(()),
            Ended::Refused(RefusalCode::Version, msg) => {
                // A rolling upgrade may bring a control plane that speaks our version: keep
                // trying, slowly, and say why every time.
                tracing::error!("control plane {addr} refused this node: {msg}");
                backoff = max;
            }
            Ended::Refused(code, msg) => {
                anyhow::bail!("control plane {addr} refused this node ({code:?}): {msg}")
            }
            Ended::Failed { established, error } => {
                if established {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!("control plane {addr}: {error:#}; retrying in about {backoff:?}");
            }
        }
        // Full jitter: nodes that lost the same control plane do not come back in step.
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(max);
    }
}

fn failed(established: bool, error: impl Into<anyhow::Error>) -> Ended {
    Ended::Failed {
        established,
        error: error.into(),
    }
}

/// A heartbeat: host readings, mounts, and (from protocol version 3) what the edge refused.
fn heartbeat(agent: &mut Agent, version: u32) -> Heartbeat {
    Heartbeat {
        host: agent.sample_host(),
        mounts: agent.mount_reports(),
        rejected: if version >= proto::REJECTED_VERSION {
            agent.admitted.rejected.clone()
        } else {
            Vec::new()
        },
    }
}

async fn session(agent: &mut Agent, addr: SocketAddr, stop: &CancellationToken) -> Ended {
    let cfg = match agent.client_config() {
        Ok(c) => c,
        Err(e) => return Ended::Refused(RefusalCode::Internal, format!("{e:#}")),
    };
    let endpoint = match client_endpoint(addr) {
        Ok(e) => e,
        Err(e) => return failed(false, e),
    };
    let connecting = match endpoint.connect_with(cfg, addr, tls::SERVER_NAME) {
        Ok(c) => c,
        Err(e) => return failed(false, e),
    };
    let conn = tokio::select! {
        c = connecting => match c {
            Ok(c) => c,
            Err(e) => return failed(false, anyhow::anyhow!("cannot connect to {addr}: {e}")),
        },
        () = stop.cancelled() => return Ended::Stopped,
    };
    let ended = established(agent, &conn, stop).await;
    let reason: &[u8] = if matches!(ended, Ended::Stopped) {
        b"agent stopping"
    } else {
        b"session ended"
    };
    conn.close(0u32.into(), reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    ended
}

async fn established(
    agent: &mut Agent,
    conn: &quinn::Connection,
    stop: &CancellationToken,
) -> Ended {
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return failed(false, e),
    };
    let hello = NodeMessage::Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        software: format!("onda {}", env!("CARGO_PKG_VERSION")),
        node: agent.advert.clone(),
        applied_generation: agent.desired.generation,
    };
    if let Err(e) = proto::write_frame(&mut send, &hello).await {
        return failed(false, e);
    }
    let first = tokio::time::timeout(Duration::from_secs(10), proto::read_frame(&mut recv)).await;
    let (version, heartbeat_ms) = match first {
        Ok(Ok(Some(ControlMessage::Welcome {
            version,
            control_plane,
            heartbeat_ms,
            ..
        }))) => {
            tracing::info!(
                "connected to control plane {control_plane} at {} (protocol {version})",
                conn.remote_address()
            );
            (version, heartbeat_ms.clamp(100, 60_000))
        }
        Ok(Ok(Some(ControlMessage::Refused { code, message }))) => {
            return Ended::Refused(code, message);
        }
        Ok(Ok(Some(other))) => {
            return failed(false, anyhow::anyhow!("expected welcome, got {other:?}"));
        }
        Ok(Ok(None)) => {
            return failed(
                false,
                anyhow::anyhow!("the control plane closed the connection before welcome"),
            );
        }
        Ok(Err(e)) => {
            // A refused certificate shows up here, on the first read, not at connect.
            return failed(false, anyhow::anyhow!("no welcome: {e}"));
        }
        Err(_) => return failed(false, anyhow::anyhow!("no welcome within 10 s")),
    };
    let mut beat = tokio::time::interval(Duration::from_millis(heartbeat_ms));
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let mut on_air: BTreeMap<String, bool> = BTreeMap::new();
    // Tracks reported in this session; a new session reports the current ones again.
    let mut reported: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let (want, fetched, fetcher) = spawn_fetcher(conn.clone(), agent.media.clone());
    let _fetcher = AbortOnDrop(fetcher);
    let mut fetched = fetched;
    want_admitted(&want, agent);
    agent.metrics.connected.set(1);
    struct Disconnected(prometheus::IntGauge);
    impl Drop for Disconnected {
        fn drop(&mut self) {
            self.0.set(0);
        }
    }
    let _connected = Disconnected(agent.metrics.connected.clone());
    // Usage reports: everything still spooled goes first, then each report as it is sealed.
    let usage = version >= proto::USAGE_VERSION;
    let mut sealed = agent.sealed.subscribe();
    let mut usage_sent = 0u64;
    if usage && let Err(e) = send_usage(agent, &mut send, &mut usage_sent).await {
        return failed(true, e);
    }
    // Read on a task of their own: a frame read inside the `select!` below is not cancel-safe.
    let mut frames = proto::read_frames::<_, ControlMessage>(recv);
    loop {
        tokio::select! {
            Ok(()) = sealed.changed(), if usage => {
                if let Err(e) = send_usage(agent, &mut send, &mut usage_sent).await {
                    return failed(true, e);
                }
            }
            Some(()) = fetched.recv() => {
                // New media arrived: AutoDJs waiting for it start, the others see more tracks.
                if let Err(e) = agent.reconfigure() {
                    tracing::warn!("applying newly fetched media: {e:#}");
                }
                want_admitted(&want, agent); // what the edge takes may change with the media
            }
            msg = frames.recv() => match msg.unwrap_or(Ok(None)) {
                Ok(Some(ControlMessage::Desired(desired))) => {
                    let generation = desired.generation;
                    let error = agent.apply(desired).err().map(|e| format!("{e:#}"));
                    want_admitted(&want, agent);
                    // What the node carries now, before the ack: the control plane trusts a
                    // node's observations only once they are as new as its desired state.
                    let hb = heartbeat(agent, version);
                    if let Err(e) = proto::write_frame(&mut send, &NodeMessage::Heartbeat(hb)).await {
                        return failed(true, e);
                    }
                    let ack = NodeMessage::Ack { generation, error };
                    if let Err(e) = proto::write_frame(&mut send, &ack).await {
                        return failed(true, e);
                    }
                }
                Ok(Some(ControlMessage::UsageAck { seq })) => {
                    let acked = {
                        let mut spool = agent
                            .spool
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let acked = spool.ack(seq);
                        agent.metrics.spool.set(i64::try_from(spool.depth()).unwrap_or(i64::MAX));
                        acked
                    };
                    if let Err(e) = acked {
                        // The report stays pending and is sent again; the control plane stores
                        // it once.
                        tracing::error!("usage spool: {e:#}");
                    }
                }
                Ok(Some(ControlMessage::Refused { code, message })) => return Ended::Refused(code, message),
                Ok(Some(other)) => tracing::warn!("ignoring an unexpected control message: {other:?}"),
                Ok(None) => return failed(true, anyhow::anyhow!("the control plane ended the session")),
                Err(e) => return failed(true, e),
            },
            _ = beat.tick() => {
                let hb = heartbeat(agent, version);
                if let Err(e) = proto::write_frame(&mut send, &NodeMessage::Heartbeat(hb)).await {
                    return failed(true, e);
                }
            }
            _ = poll.tick() => {
                // Sources coming and going are told at once: the redirector and a drain wait on
                // them. A mount that disappeared has left too.
                let reports = agent.mount_reports();
                let gone: Vec<String> = on_air
                    .keys()
                    .filter(|p| !reports.iter().any(|r| &r.path == *p))
                    .cloned()
                    .collect();
                for track in agent.now_playing() {
                    let key = (track.started_at_ms, track.title.clone());
                    if reported.get(&track.station_id) != Some(&key) {
                        reported.insert(track.station_id.clone(), key);
                        let ev = NodeEvent::TrackChanged(track);
                        if let Err(e) = proto::write_frame(&mut send, &NodeMessage::Event(ev)).await {
                            return failed(true, e);
                        }
                    }
                }
                let stations = crate::apply::station_of_paths(&agent.desired);
                for path in gone {
                    if on_air.remove(&path) == Some(true) {
                        let station_id = stations.get(&path).cloned().unwrap_or_default();
                        let ev = NodeEvent::SourceLeft { station_id, path };
                        if let Err(e) = proto::write_frame(&mut send, &NodeMessage::Event(ev)).await {
                            return failed(true, e);
                        }
                    }
                }
                for MountReport { station_id, path, on_air: now, .. } in reports {
                    let before = on_air.insert(path.clone(), now).unwrap_or(false);
                    if before != now {
                        let ev = if now {
                            NodeEvent::SourceConnected { station_id, path }
                        } else {
                            NodeEvent::SourceLeft { station_id, path }
                        };
                        if let Err(e) = proto::write_frame(&mut send, &NodeMessage::Event(ev)).await {
                            return failed(true, e);
                        }
                    }
                }
            }
            () = stop.cancelled() => return Ended::Stopped,
        }
    }
}

/// Sends the spooled reports after `sent` (the newest one sent in this session) and moves it.
async fn send_usage(
    agent: &Agent,
    send: &mut quinn::SendStream,
    sent: &mut u64,
) -> anyhow::Result<()> {
    let reports = agent
        .spool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pending_after(*sent);
    for r in reports {
        let seq = r.seq;
        proto::write_frame(send, &NodeMessage::Usage(r)).await?;
        *sent = seq;
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches, one at a time, every wanted media file the cache lacks; says when one arrived.
/// Failures are retried every 10 s (the control plane may still be storing an upload).
/// Tells the fetcher the media of what the edge admitted (a refused station's is not fetched),
/// waking it only when that changed.
fn want_admitted(want: &tokio::sync::watch::Sender<BTreeMap<String, u64>>, agent: &Agent) {
    let now = crate::apply::wanted_media(&agent.admitted);
    want.send_if_modified(|w| {
        let changed = *w != now;
        *w = now;
        changed
    });
}

fn spawn_fetcher(
    conn: quinn::Connection,
    media: crate::media::MediaCache,
) -> (
    tokio::sync::watch::Sender<BTreeMap<String, u64>>,
    tokio::sync::mpsc::Receiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let (want_tx, mut want_rx) = tokio::sync::watch::channel(BTreeMap::<String, u64>::new());
    let (done_tx, done_rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(async move {
        loop {
            let wanted = want_rx.borrow_and_update().clone();
            let mut failed = false;
            for (sha, size) in wanted {
                if media.has(&sha) {
                    continue;
                }
                match media.fetch(&conn, &sha, size).await {
                    Ok(()) => {
                        tracing::info!("media {sha} ({size} bytes) fetched and verified");
                        let _ = done_tx.send(()).await;
                    }
                    Err(e) => {
                        tracing::warn!("cannot fetch media {sha}: {e:#}");
                        failed = true;
                    }
                }
                if want_rx.has_changed().unwrap_or(false) {
                    break;
                }
            }
            let retry = async {
                if failed {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                r = want_rx.changed() => if r.is_err() { return },
                () = retry => {}
            }
        }
    });
    (want_tx, done_rx, task)
}
