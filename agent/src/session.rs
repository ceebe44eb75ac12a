//! The agent's connection to the control planes: mutual TLS, hello, then desired states in and
//! heartbeats, acks and events out. Reconnects with exponential backoff and jitter, moving to
//! the next control-plane address after each failure; the edge keeps serving the last desired
//! state the whole time. A node the control plane refuses for good (revoked, unknown) stops with
//! the reason; a version refusal is retried at the longest backoff.
//!
//! After the `handshake`, an `AgentSession` has one method per thing that happens. A desired
//! state is applied, then a heartbeat reports what the node now carries, then the generation is
//! acked (the control plane trusts observations only once they are that new). Source and track
//! changes are looked for every 100 ms and sent as events; spooled usage reports go first in a
//! session that speaks usage, then each as it is sealed.

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
        // Equal jitter (half the backoff plus a random half): nodes that lost the same control
        // plane do not come back in step.
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

/// A session once the connection is up: hello and welcome, then the node's part of the session
/// until it ends.
async fn established(
    agent: &mut Agent,
    conn: &quinn::Connection,
    stop: &CancellationToken,
) -> Ended {
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return failed(false, e),
    };
    let (version, heartbeat_ms) = match handshake(agent, conn, &mut send, &mut recv).await {
        Ok(v) => v,
        Err(ended) => return ended,
    };
    let (want, fetched, fetcher) = spawn_fetcher(conn.clone(), agent.media.clone());
    let _fetcher = AbortOnDrop(fetcher);
    want_admitted(&want, agent);
    agent.metrics.connected.set(1);
    let _connected = Disconnected(agent.metrics.connected.clone());
    let mut session = AgentSession {
        send,
        version,
        want,
        on_air: BTreeMap::new(),
        reported: BTreeMap::new(),
        usage_sent: 0,
    };
    match session.run(agent, recv, fetched, heartbeat_ms, stop).await {
        Ok(ended) => ended,
        Err(e) => failed(true, e),
    }
}

/// Sends the hello and reads the welcome: the protocol version and heartbeat interval to use,
/// or how the session ended.
async fn handshake(
    agent: &Agent,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(u32, u64), Ended> {
    let hello = NodeMessage::Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        software: format!("onda {}", env!("CARGO_PKG_VERSION")),
        node: agent.advert.clone(),
        applied_generation: agent.desired.generation,
    };
    proto::write_frame(send, &hello)
        .await
        .map_err(|e| failed(false, e))?;
    let first = tokio::time::timeout(Duration::from_secs(10), proto::read_frame(recv)).await;
    let why = match first {
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
            return Ok((version, heartbeat_ms.clamp(100, 60_000)));
        }
        Ok(Ok(Some(ControlMessage::Refused { code, message }))) => {
            return Err(Ended::Refused(code, message));
        }
        Ok(Ok(Some(other))) => format!("expected welcome, got {other:?}"),
        Ok(Ok(None)) => "the control plane closed the connection before welcome".to_string(),
        // A refused certificate shows up here, on the first read, not at connect.
        Ok(Err(e)) => format!("no welcome: {e}"),
        Err(_) => "no welcome within 10 s".to_string(),
    };
    Err(failed(false, anyhow::anyhow!(why)))
}

/// Clears the connected gauge however the session ends.
struct Disconnected(prometheus::IntGauge);

impl Drop for Disconnected {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// A station's track as last reported: its start and title, and the next track's title and
/// request.
type Reported = (u64, String, Option<String>, Option<String>);

/// The node's side of an established session: what it has told the control plane so far.
struct AgentSession {
    send: quinn::SendStream,
    version: u32,
    /// The media the node wants, for the fetcher.
    want: tokio::sync::watch::Sender<BTreeMap<String, u64>>,
    /// Whether each mount had a source at the last look.
    on_air: BTreeMap<String, bool>,
    /// Tracks reported in this session, by station; a new session reports the current ones
    /// again.
    reported: BTreeMap<String, Reported>,
    /// The newest usage report sent in this session.
    usage_sent: u64,
}

impl AgentSession {
    /// Serves the session until the control plane ends or refuses it, or `stop`; an error
    /// (a write, a read, the connection) ends it as failed.
    async fn run(
        &mut self,
        agent: &mut Agent,
        recv: quinn::RecvStream,
        mut fetched: tokio::sync::mpsc::Receiver<()>,
        heartbeat_ms: u64,
        stop: &CancellationToken,
    ) -> anyhow::Result<Ended> {
        let mut beat = tokio::time::interval(Duration::from_millis(heartbeat_ms));
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        // Usage reports: everything still spooled goes first, then each report as it is sealed.
        let usage = self.version >= proto::USAGE_VERSION;
        let mut sealed = agent.sealed.subscribe();
        if usage {
            send_usage(agent, &mut self.send, &mut self.usage_sent).await?;
        }
        // Read on a task of their own: a frame read inside the `select!` below is not
        // cancel-safe.
        let mut frames = proto::read_frames::<_, ControlMessage>(recv);
        loop {
            tokio::select! {
                Ok(()) = sealed.changed(), if usage => {
                    send_usage(agent, &mut self.send, &mut self.usage_sent).await?;
                }
                Some(()) = fetched.recv() => {
                    // New media arrived: AutoDJs waiting for it start, the others see more
                    // tracks.
                    if let Err(e) = agent.reconfigure() {
                        tracing::warn!("applying newly fetched media: {e:#}");
                    }
                    // What the edge takes may change with the media.
                    want_admitted(&self.want, agent);
                }
                msg = frames.recv() => {
                    if let Some(ended) = self.on_message(agent, msg.unwrap_or(Ok(None))?).await? {
                        return Ok(ended);
                    }
                }
                _ = beat.tick() => self.heartbeat(agent).await?,
                _ = poll.tick() => self.report_changes(agent).await?,
                () = stop.cancelled() => return Ok(Ended::Stopped),
            }
        }
    }

