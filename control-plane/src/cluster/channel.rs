//! The QUIC control channel: joins (no client certificate, a one-time token) and sessions of
//! joined nodes (mutual TLS). One bidirectional stream per connection carries the frames of
//! [`onda_shared::cluster::proto`]; each media file a node fetches takes a further stream.
//!
//! A join consumes its token (one conditional UPDATE) in the transaction that records the node,
//! before the CA signs anything. A session (`NodeSession`, one method per kind of message)
//! identifies the node by its certificate's SHA-256 and refuses a revoked or unknown one; it
//! keeps the node's lease alive on heartbeats and stores its observations, sends the node's
//! desired state whenever the leader rewrites it, stores each usage report once per (node,
//! sequence number) and acknowledges it only after the commit, and serves media and takes
//! track reports only for what the node's desired state names.

use super::{Cluster, Observed, store, usage_vet};
use crate::coordinator::LeaseId;
use crate::db;
use anyhow::Context as _;
use onda_shared::cluster::proto::{
    self, ControlMessage, DesiredState, NodeAdvert, NodeEvent, NodeMessage, RefusalCode,
};
use onda_shared::cluster::tls::peer_cert_sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub async fn serve(endpoint: quinn::Endpoint, cluster: Arc<Cluster>, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            () = stop.cancelled() => return,
        };
        let Some(incoming) = incoming else { return };
        let cluster = cluster.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match handle(incoming, cluster, stop).await {
                Ok(()) => {}
                Err(e) if database_fault(&e) => {
                    tracing::warn!("control channel from {remote}: {e:#}");
                }
                // Lost connections, failed handshakes and strangers are the network's.
                Err(e) => tracing::debug!("control channel from {remote}: {e:#}"),
            }
        });
    }
}

/// Whether the database failed a node's session: this replica's trouble, not the network's, so
/// said where an operator looks (but not the pool closing at shutdown).
fn database_fault(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .is_some_and(|e| !matches!(e, sqlx::Error::PoolClosed))
    })
}

type Send = quinn::SendStream;
type Recv = quinn::RecvStream;

async fn handle(
    incoming: quinn::Incoming,
    cluster: Arc<Cluster>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let conn = incoming.await.context("handshake")?;
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .context("no stream within 10 s")??;
    let first: NodeMessage =
        tokio::time::timeout(Duration::from_secs(10), proto::read_frame(&mut recv))
            .await
            .context("no first message within 10 s")??
            .context("closed before the first message")?;
    match (peer_cert_sha256(&conn), first) {
        (
            None,
            NodeMessage::Join {
                min_version,
                max_version,
                token_id,
                token_secret,
                csr_pem,
                node,
            },
        ) => {
            let answer = join(
                &cluster,
                (min_version, max_version),
                &token_id,
                &token_secret,
                &csr_pem,
                &node,
            )
            .await;
            if let ControlMessage::Refused { code, message } = &answer {
                // Anyone can try to join: one line per interval, however many try.
                cluster.refusals.refuse("join", || {
                    format!("a join from {}: {code:?}: {message}", conn.remote_address())
                });
            }
            finish(&conn, &mut send, &answer).await
        }
        (
            Some(fp),
            NodeMessage::Hello {
                min_version,
                max_version,
                node,
                applied_generation,
                ..
            },
        ) => {
            let hello = Hello {
                versions: (min_version, max_version),
                advert: node,
                applied_generation,
            };
            session(&cluster, &conn, send, recv, &fp, hello, stop).await
        }
        (None, NodeMessage::Hello { .. }) => {
            refuse(
                &conn,
                &mut send,
                RefusalCode::UnknownNode,
                "a node without a certificate must join first (onda agent --join TOKEN)",
            )
            .await
        }
        (Some(_), NodeMessage::Join { .. }) => {
            refuse(
                &conn,
                &mut send,
                RefusalCode::BadRequest,
                "this node already has a certificate; it connects with hello, not join",
            )
            .await
        }
        (_, other) => {
            let what = serde_json::to_value(&other)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_default();
            refuse(
                &conn,
                &mut send,
                RefusalCode::Protocol,
                &format!("the first message must be hello or join, not {what}"),
            )
            .await
        }
    }
}

async fn refuse(
    conn: &quinn::Connection,
    send: &mut Send,
    code: RefusalCode,
    message: &str,
) -> anyhow::Result<()> {
    let msg = ControlMessage::Refused {
        code,
        message: message.to_string(),
    };
    finish(conn, send, &msg).await
}

/// Sends a last message and closes once the peer has it (or after 3 s).
async fn finish(
    conn: &quinn::Connection,
    send: &mut Send,
    msg: &ControlMessage,
) -> anyhow::Result<()> {
    proto::write_frame(send, msg).await?;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(3), send.stopped()).await;
    conn.close(0u32.into(), b"done");
    Ok(())
}