    /// One message of the control plane; Some when it ends the session.
    async fn on_message(
        &mut self,
        agent: &mut Agent,
        msg: Option<ControlMessage>,
    ) -> anyhow::Result<Option<Ended>> {
        match msg {
            Some(ControlMessage::Desired(desired)) => {
                let generation = desired.generation;
                let error = agent.apply(desired).err().map(|e| format!("{e:#}"));
                want_admitted(&self.want, agent);
                // What the node carries now, before the ack: the control plane trusts a node's
                // observations only once they are as new as its desired state.
                self.heartbeat(agent).await?;
                let ack = NodeMessage::Ack { generation, error };
                proto::write_frame(&mut self.send, &ack).await?;
            }
            Some(ControlMessage::UsageAck { seq }) => on_usage_ack(agent, seq),
            Some(ControlMessage::Refused { code, message }) => {
                return Ok(Some(Ended::Refused(code, message)));
            }
            Some(other) => tracing::warn!("ignoring an unexpected control message: {other:?}"),
            None => anyhow::bail!("the control plane ended the session"),
        }
        Ok(None)
    }

    async fn heartbeat(&mut self, agent: &mut Agent) -> anyhow::Result<()> {
        let hb = heartbeat(agent, self.version);
        proto::write_frame(&mut self.send, &NodeMessage::Heartbeat(hb)).await?;
        Ok(())
    }

    async fn event(&mut self, ev: NodeEvent) -> anyhow::Result<()> {
        proto::write_frame(&mut self.send, &NodeMessage::Event(ev)).await?;
        Ok(())
    }

    /// Tracks that started and sources that came or went are told at once: the now-playing
    /// feeds, the redirector and a drain wait on them. A mount that disappeared has left too.
    async fn report_changes(&mut self, agent: &Agent) -> anyhow::Result<()> {
        let reports = agent.mount_reports();
        let gone: Vec<String> = self
            .on_air
            .keys()
            .filter(|p| !reports.iter().any(|r| &r.path == *p))
            .cloned()
            .collect();
        for track in agent.now_playing() {
            // The next track is part of it: a request queued during a track is announced then.
            let key = (
                track.started_at_ms,
                track.title.clone(),
                track.next_title.clone(),
                track.next_request_id.clone(),
            );
            if self.reported.get(&track.station_id) != Some(&key) {
                self.reported.insert(track.station_id.clone(), key);
                self.event(NodeEvent::TrackChanged(track)).await?;
            }
        }
        let stations = crate::apply::station_of_paths(&agent.desired);
        for path in gone {
            if self.on_air.remove(&path) == Some(true) {
                let station_id = stations.get(&path).cloned().unwrap_or_default();
                self.event(NodeEvent::SourceLeft { station_id, path })
                    .await?;
            }
        }
        for MountReport {
            station_id,
            path,
            on_air: now,
            ..
        } in reports
        {
            let before = self.on_air.insert(path.clone(), now).unwrap_or(false);
            if before != now {
                let ev = if now {
                    NodeEvent::SourceConnected { station_id, path }
                } else {
                    NodeEvent::SourceLeft { station_id, path }
                };
                self.event(ev).await?;
            }
        }
        Ok(())
    }
}

/// The control plane stored usage report `seq`: it leaves the spool.
fn on_usage_ack(agent: &Agent, seq: u64) {
    let acked = {
        let mut spool = agent
            .spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let acked = spool.ack(seq);
        agent
            .metrics
            .spool
            .set(i64::try_from(spool.depth()).unwrap_or(i64::MAX));
        acked
    };
    if let Err(e) = acked {
        // The report stays pending and is sent again; the control plane stores it once.
        tracing::error!("usage spool: {e:#}");
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