fn refused(code: RefusalCode, message: impl Into<String>) -> ControlMessage {
    ControlMessage::Refused {
        code,
        message: message.into(),
    }
}

fn check_advert(node: &NodeAdvert) -> Result<(), String> {
    let token = |v: &str| {
        !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !token(&node.name) {
        return Err(format!(
            "node name {:?} must be 1 to 63 letters, digits, '.', '_' or '-'",
            node.name
        ));
    }
    if !node.region.is_empty() && !token(&node.region) {
        return Err(format!("node region {:?} is not a valid name", node.region));
    }
    if node.labels.len() > 16 || node.labels.iter().any(|(k, v)| !token(k) || !token(v)) {
        return Err(
            "node labels: at most 16, keys and values of 1 to 63 letters, digits, '.', '_' or '-'"
                .into(),
        );
    }
    if !node.edge_url.starts_with("http://") && !node.edge_url.starts_with("https://") {
        return Err(format!(
            "node edge_url {:?} must be an http:// or https:// URL listeners can reach",
            node.edge_url
        ));
    }
    if !node.rtmp_url.is_empty() && !node.rtmp_url.starts_with("rtmp://") {
        return Err(format!(
            "node rtmp_url {:?} must be empty or an rtmp:// URL publishers can reach",
            node.rtmp_url
        ));
    }
    if node.capacity_listeners == 0 || node.capacity_mbps == 0 {
        return Err("node capacity_listeners and capacity_mbps must be at least 1".into());
    }
    Ok(())
}

async fn join(
    cluster: &Cluster,
    versions: (u32, u32),
    token_id: &str,
    token_secret: &str,
    csr_pem: &str,
    node: &NodeAdvert,
) -> ControlMessage {
    if let Err(why) = proto::negotiate(versions.0, versions.1) {
        return refused(RefusalCode::Version, why);
    }
    if let Err(why) = check_advert(node) {
        return refused(RefusalCode::BadRequest, why);
    }
    let node_id = crate::secrets::new_id("node");
    // The token is checked (and consumed) before the CA looks at the CSR: without a valid token
    // the CA signs nothing. A refused CSR rolls the consumption back with the transaction.
    let result: anyhow::Result<ControlMessage> = async {
        let mut tx = cluster.db.begin().await?;
        let secret = crate::secrets::sha256_hex(token_secret);
        match db::cluster::consume_token(&mut tx, token_id, &secret, &node_id).await? {
            Ok(()) => {}
            Err(db::cluster::TokenProblem::Unknown) => {
                return Ok(refused(
                    RefusalCode::TokenUnknown,
                    "the join token is not known to this cluster (mistyped, deleted, or for another cluster)",
                ));
            }
            Err(db::cluster::TokenProblem::Used) => {
                return Ok(refused(
                    RefusalCode::TokenUsed,
                    "the join token was already used; tokens are one-time: create a new one (POST /v1/join-tokens)",
                ));
            }
            Err(db::cluster::TokenProblem::Expired) => {
                return Ok(refused(
                    RefusalCode::TokenExpired,
                    "the join token has expired; create a new one (POST /v1/join-tokens)",
                ));
            }
        }
        if db::nodes::name_taken(&mut tx, &node.name).await? {
            return Ok(refused(
                RefusalCode::BadRequest,
                format!(
                    "a node named {:?} is already in the cluster; revoke it or give this node another name",
                    node.name
                ),
            ));
        }
        let cert_pem = match cluster.ca.sign_node(csr_pem, &node_id) {
            Ok(c) => c,
            Err(e) => return Ok(refused(RefusalCode::BadRequest, format!("{e:#}"))),
        };
        let fp = match onda_shared::cluster::tls::certs_from_pem(&cert_pem) {
            Ok(c) => onda_shared::cluster::tls::sha256_hex(&c[0]),
            Err(e) => return Ok(refused(RefusalCode::Internal, format!("{e:#}"))),
        };
        db::nodes::insert(&mut tx, &node_id, node, &fp).await?;
        tx.commit().await?;
        Ok(ControlMessage::Joined {
            node_id: node_id.clone(),
            cert_pem,
            ca_pem: cluster.ca.cert_pem.clone(),
        })
    }
    .await;
    match result {
        Ok(m) => {
            if matches!(m, ControlMessage::Joined { .. }) {
                tracing::info!("node {} joined as {node_id}", node.name);
            }
            m
        }
        Err(e) => refused(
            RefusalCode::Internal,
            format!("the control plane failed: {e:#}"),
        ),
    }
}

/// What a joined node's `hello` says.
struct Hello {
    versions: (u32, u32),
    advert: NodeAdvert,
    /// The generation the node is serving (from before a reconnect).
    applied_generation: u64,
}

/// A joined node's session: admitted, welcomed, then its messages until it ends.
async fn session(
    cluster: &Arc<Cluster>,
    conn: &quinn::Connection,
    mut send: Send,
    recv: Recv,
    fp: &str,
    hello: Hello,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (id, version) = match admit(cluster, fp, &hello).await? {
        Ok(admitted) => admitted,
        Err((code, why)) => return refuse(conn, &mut send, code, &why).await,
    };
    // Every line the session logs names the node through this span.
    let span = tracing::info_span!("node", node_id = %id, name = %hello.advert.name);
    async move {
        let mut session = NodeSession::start(cluster, conn, send, id, version, hello).await?;
        // However the session ended, `close` reads why the connection did (a silent node's
        // ends both the frame reader and `accept_bi`, whichever the loop was in).
        let outcome = session.run(recv, stop).await;
        session.close().await;
        outcome?
    }
    .instrument(span)
    .await
}

/// The id of the node a hello comes from and the protocol version to speak, or the refusal to
/// send.
async fn admit(
    cluster: &Cluster,
    fp: &str,
    hello: &Hello,
) -> anyhow::Result<Result<(String, u32), (RefusalCode, String)>> {
    let node = {
        let mut c = cluster.db.conn().await?;
        db::nodes::by_cert(&mut c, fp).await?
    };
    let Some(node) = node else {
        return Ok(Err((
            RefusalCode::UnknownNode,
            "this node's certificate belongs to no node of this cluster; join again with a new token".into(),
        )));
    };
    if let Some(at) = &node.revoked_at {
        return Ok(Err((
            RefusalCode::Revoked,
            format!(
                "node {} ({}) was revoked by an administrator at {at}; it must join again with a new token",
                node.name, node.id
            ),
        )));
    }
    let version = match proto::negotiate(hello.versions.0, hello.versions.1) {
        Ok(v) => v,
        Err(why) => {
            tracing::warn!("node {}: {why}", node.name);
            return Ok(Err((RefusalCode::Version, why)));
        }
    };
    if let Err(why) = check_advert(&hello.advert) {
        return Ok(Err((RefusalCode::BadRequest, why)));
    }
    Ok(Ok((node.id, version)))
}

/// What a message does to its session: nothing more, or the session ends with this outcome.
/// A handler's `Err` ends the session at once. Either way [`NodeSession::close`] runs and
/// decides from how the connection ended whether the node's stations move now.
enum Flow {
    Continue,
    End(anyhow::Result<()>),
}

/// Counts a session in a gauge for as long as it lives, however it ends.
struct Connected(prometheus::IntGauge);

impl Connected {
    fn new(gauge: &prometheus::IntGauge) -> Connected {
        gauge.inc();
        Connected(gauge.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An admitted node's session: what it keeps between messages, and a method for each kind of
/// message and each other thing that can happen (a media stream opened, the desired state or
/// a revocation notice changed).
struct NodeSession<'a> {
    cluster: &'a Arc<Cluster>,
    conn: &'a quinn::Connection,
    send: Send,
    id: String,
    version: u32,
    /// The lease holding the node's liveness and observation keys.
    lease: LeaseId,
    observed: Observed,
    beats: u64,
    sent_generation: u64,
    /// The node's desired state as last read: what its heartbeats may report refusals of.
    desired: Option<DesiredState>,
    _connected: Connected,
}

impl<'a> NodeSession<'a> {
    /// Records the node's advert, welcomes it and marks it alive.
    async fn start(
        cluster: &'a Arc<Cluster>,
        conn: &'a quinn::Connection,
        mut send: Send,
        id: String,
        version: u32,
        hello: Hello,
    ) -> anyhow::Result<NodeSession<'a>> {
        let Hello {
            advert,
            applied_generation,
            ..
        } = hello;
        {
            let mut c = cluster.db.conn().await?;
            db::nodes::update_advert(&mut c, &id, &advert).await?;
        }
        let settings = &cluster.settings;
        let welcome = ControlMessage::Welcome {
            version,
            node_id: id.clone(),
            control_plane: settings.replica.clone(),
            heartbeat_ms: u64::try_from(settings.heartbeat.as_millis()).unwrap_or(1000),
        };
        proto::write_frame(&mut send, &welcome).await?;
        let lease = cluster.coord.grant(settings.node_ttl).await?;
        let observed = Observed {
            replica: settings.replica.clone(),
            applied_generation,
            ..Observed::default()
        };
        cluster
            .store
            .put_alive(&id, &settings.replica, lease)
            .await?;
        cluster.store.put_observed(&id, &observed, lease).await?;
        tracing::info!(remote = %conn.remote_address(), "node connected");
        Ok(NodeSession {
            cluster,
            conn,
            send,
            id,
            version,
            lease,
            observed,
            beats: 0,
            sent_generation: 0,
            desired: None,
            _connected: Connected::new(&cluster.metrics.sessions),
        })
    }

    /// Serves the node until the session ends: its messages, its media streams, changes of its
    /// desired state and revocation notices, the control plane stopping. Returns how the
    /// session ended, or the failure that ended it at once (see [`Flow`]).
    async fn run(
        &mut self,
        recv: Recv,
        stop: CancellationToken,
    ) -> anyhow::Result<anyhow::Result<()>> {
        let coord = self.cluster.coord.clone();
        let conn = self.conn;
        let (desired_key, revoked_key) =
            (store::desired_key(&self.id), store::revoked_key(&self.id));
        let mut desired_watch = coord.watch(&desired_key).await?;
        let mut revoked_watch = coord.watch(&revoked_key).await?;
        // Send what is already desired before waiting for changes.
        let mut check_desired = true;
        // Read on a task of their own: a frame read inside the `select!` below is not
        // cancel-safe.
        let mut frames = proto::read_frames::<_, NodeMessage>(recv);
        loop {
            if check_desired {
                check_desired = false;
                self.send_desired().await?;
            }
            let flow = tokio::select! {
                msg = frames.recv() => self.on_frame(msg).await?,
                bi = conn.accept_bi() => {
                    self.on_media_stream(bi?);
                    Flow::Continue
                }
                w = desired_watch.recv() => {
                    if w.is_none() {
                        desired_watch = coord.watch(&desired_key).await?;
                    }
                    check_desired = true;
                    Flow::Continue
                }
                w = revoked_watch.recv() => {
                    if w.is_none() {
                        revoked_watch = coord.watch(&revoked_key).await?;
                    }
                    self.on_revocation_notice().await?
                }
                () = stop.cancelled() => {
                    conn.close(0u32.into(), b"control plane stopping");
                    Flow::End(Ok(()))
                }
            };
            if let Flow::End(outcome) = flow {
                return Ok(outcome);
            }
        }
    }

    /// A node that closed the connection itself is leaving, and one whose connection carried
    /// nothing, not even a keep-alive, for `cluster.node_silence_ms` is dead (or cut off for
    /// longer than a hiccup): either way its lease ends, so its stations move now rather than
    /// when the coordinator's lease runs out. After any other error (a reset, this replica
    /// stopping) it may be back within its lease, so the lease decides.
    async fn close(&self) {
        match self.conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(_)) => {
                let _ = self.cluster.coord.revoke(self.lease).await;
                tracing::info!("node disconnected");
            }
            // A replica that stalled itself heard nothing either: then the node may well be
            // fine, and its lease decides (it reconnects, here or elsewhere, within it).
            Some(quinn::ConnectionError::TimedOut)
                if self
                    .cluster
                    .stalled_within(self.cluster.settings.node_silence * 2) =>
            {
                tracing::warn!("node connection timed out while this replica was stalled");
            }
            Some(quinn::ConnectionError::TimedOut) => {
                let _ = self.cluster.coord.revoke(self.lease).await;
                tracing::warn!(
                    "node silent for {:?}: taken for dead, its stations move",
                    self.cluster.settings.node_silence
                );
            }
            _ => tracing::info!("node disconnected"),
        }
    }

    async fn refuse(&mut self, code: RefusalCode, message: &str) -> anyhow::Result<()> {
        refuse(self.conn, &mut self.send, code, message).await
    }

    /// Sends the node its desired state when the stored generation is not the one last sent.
    async fn send_desired(&mut self) -> anyhow::Result<()> {
        if let Some(desired) = self.cluster.store.desired(&self.id).await? {
            if desired.generation != self.sent_generation {
                self.sent_generation = desired.generation;
                let message = ControlMessage::Desired(desired.clone());
                proto::write_frame(&mut self.send, &message).await?;
            }
            self.desired = Some(desired);
        }
        Ok(())
    }

    /// What the reading task delivered: a message, the end of the stream, or a frame that does
    /// not decode (the node is told why, and the session ends).
    async fn on_frame(
        &mut self,
        frame: Option<Result<Option<NodeMessage>, proto::FrameError>>,
    ) -> anyhow::Result<Flow> {
        match frame {
            Some(Ok(Some(message))) => self.on_message(message).await,
            Some(Ok(None)) | None => Ok(Flow::End(Ok(()))),
            Some(Err(e)) => {
                let _ = self.refuse(RefusalCode::Protocol, &e.to_string()).await;
                Ok(Flow::End(Err(e.into())))
            }
        }
    }

    async fn on_message(&mut self, message: NodeMessage) -> anyhow::Result<Flow> {
        match message {
            NodeMessage::Heartbeat(hb) => self.on_heartbeat(hb).await?,
            NodeMessage::Ack { generation, error } => self.on_ack(generation, error).await?,
            NodeMessage::Usage(report) if self.version >= proto::USAGE_VERSION => {
                return Ok(self.on_usage(report).await);
            }
            NodeMessage::Event(NodeEvent::TrackChanged(track)) => self.on_track(track).await,
            NodeMessage::Event(NodeEvent::SourceConnected { station_id, path }) => {
                self.on_source(station_id, path, true).await?;
            }
            NodeMessage::Event(NodeEvent::SourceLeft { station_id, path }) => {
                self.on_source(station_id, path, false).await?;
            }
            other => {
                let why = format!("unexpected message {other:?} in a session");
                let _ = self.refuse(RefusalCode::Protocol, &why).await;
                return Ok(Flow::End(Ok(())));
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_heartbeat(&mut self, hb: proto::Heartbeat) -> anyhow::Result<()> {
        let cluster = self.cluster;
        let (coord, store, settings) = (&cluster.coord, &cluster.store, &cluster.settings);
        if !coord.keep_alive(self.lease).await? {
            // The lease lapsed (a long pause): the node is back, say so again.
            self.lease = coord.grant(settings.node_ttl).await?;
            store
                .put_alive(&self.id, &settings.replica, self.lease)
                .await?;
        }
        let desired = self.desired.as_ref();
        observe(&mut self.observed, hb, self.version, desired);
        store
            .put_observed(&self.id, &self.observed, self.lease)
            .await?;
        self.beats += 1;
        if self.beats % 10 == 1 {
            let mut c = cluster.db.conn().await?;
            db::nodes::heartbeat(&mut c, &self.id).await?;
        }
        Ok(())
    }

    async fn on_ack(&mut self, generation: u64, error: Option<String>) -> anyhow::Result<()> {
        if let Some(e) = error {
            tracing::warn!(
                generation,
                "the node could not apply its desired state: {e}"
            );
        }
        self.observed.applied_generation = generation;
        let store = &self.cluster.store;
        store
            .put_observed(&self.id, &self.observed, self.lease)
            .await?;
        Ok(())
    }

    /// Stores a usage report and acknowledges it once stored; a failure ends the session, and
    /// the node sends the report again in the next one.
    async fn on_usage(&mut self, report: proto::UsageReport) -> Flow {
        let seq = report.seq;
        if let Err(e) = store_usage(self.cluster, &self.id, &report).await {
            tracing::error!(seq, "usage report not stored: {e:#}");
            return Flow::End(Err(e));
        }
        match proto::write_frame(&mut self.send, &ControlMessage::UsageAck { seq }).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::End(Err(e.into())),
        }
    }

    async fn on_track(&mut self, track: proto::TrackPlaying) {
        if let Err(why) = track_changed(self.cluster, &self.id, track).await {
            tracing::warn!("a track report was not recorded: {why:#}");
        }
    }

    /// A source connected to or left a mount: the observation says so now, not at the next
    /// heartbeat.
    async fn on_source(
        &mut self,
        station_id: String,
        path: String,
        on_air: bool,
    ) -> anyhow::Result<()> {
        let mounts = &mut self.observed.mounts;
        for m in mounts.iter_mut().filter(|m| m.path == path) {
            m.on_air = on_air;
        }
        if on_air && !mounts.iter().any(|m| m.path == path) {
            mounts.push(proto::MountReport {
                station_id,
                path,
                listeners: 0,
                on_air: true,
            });
        }
        let store = &self.cluster.store;
        store
            .put_observed(&self.id, &self.observed, self.lease)
            .await?;
        Ok(())
    }

    /// Further streams of a session fetch media files by hash, each on a task of its own.
    fn on_media_stream(&self, (send, recv): (Send, Recv)) {
        let cluster = self.cluster.clone();
        let node_id = self.id.clone();
        tokio::spawn(
            async move {
                if let Err(e) = serve_media(&cluster, &node_id, send, recv).await {
                    tracing::warn!("media stream: {e:#}");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// The node's revocation key changed: the session ends if the node is revoked.
    async fn on_revocation_notice(&mut self) -> anyhow::Result<Flow> {
        let revoked = {
            let mut c = self.cluster.db.conn().await?;
            db::nodes::get(&mut c, &self.id)
                .await?
                .is_some_and(|n| n.revoked_at.is_some())
        };
        if !revoked {
            return Ok(Flow::Continue);
        }
        let why = "this node was revoked by an administrator";
        let _ = self.refuse(RefusalCode::Revoked, why).await;
        Ok(Flow::End(Ok(())))
    }
}

/// Takes a heartbeat's observations: host, mounts and (from version 3) what the node's edge
/// refused, each newly refused station or stream logged once. A node speaks only of its own
/// desired state: refusals of anything else are dropped, at most one per station or stream is
/// kept, and each reason is cut to [`MAX_REASON_BYTES`] without control characters.
fn observe(
    observed: &mut Observed,
    hb: proto::Heartbeat,
    version: u32,
    desired: Option<&DesiredState>,
) {
    observed.host = hb.host;
    observed.mounts = hb.mounts;
    if version < proto::REJECTED_VERSION {
        return;
    }
    let rejected = own_rejections(hb.rejected, desired);
    if observed.rejected != rejected {
        for r in rejected.iter().filter(|r| !observed.rejected.contains(r)) {
            tracing::warn!("the node cannot take {}: {}", r.id, r.reason);
        }
        observed.rejected = rejected;
    }
}

/// The most of a rejection's reason that is kept.
pub const MAX_REASON_BYTES: usize = 512;

/// The refusals of a heartbeat that are about the node's own desired state, one per id, with
/// their reasons made safe to store and show.
fn own_rejections(
    sent: Vec<proto::Rejected>,
    desired: Option<&DesiredState>,
) -> Vec<proto::Rejected> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for r in sent {
        if out.len() >= desired.stations.len() + desired.live_streams.len() {
            break;
        }
        if !desired.carries(&r.id) || !seen.insert(r.id.clone()) {
            continue;
        }
        out.push(proto::Rejected {
            reason: clean_reason(&r.reason),
            id: r.id,
        });
    }
    out
}

/// `reason` without control characters, cut to at most [`MAX_REASON_BYTES`] on a character
/// boundary.
fn clean_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// Stores a usage report once per (node, seq): a resend of a stored report changes nothing.
async fn store_usage(
    cluster: &Cluster,
    node_id: &str,
    report: &proto::UsageReport,
) -> anyhow::Result<()> {
    if report.mounts.len() > db::usage::MAX_MOUNTS_PER_REPORT {
        anyhow::bail!(
            "a usage report of {} mounts is more than the {} a report may carry",
            report.mounts.len(),
            db::usage::MAX_MOUNTS_PER_REPORT
        );
    }
    if report.turn.len() > db::usage::MAX_TURN_TENANTS_PER_REPORT {
        anyhow::bail!(
            "a usage report of TURN usage of {} tenants is more than the {} a report may carry",
            report.turn.len(),
            db::usage::MAX_TURN_TENANTS_PER_REPORT
        );
    }
    if report.seq == 0 {
        anyhow::bail!("usage report sequence numbers start at 1");
    }
    let stored: anyhow::Result<bool> = async {
        let mut tx = cluster.db.begin().await?;
        // Each report is vetted against what the node already reported: one at a time.
        db::nodes::lock(&mut tx, node_id).await?;
        // What the node could not have metered is refused or cut down (see `usage_vet`); the
        // rest is stored, and the report acknowledged, so the node's spool drains.
        let vetted = vet_usage(cluster, &mut tx, node_id, report).await?;
        for (m, why) in &vetted.refused {
            cluster.refusals.refuse("usage", || {
                format!(
                    "node {node_id} reported usage of {:.64} ({:.128}) in report {}: {why}",
                    m.station_id, m.mount, report.seq
                )
            });
        }
        for (m, why) in &vetted.clamped {
            cluster.refusals.refuse("usage_clamped", || {
                format!(
                    "node {node_id} reported {} listener ms, peak {} of {:.64} ({:.128}) in \
                     report {}: {why}",
                    m.listener_ms, m.peak_listeners, m.station_id, m.mount, report.seq
                )
            });
        }
        let turn = vet_turn(&mut tx, node_id, report).await?;
        for (kind, list) in [
            ("turn_usage", &turn.refused),
            ("turn_usage_clamped", &turn.clamped),
        ] {
            for (t, why) in list {
                cluster.refusals.refuse(kind, || {
                    format!(
                        "node {node_id} reported {} relayed TURN bytes of tenant {:.64} in \
                         report {}: {why}",
                        t.relayed_bytes, t.tenant_id, report.seq
                    )
                });
            }
        }
        let report = proto::UsageReport {
            period_start_ms: vetted.period_start_ms,
            mounts: vetted.kept,
            turn: turn.kept,
            ..report.clone()
        };
        let fresh = db::usage::store(&mut tx, node_id, &report, crate::db::now_ms()).await?;
        tx.commit().await?;
        Ok(fresh)
    }
    .await;
    let m = &cluster.metrics;
    let fresh = match stored {
        Ok(f) => f,
        Err(e) => {
            m.usage_reports.with_label_values(&["failed"]).inc();
            return Err(e);
        }
    };
    m.usage_reports
        .with_label_values(&[if fresh { "stored" } else { "duplicate" }])
        .inc();
    if fresh {
        let lag = crate::db::now_ms().saturating_sub(report.period_end_ms);
        m.usage_lag.set(lag as f64 / 1000.0);
    }
    if !fresh {
        tracing::debug!(
            "usage report {} of node {node_id} was already stored",
            report.seq
        );
    }
    Ok(())
}

/// Vets a usage report against what the node carried in its period (the `carriage` record),
/// its desired state, the catalogue, the node's capacity and what it already reported.
async fn vet_usage(
    cluster: &Cluster,
    conn: &mut db::Conn,
    node_id: &str,
    report: &proto::UsageReport,
) -> anyhow::Result<usage_vet::Vetted> {
    let window = match usage_vet::period(report, crate::db::now_ms()) {
        Ok(w) => w,
        Err(why) => {
            return Ok(usage_vet::Vetted {
                period_start_ms: report.period_start_ms.min(report.period_end_ms),
                refused: report
                    .mounts
                    .iter()
                    .map(|m| (m.clone(), why.clone()))
                    .collect(),
                ..usage_vet::Vetted::default()
            });
        }
    };
    let carried = db::carriage::carried_during(conn, node_id, window.0, window.1).await?;
    let capacity = db::nodes::get(conn, node_id)
        .await?
        .map_or(0, |n| u64::from(n.capacity_listeners));
    let desired = desired_of(cluster, node_id).await?.unwrap_or_default();
    let view = cluster.view.get();
    let mut subjects = std::collections::BTreeMap::new();
    for id in report.mounts.iter().map(|m| &m.station_id) {
        if subjects.contains_key(id) || !carried.contains(id) {
            continue;
        }
        subjects.insert(
            id.clone(),
            subject(id, &desired, view.station(id), capacity),
        );
    }
    let reported =
        db::usage::reported_during(conn, node_id, report.seq, window.0, window.1).await?;
    Ok(usage_vet::mounts(
        report, window, &carried, &subjects, &reported,
    ))
}

/// Vets a usage report's relayed TURN bytes (see `usage_vet::turn`): the node must have run TURN
/// when the report's period began (advertise TURN URLs now, or have stopped after that), each
/// tenant must exist or have existed.
async fn vet_turn(
    conn: &mut db::Conn,
    node_id: &str,
    report: &proto::UsageReport,
) -> anyhow::Result<usage_vet::TurnVetted> {
    if report.turn.is_empty() {
        return Ok(usage_vet::TurnVetted::default());
    }
    let window = usage_vet::period(report, crate::db::now_ms());
    // A report spooled while the relay ran is believed after the node turned TURN off.
    let start = window.as_ref().map_or(u64::MAX, |w| w.0);
    let runs_turn = db::nodes::ran_turn_at(conn, node_id, start)
        .await?
        .unwrap_or(false);
    let tenants =
        db::usage::known_tenants(conn, report.turn.iter().map(|t| t.tenant_id.as_str())).await?;
    let reported = match &window {
        Ok(w) => db::usage::turn_reported_during(conn, node_id, report.seq, w.0, w.1).await?,
        Err(_) => Default::default(),
    };
    Ok(usage_vet::turn(
        report, window, runs_turn, &tenants, &reported,
    ))
}

/// What is known of a station or live stream a usage report names: its mounts from the
/// catalogue and the node's desired state, its listener limit from the catalogue (else the
/// node's capacity).
fn subject(
    id: &str,
    desired: &DesiredState,
    catalog: Option<&std::sync::Arc<crate::db::cluster::CatalogStation>>,
    capacity: u64,
) -> usage_vet::Subject {
    let spec = desired.stations.iter().find(|s| s.station_id == id);
    let stream = desired.live_streams.iter().any(|l| l.stream_id == id);
    let mut mounts: Option<std::collections::BTreeSet<String>> = None;
    if let Some(c) = catalog.filter(|c| c.id == id) {
        mounts
            .get_or_insert_default()
            .extend(c.mounts.iter().map(|m| m.0.clone()));
    }
    if let Some(s) = spec {
        let live = s.autodj.iter().filter_map(|a| a.live_mount.clone());
        mounts
            .get_or_insert_default()
            .extend(s.mounts.iter().map(|m| m.path.clone()).chain(live));
    }
    if stream {
        mounts
            .get_or_insert_default()
            .insert(usage_vet::STREAM_MOUNT.to_string());
    }
    let limit = catalog
        .filter(|c| c.id == id && c.max_listeners > 0)
        .map_or(capacity, |c| c.max_listeners);
    usage_vet::Subject {
        mounts,
        max_listeners: limit,
        stream,
    }
}

/// Records what a node says a station plays: into the song history (once per start) and as the
/// station's now-playing key every replica's view reads.
async fn track_changed(
    cluster: &Cluster,
    node_id: &str,
    mut track: proto::TrackPlaying,
) -> anyhow::Result<()> {
    if track.station_id.is_empty() || track.station_id.len() > 64 {
        anyhow::bail!("a track report must name its station");
    }
    // A node speaks only for the stations it carries.
    if !desired_of(cluster, node_id)
        .await?
        .is_some_and(|d| d.carries(&track.station_id))
    {
        cluster.refusals.refuse("track", || {
            format!(
                "node {node_id} reported a track of {:.64}, which it does not carry",
                track.station_id
            )
        });
        return Ok(());
    }
    // Titles come from DJs' source clients: keep them to a sane size.
    for text in [&mut track.title, &mut track.artist, &mut track.track_title] {
        if text.len() > 1024 {
            let mut end = 1024;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
    }
    {
        let mut tx = cluster.db.begin().await?;
        // A request the station does not have is not one (the play is recorded without it).
        if let Some(id) = track.request_id.clone() {
            let at = i64::try_from(track.started_at_ms).unwrap_or(i64::MAX);
            if id.len() > 64
                || !db::requests::mark_played(&mut tx, &track.station_id, &id, at).await?
            {
                track.request_id = None;
            }
        }
        db::history::record(&mut tx, node_id, &track).await?;
        tx.commit().await?;
    }
    if track
        .next_request_id
        .as_ref()
        .is_some_and(|id| id.len() > 64)
    {
        track.next_request_id = None;
    }
    cluster.store.put_now_playing(&track).await?;
    Ok(())
}

/// The node's desired state as the leader last wrote it (None before the first).
async fn desired_of(cluster: &Cluster, node_id: &str) -> anyhow::Result<Option<DesiredState>> {
    Ok(cluster.store.desired(node_id).await?)
}

/// Answers one media request: the file with the asked hash, streamed from the media store, if
/// the node's desired state names it (a node gets the media of what it plays, nothing else).
async fn serve_media(
    cluster: &Cluster,
    node_id: &str,
    mut send: Send,
    mut recv: Recv,
) -> anyhow::Result<()> {
    let req: proto::MediaRequest =
        tokio::time::timeout(Duration::from_secs(10), proto::read_frame(&mut recv))
            .await
            .context("no media request within 10 s")??
            .context("the media stream closed before its request")?;
    let named = desired_of(cluster, node_id)
        .await?
        .is_some_and(|d| d.media().contains_key(&req.sha256));
    if !named {
        cluster.refusals.refuse("media", || {
            format!(
                "node {node_id} asked for media file {:.64} that its desired state does not name",
                req.sha256
            )
        });
    }
    // Refused like a missing file: the node learns nothing about what the store holds.
    let found = match cluster.blob_path(&req.sha256).filter(|_| named) {
        Some(path) => tokio::fs::File::open(&path).await.ok().map(|f| (f, path)),
        None => None,
    };
    let Some((mut file, path)) = found else {
        proto::write_frame(
            &mut send,
            &proto::MediaReply::NotFound {
                message: format!("the control plane has no media file {}", req.sha256),
            },
        )
        .await?;
        send.finish()?;
        return Ok(());
    };
    let size = file
        .metadata()
        .await
        .with_context(|| format!("{}", path.display()))?
        .len();
    proto::write_frame(&mut send, &proto::MediaReply::Found { size_bytes: size }).await?;
    tokio::io::copy(&mut file, &mut send).await?;
    send.finish()?;
    // Wait for the node to have read everything before the stream is dropped.
    let _ = send.stopped().await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rejected(id: &str, reason: &str) -> proto::Rejected {
        proto::Rejected {
            id: id.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_node_reports_refusals_only_of_its_own_state_and_briefly() {
        let desired: DesiredState = serde_json::from_value(serde_json::json!({
            "generation": 3,
            "stations": [{
                "station_id": "mine", "slug": "mine", "name": "Mine", "role": "origin",
                "mounts": [], "max_listeners": null
            }],
        }))
        .unwrap();
        let long = format!("bad\n\u{1b}[31m{}", "é".repeat(1000));
        let sent = vec![
            rejected("victim", "forged"),
            rejected("mine", &long),
            rejected("mine", "again"),
        ];
        let kept = own_rejections(sent.clone(), Some(&desired));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id, "mine");
        assert!(kept[0].reason.len() <= MAX_REASON_BYTES);
        assert!(kept[0].reason.starts_with("bad[31m"), "{}", kept[0].reason);
        assert!(!kept[0].reason.chars().any(char::is_control));
        // Nothing is believed before the node has a desired state.
        assert!(own_rejections(sent, None).is_empty());
    }
}
