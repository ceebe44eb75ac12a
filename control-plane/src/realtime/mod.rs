//! The realtime gateway: the Socket.io v4 protocol (socketioxide) on the control plane's HTTP
//! server at `/socket.io/`, for a tenant's end users. A client connects with its user token
//! (`auth: { token }`); every socket of a user joins that user's room, so an event for a user
//! reaches all their devices. The database is the truth: state-changing events are acknowledged
//! after the commit, and what a client missed while away is in the REST history.
//!
//! On PostgreSQL every replica serves the gateway and events fan out between replicas through
//! LISTEN/NOTIFY (socketioxide-postgres); on SQLite (one replica) the in-process adapter. Each
//! replica heartbeats its row and lists its connected users in the database, so presence holds
//! over replicas, and the users of a replica that died are swept offline by the others.
//!
//! Every durable event a user is sent is also stored in their feed, with an offset, in the
//! change's transaction: a client that reconnects with the last offset it saw gets what it
//! missed (`recovery`).
//!
//! A handshake is admitted only while the tenant's users hold fewer sockets than its plan's
//! `max_realtime_connections` over every live replica (counted in the presence tables, under
//! the tenant's row lock). The connection time of every socket is metered (`meter`) and written
//! to `realtime_usage` every `realtime.usage_flush_secs` and at shutdown, for billing.
//!
//! Layers: `protocol` (payloads and acks, pure) ← `limits` (token buckets) ← `presence`
//! (who is online on this replica) and `meter` (connection time) ← `recovery` (the feeds,
//! offsets and replays) ← `moderation` (edits, deletes, blocks, reports) and `notify`
//! (notification events) ← `events` (the handlers) ← this module (the `Gateway`); `slow`
//! (sockets that do not read) beside them.

mod calls;
mod events;
mod limits;
mod meter;
mod moderation;
mod notify;
mod peers;
mod presence;
pub mod protocol;
pub mod recovery;
mod slow;
mod stream_chat;
mod tips;
mod writer;

use crate::db::{self, Backend, Db};
use crate::metrics::RealtimeMetrics;
use crate::users::{self, Principal};
use limits::Limits;
use meter::Meter;
use presence::Presence;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Sid;
use socketioxide_postgres::{PostgresAdapterConfig, PostgresAdapterCtr, SqlxAdapter};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use stream_chat::stream_room;

/// How often each replica tells its sockets in streams' rooms the streams' viewer counts.
pub const VIEWER_COUNT_EVERY: Duration = Duration::from_secs(5);

/// A live stream's audience as the cluster sees it, by stream id and slug: viewers now, and
/// whether it is on the air.
pub type Audience = Arc<dyn Fn(&str, &str) -> (u64, bool) + Send + Sync>;

/// The largest Socket.io packet a client may send; a bigger one closes its connection (it is
/// not a client of ours). Every valid event fits in a small fraction of it.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Packets queued for one socket before it counts as not reading (see `slow`).
const SOCKET_BUFFER: usize = 256;

/// How long a replay waits for a reconnecting socket to make room in its queue before it is
/// left to `slow`.
const REPLAY_STALL: Duration = Duration::from_secs(5);

/// How often a replica heartbeats and sweeps, and how old a heartbeat makes a replica dead: its
/// users are offline for everyone within `DEAD_AFTER` + `HEARTBEAT` of its death.
const HEARTBEAT: Duration = Duration::from_secs(2);
const DEAD_AFTER: Duration = Duration::from_secs(6);

/// A socket admitted this long ago that is not in the namespace never got there (its client
/// went during the handshake, and socketioxide runs no disconnect handler for it): it is
/// counted gone. Far longer than the instant between the middleware and the namespace.
const NEVER_ARRIVED_AFTER_MS: i64 = 2_000;

type PgAdapter = SqlxAdapter<socketioxide::adapter::Emitter>;

/// Replicas that heartbeat at or after this time (unix milliseconds) are alive.
fn alive_since() -> i64 {
    db::now_millis() - i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(0)
}

/// Who a socket acts as; set by the auth middleware before the socket joins the namespace.
#[derive(Debug, Clone)]
pub struct Session {
    pub tenant_id: String,
    pub user_id: String,
}

impl Session {
    /// The room every socket of this user joins.
    pub fn room(&self) -> String {
        user_room(&self.tenant_id, &self.user_id)
    }
}

/// The room of a tenant's user. Tenant ids hold no ':', so the room names no one else.
pub fn user_room(tenant_id: &str, user_id: &str) -> String {
    format!("u:{tenant_id}:{user_id}")
}

/// The room every socket of a tenant's users joins.
fn tenant_room(tenant_id: &str) -> String {
    format!("t:{tenant_id}")
}

/// The socket's tenant, checked: still there, and its plan has the feature (`what`, its name
/// in the plan, and how to read it), else the refusal that says which.
async fn featured_tenant(
    conn: &mut db::Conn,
    session: &Session,
    (what, name, has): (&str, &str, fn(&onda_shared::api::PlanFeatures) -> bool),
) -> Result<onda_shared::api::Tenant, protocol::Refusal> {
    use protocol::{Refusal, stored};
    let tenant = db::tenants::get(conn, &session.tenant_id)
        .await
        .map_err(|e| stored(&e))?
        .ok_or_else(|| Refusal::new("unauthorized", "This connection's tenant is gone."))?;
    let plan = db::plans::get(conn, &tenant.plan_id)
        .await
        .map_err(|e| stored(&e))?;
    if !plan.is_some_and(|p| has(&p.features)) {
        return Err(Refusal::new(
            "forbidden",
            format!(
                "The tenant's plan {:?} does not include {what} (the plan feature `{name}`).",
                tenant.plan_id
            ),
        ));
    }
    Ok(tenant)
}

/// What every handler shares.
pub(crate) struct Hub {
    db: Db,
    /// This replica's id in the presence tables (new at every start).
    replica: String,
    metrics: RealtimeMetrics,
    /// Tips over the gateway are ledger transactions, counted with the API's.
    ledger: crate::metrics::LedgerMetrics,
    presence: Presence,
    limits: Limits,
    typing: events::TypingTimers,
    /// Where attachments' blobs are: deleting the last message that carries one removes it.
    media: Arc<crate::media::MediaStore>,
    /// The server's TCP connections, to cut one that does not read.
    connections: crate::connections::Connections,
    /// Connection time of this replica's sockets, until the next flush.
    meter: Meter<Sid>,
    /// Where sent messages are stored, several to a transaction under load.
    writer: writer::Writer,
    /// Where tips are written (over the gateway and the API), several to a transaction.
    tips: crate::tips::Writer,
    /// Whether other replicas serve the gateway (else emits stay on this one).
    peers: peers::Peers,
    /// Which streams' rooms this replica's sockets are in.
    rooms: stream_chat::Rooms,
    /// Streams' viewer counts (none without a cluster: every stream is off the air).
    audience: OnceLock<Audience>,
}

impl Hub {
    /// A stream's viewers now and whether it is on the air.
    fn audience(&self, stream_id: &str, slug: &str) -> (u64, bool) {
        self.audience
            .get()
            .map_or((0, false), |a| a(stream_id, slug))
    }

    /// An emit as it should go: to every replica, or only to this one's sockets when no other
    /// replica serves (see [`peers`]).
    fn scoped<A: Adapter>(
        &self,
        op: socketioxide::operators::BroadcastOperators<A>,
    ) -> socketioxide::operators::BroadcastOperators<A> {
        if self.peers.alone(db::now_millis()) {
            op.local()
        } else {
            op
        }
    }
}

/// The Socket.io server, over the adapter the database allows.
#[derive(Clone)]
enum Io {
    Local(SocketIo<LocalAdapter>),
    Postgres(SocketIo<PgAdapter>),
}

/// The tower layer that serves the gateway in front of the API router.
pub enum GatewayLayer {
    Local(SocketIoLayer<LocalAdapter>),
    Postgres(SocketIoLayer<PgAdapter>),
}

impl GatewayLayer {
    pub fn wrap(self, router: axum::Router) -> axum::Router {
        let router = match self {
            GatewayLayer::Local(l) => router.layer(l),
            GatewayLayer::Postgres(l) => router.layer(l),
        };
        // Outermost: before the gateway sees the request.
        router.layer(axum::middleware::map_request(detach_head))
    }
}

/// Where socketioxide serves (its default).
const SOCKET_IO_PATH: &str = "/socket.io";

/// The gateway's requests with a request head of their own. socketioxide keeps every socket's
/// request head (`req_parts`) for the socket's life, and hyper parses a head into slices of its
/// connection's read buffer (8–16 KiB), so each connected socket held that whole buffer: half
/// of a connection's memory in bench-realtime (heaptrack: 16 KiB of 32, one buffer per socket).
/// Copying the few hundred bytes of the URI and headers lets the buffer go. (Public for the
/// benchmarks' socketioxide peer, which measures the engine as Onda configures it.)
pub async fn detach_head(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.uri().path().starts_with(SOCKET_IO_PATH) {
        return req;
    }
    if let Ok(uri) = req.uri().to_string().parse::<axum::http::Uri>() {
        // axum's router put a clone of the original in the extensions, which socketioxide keeps
        // too.
        if let Some(original) = req.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
            original.0 = uri.clone();
        }
        *req.uri_mut() = uri;
    }
    let headers = std::mem::take(req.headers_mut());
    let mut own = axum::http::HeaderMap::with_capacity(headers.len());
    for (name, value) in &headers {
        let name = axum::http::HeaderName::from_bytes(name.as_str().as_bytes())
            .unwrap_or_else(|_| name.clone());
        let mut copy =
            axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        own.append(name, copy);
    }
    *req.headers_mut() = own;
    req
}

/// The gateway's handle: the Socket.io server and its state.
#[derive(Clone)]
pub struct Gateway {
    io: Io,
    hub: Arc<Hub>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("replica", &self.hub.replica)
            .finish_non_exhaustive()
    }
}

fn builder(hub: &Arc<Hub>) -> socketioxide::SocketIoBuilder {
    engine().with_state(hub.clone())
}

/// socketioxide as the gateway configures it: its limits, queue, buffers and heartbeat. Public
/// for the benchmarks' socketioxide peer, which measures the engine alone.
pub fn engine() -> socketioxide::SocketIoBuilder {
    SocketIo::builder()
        .max_payload(MAX_PACKET_BYTES as u64)
        .ws_max_message_size(MAX_PACKET_BYTES)
        .ws_max_frame_size(MAX_PACKET_BYTES)
        .max_buffer_size(SOCKET_BUFFER)
        // Frames are small here (a packet is at most MAX_PACKET_BYTES; most are under 1 KiB);
        // a larger one grows the buffer while it is read. 4 KiB by default, per socket.
        .ws_read_buffer_size(1024)
        .ping_interval(Duration::from_secs(20))
        .ping_timeout(Duration::from_secs(10))
}

impl Gateway {
    /// Starts the gateway over `db` (`cfg.database_url` names the same database: PostgreSQL
    /// gets a LISTEN connection of its own for the fan-out), its heartbeat and its metering.
    pub async fn start(
        db: Db,
        cfg: &crate::config::Validated,
        (metrics, ledger): (RealtimeMetrics, crate::metrics::LedgerMetrics),
        media: Arc<crate::media::MediaStore>,
        connections: crate::connections::Connections,
    ) -> anyhow::Result<(Gateway, GatewayLayer)> {
        let database_url = cfg.database_url.as_str();
        let writer = writer::Writer::start(
            db.clone(),
            metrics.message_batch.clone(),
            cfg.public_url.as_deref().map(Arc::from),
        );
        let tips = crate::tips::Writer::start(db.clone(), ledger.tip_batch.clone());
        let hub = Arc::new(Hub {
            media,
            connections,
            replica: crate::secrets::new_id("rpl"),
            db: db.clone(),
            metrics,
            ledger,
            presence: Presence::default(),
            limits: Limits::default(),
            typing: events::TypingTimers::default(),
            meter: Meter::default(),
            writer,
            tips,
            peers: peers::Peers::default(),
            rooms: stream_chat::Rooms::default(),
            audience: OnceLock::new(),
        });
        let (io, layer) = match db.backend() {
            Backend::Sqlite => {
                let (layer, io) = builder(&hub).build_layer();
                io.ns("/", connected.with(authenticate));
                (Io::Local(io), GatewayLayer::Local(layer))
            }
            Backend::Postgres => {
                let pool = socketioxide_postgres::drivers::sqlx::sqlx_client::PgPool::connect_lazy(
                    database_url,
                )?;
                let config = PostgresAdapterConfig::new()
                    .with_hb_interval(HEARTBEAT)
                    .with_hb_timeout(DEAD_AFTER)
                    .with_table_name("realtime_attachments");
                let ctr = PostgresAdapterCtr::new_with_sqlx_config(pool, config);
                let (layer, io) = builder(&hub).with_adapter::<PgAdapter>(ctr).build_layer();
                io.ns("/", connected.with(authenticate))
                    .await
                    .map_err(|e| anyhow::anyhow!("the gateway's PostgreSQL fan-out: {e}"))?;
                (Io::Postgres(io), GatewayLayer::Postgres(layer))
            }
        };
        let gateway = Gateway {
            io,
            hub,
            stop: CancellationToken::new(),
        };
        if db.backend() == Backend::Postgres {
            // Others hear of this replica before it accepts a connection; this one hears of
            // others from its LISTEN (and its beats).
            gateway.announce().await;
            tokio::spawn(gateway.clone().listen_for_peers(database_url.to_string()));
        }
        gateway.beat().await;
        tokio::spawn(gateway.clone().heartbeat());
        tokio::spawn(gateway.clone().police());
        tokio::spawn(gateway.clone().metering(cfg.realtime.usage_flush));
        tokio::spawn(gateway.clone().push_viewers());
        tokio::spawn(gateway.clone().call_clock());
        Ok((gateway, layer))
    }

    /// Where streams' viewer counts come from (the cluster's view), once.
    pub fn set_audience(&self, audience: Audience) {
        let _ = self.hub.audience.set(audience);
    }

    /// Every [`VIEWER_COUNT_EVERY`], each stream whose room has sockets on this replica gets
    /// `viewer-count` there. Each replica tells its own sockets: no fan-out between replicas.
    async fn push_viewers(self) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(VIEWER_COUNT_EVERY) => {}
            }
            for ((tenant, stream), slug) in self.hub.rooms.streams() {
                let (viewers, live) = self.hub.audience(&stream, &slug);
                let body =
                    serde_json::json!({ "streamId": stream, "viewers": viewers, "live": live });
                let room = stream_room(&tenant, &stream);
                let sent = match &self.io {
                    Io::Local(io) => io.to(room).local().emit("viewer-count", &body).await,
                    Io::Postgres(io) => io.to(room).local().emit("viewer-count", &body).await,
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "viewer-count not delivered to every socket");
                }
            }
        }
    }

    /// Sends an event to everyone in a stream's room, on every replica (a tip given over REST
    /// shows in the chat).
    pub async fn to_stream<T: serde::Serialize + ?Sized>(
        &self,
        tenant_id: &str,
        stream_id: &str,
        event: &str,
        body: &T,
    ) {
        self.emit_to(vec![stream_room(tenant_id, stream_id)], event, body)
            .await;
    }

    /// Every `every`: forgets sockets that never reached the namespace, then flushes.
    async fn metering(self, every: Duration) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(every) => {
                    self.reap().await;
                    self.flush().await;
                }
            }
        }
    }

    /// Adds the connection time accrued on this replica (open sockets up to now) to
    /// `realtime_usage`, in one transaction; a batch that fails is kept for the next flush.
    /// A replica killed without a shutdown loses what accrued since its last flush: at most one
    /// flush interval of each of its sockets' connection time goes unbilled.
    async fn flush(&self) {
        let batch = self.hub.meter.take(db::now_millis());
        if batch.is_empty() {
            return;
        }
        let written = async {
            let mut tx = self.hub.db.begin().await?;
            // In key order on every replica, so two replicas' flushes lock the same rows in the
            // same order and never deadlock.
            for ((tenant, day), ms) in &batch {
                db::realtime_usage::add(&mut tx, tenant, *day, *ms, 0).await?;
            }
            tx.commit().await
        };
        match written.await {
            Ok(()) => self.hub.metrics.usage_flushed(Some(batch.values().sum())),
            Err(e) => {
                tracing::warn!(error = %e, "realtime: cannot write the metered connection time; kept for the next flush");
                self.hub.metrics.usage_flushed(None);
                self.hub.meter.put_back(batch);
            }
        }
    }

    /// Sockets admitted a while ago that are not in the namespace are counted gone.
    async fn reap(&self) {
        for sid in self
            .hub
            .meter
            .opened_before(db::now_millis() - NEVER_ARRIVED_AFTER_MS)
        {
            // No namespace: the server is closing, and closes every socket itself.
            let here = match &self.io {
                Io::Local(io) => io.of("/").map(|ns| ns.get_socket(sid).is_some()),
                Io::Postgres(io) => io.of("/").map(|ns| ns.get_socket(sid).is_some()),
            };
            match here {
                None => return,
                Some(true) => continue,
                Some(false) => {}
            }
            if let Some((session, true)) = socket_gone(&self.hub, sid).await
                && let Some(a) =
                    events::presence_change(&self.hub, &session.tenant_id, &session.user_id, false)
                        .await
            {
                self.emit_to(a.rooms, a.event, &a.body).await;
            }
        }
    }

    /// Tells every replica listening that this one serves the gateway (see [`peers`]).
    async fn announce(&self) {
        let said = async {
            let mut conn = self.hub.db.conn().await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(peers::CHANNEL)
                .bind(&self.hub.replica)
                .execute(&mut *conn)
                .await
        };
        if let Err(e) = said.await {
            // The others learn of it at their next beat instead.
            tracing::warn!(error = %e, "realtime: cannot announce this replica");
        }
    }

    /// Keeps a LISTEN on the replicas' channel: an announcement of another replica ends this
    /// one's local-only emits at once. While the LISTEN is down, emits go to every replica.
    async fn listen_for_peers(self, url: String) {
        let peers = &self.hub.peers;
        loop {
            let listened = async {
                let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                listener.listen(peers::CHANNEL).await?;
                // Replicas that announced themselves while this one was not listening.
                self.check_peers(&mut *self.hub.db.conn().await?).await?;
                peers.set_listening(true);
                while let Some(n) = listener.try_recv().await? {
                    if n.payload() != self.hub.replica {
                        peers.saw_others(db::now_millis(), DEAD_AFTER);
                    }
                }
                // The connection was lost: announcements may be missed until it is back.
                Ok::<(), sqlx::Error>(())
            };
            let ended = tokio::select! {
                () = self.stop.cancelled() => return,
                ended = listened => ended,
            };
            peers.set_listening(false);
            if let Err(e) = ended {
                tracing::warn!(error = %e, "realtime: the replicas' LISTEN failed; emits go to every replica until it is back");
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Reads whether another replica beat lately.
    async fn check_peers(&self, conn: &mut db::Conn) -> Result<(), sqlx::Error> {
        if db::presence::others_alive(conn, &self.hub.replica, alive_since()).await? {
            self.hub.peers.saw_others(db::now_millis(), DEAD_AFTER);
        }
        Ok(())
    }

    /// One heartbeat of this replica, then a sweep of replicas that stopped beating.
    async fn beat(&self) {
        let swept = async {
            let mut conn = self.hub.db.conn().await?;
            let now = db::now_millis();
            db::presence::heartbeat(&mut conn, &self.hub.replica, now).await?;
            self.check_peers(&mut conn).await?;
            let window = i64::try_from(recovery::WINDOW.as_millis()).unwrap_or(i64::MAX);
            db::realtime_feed::prune(&mut conn, now - window).await?;
            db::presence::sweep(&mut conn, alive_since()).await
        };
        let gone = match swept.await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::warn!(error = %e, "realtime: heartbeat");
                return;
            }
        };
        for (tenant, user) in gone {
            if !self.online(&tenant, &user).await
                && let Some(a) = events::presence_change(&self.hub, &tenant, &user, false).await
            {
                self.emit_to(a.rooms, a.event, &a.body).await;
            }
        }
    }

    async fn heartbeat(self) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(HEARTBEAT) => self.beat().await,
            }
        }
    }

    /// The writer of tips, which the API's `POST /v1/me/tips` shares with `send-tip`.
    pub fn tips(&self) -> &crate::tips::Writer {
        &self.hub.tips
    }

    /// Sends events recorded in their users' feeds ([`recovery::record`], in the transaction
    /// of the change) to every device of their users, on every replica, after the commit (a
    /// notification the API created). A user with no connection misses nothing: a reconnect
    /// replays it, and it is in the REST lists.
    pub async fn send(&self, tenant_id: &str, recorded: &[recovery::Recorded]) {
        for r in recorded {
            let rooms = vec![user_room(tenant_id, &r.user_id)];
            // Not to the sockets that were replayed it (`recovery::skip_room`).
            let except = vec![r.skip_room(tenant_id)];
            self.emit_except(rooms, except, r.event, &r.args()).await;
        }
    }

    async fn emit_to<T: serde::Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        event: &str,
        body: &T,
    ) {
        self.emit_except(rooms, Vec::new(), event, body).await;
    }

    async fn emit_except<T: serde::Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        except: Vec<String>,
        event: &str,
        body: &T,
    ) {
        let sent = match &self.io {
            Io::Local(io) => io.to(rooms).except(except).emit(event, body).await,
            Io::Postgres(io) => {
                let to = io.to(rooms).except(except);
                self.hub.scoped(to).emit(event, body).await
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "{event} not delivered to every socket");
        }
    }

    /// Drops the sockets of this replica that do not read (`slow`), until the gateway closes.
    async fn police(self) {
        let mut strikes = slow::Strikes::default();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(slow::CHECK_EVERY) => {}
            }
            match &self.io {
                Io::Local(io) => drop_slow(&self.hub, io, &mut strikes),
                Io::Postgres(io) => drop_slow(&self.hub, io, &mut strikes),
            }
        }
    }

    /// Ends every connection of a user at once, on every replica (the user was deleted).
    pub async fn disconnect_user(&self, tenant_id: &str, user_id: &str) {
        self.disconnect_room(user_room(tenant_id, user_id)).await;
    }

    /// Ends every connection of a tenant's users, on every replica (the tenant was suspended
    /// or deleted: its users' tokens are refused from now on).
    pub async fn disconnect_tenant(&self, tenant_id: &str) {
        self.disconnect_room(tenant_room(tenant_id)).await;
    }

    async fn disconnect_room(&self, room: String) {
        let done = match &self.io {
            Io::Local(io) => io.to(room.clone()).disconnect().await,
            Io::Postgres(io) => io.to(room.clone()).disconnect().await,
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "cannot disconnect the sockets of {room}");
        }
    }

    /// Whether the user has a connection to a live replica.
    /// Replicas that heartbeat at or after this time (unix milliseconds) are alive: a user
    /// connected to one of them is online.
    pub fn alive_since(&self) -> i64 {
        alive_since()
    }

    async fn online(&self, tenant_id: &str, user_id: &str) -> bool {
        let alive_since = alive_since();
        match self.hub.db.conn().await {
            Ok(mut conn) => db::presence::online(&mut conn, tenant_id, user_id, alive_since)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "realtime: presence");
                    false
                }),
            Err(_) => false,
        }
    }

    /// Closes every connection, writes the metered connection time and takes this replica out
    /// of the presence tables (the server is shutting down).
    pub async fn close(&self) {
        self.stop.cancel();
        match &self.io {
            Io::Local(io) => io.close().await,
            Io::Postgres(io) => io.close().await,
        }
        // Sockets whose disconnect handler has not run yet are counted up to now.
        self.flush().await;
        if let Ok(mut conn) = self.hub.db.conn().await
            && let Err(e) = db::presence::retire(&mut conn, &self.hub.replica).await
        {
            tracing::warn!(error = %e, "realtime: cannot retire this replica");
        }
    }
}

/// One check of this replica's sockets: those whose queue stayed full leave their rooms (so
/// nothing more is queued for them) and have their connection cut. A socket in its replay is
/// not checked: the replay fills its queue on purpose and waits for room.
fn drop_slow<A: Adapter>(hub: &Hub, io: &SocketIo<A>, strikes: &mut slow::Strikes) {
    let sockets = io.sockets();
    let checked = sockets
        .iter()
        .filter(|s| s.extensions.get::<Replaying>().is_none())
        .map(|s| (s.id, slow::is_full(s)));
    for sid in strikes.check(checked.collect::<Vec<_>>()) {
        let Some(s) = sockets.iter().find(|s| s.id == sid) else {
            continue;
        };
        hub.metrics.slow_clients.inc();
        s.leave_all();
        let peer = s
            .req_parts()
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        let user = s.extensions.get::<Session>().map(|s| s.user_id);
        let cut = peer.is_some_and(|p| hub.connections.cut(p));
        tracing::info!(%sid, ?user, ?peer, cut, "realtime: dropped a client that does not read");
    }
}

/// Marks a socket whose replay is under way.
#[derive(Debug, Clone, Copy)]
struct Replaying;

/// Emits one replayed event, waiting (up to [`REPLAY_STALL`] for the whole replay) while the
/// socket's queue is full: a reconnecting client reads, it only got a burst. False when the
/// socket is gone or did not make room in time.
async fn emit_paced<A: Adapter>(
    s: &SocketRef<A>,
    deadline: tokio::time::Instant,
    event: &str,
    payload: &Value,
    offset: &recovery::Offset,
) -> bool {
    let args = (payload, offset.to_string());
    loop {
        match s.emit(event, &args) {
            Ok(()) => return true,
            Err(socketioxide::SendError::Socket(
                socketioxide::SocketError::InternalChannelFull,
            )) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "realtime: a replay stopped");
                return false;
            }
        }
    }
}

/// Emits replayed events in order; false if one could not be sent (the rest are not).
async fn replay_to<A: Adapter>(
    s: &SocketRef<A>,
    deadline: tokio::time::Instant,
    events: &[(String, Value, recovery::Offset)],
) -> bool {
    for (event, payload, offset) in events {
        if !emit_paced(s, deadline, event, payload, offset).await {
            return false;
        }
    }
    true
}

/// Why a connection is refused: told to the client as `connect_error`'s message.
#[derive(Debug, thiserror::Error)]
enum ConnectRefused {
    #[error(
        "Connect with the user token in the handshake: io(url, {{ auth: {{ token: USER_TOKEN }} }})."
    )]
    NoToken,
    /// The token check's refusal: its metric label and its sentence.
    #[error("{1}")]
    Token(&'static str, String),
    #[error("The server could not check the token; try again.")]
    Unavailable,
    #[error("The tenant's plan {0:?} does not include messaging (the plan feature `messaging`).")]
    NoMessaging(String),
    #[error(
        "The tenant's plan {plan:?} allows {limit} realtime connections at once (the plan limit \
         `max_realtime_connections`) and all are in use; try again when one closes."
    )]
    ConnectionLimit { plan: String, limit: u32 },
}

impl ConnectRefused {
    /// The handshake metric's label.
    fn outcome(&self) -> &'static str {
        match self {
            ConnectRefused::NoToken => "no_token",
            ConnectRefused::Token(outcome, _) => outcome,
            ConnectRefused::Unavailable => "error",
            ConnectRefused::NoMessaging(_) => "no_messaging",
            ConnectRefused::ConnectionLimit { .. } => "connection_limit",
        }
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> ConnectRefused {
    tracing::error!(error = %e, "cannot admit a realtime connection");
    ConnectRefused::Unavailable
}

/// The connect middleware: the handshake's `auth.token` must be a valid user token of a tenant
/// whose plan has messaging and a connection to spare. socketioxide sends the client its
/// CONNECT once the middleware returns and only then starts the connect handler, so everything
/// a connected client relies on at once (its rooms, its event handlers, its presence) is set up
/// here, before the CONNECT. A socket that asks to recover (`auth.offset`) joins its user's
/// room later, in `resume`, under its user's feed lock, so that each event reaches it once.
async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Value>,
    State(hub): State<Arc<Hub>>,
) -> Result<(), ConnectRefused> {
    let auth = auth.ok();
    let asked = auth
        .as_ref()
        .and_then(|a| a.get("offset"))
        .filter(|o| !o.is_null())
        .cloned();
    let admitted = admit(&hub, auth).await;
    hub.metrics.handshake(
        admitted
            .as_ref()
            .map_or_else(ConnectRefused::outcome, |_| "accepted"),
    );
    let session = admitted?;
    // From here to the end nothing awaits: the socket is metered, and its disconnect handler
    // set, in the same step as the presence row counting it was committed.
    hub.meter
        .open(s.id, &session.tenant_id, &session.user_id, db::now_millis());
    if asked.is_none() {
        s.join(session.room());
    }
    s.join(tenant_room(&session.tenant_id));
    s.extensions.insert(limits::Connection::default());
    events::register(&s);
    s.on_disconnect(disconnected::<A>);
    hub.metrics.connections.inc();
    let first = hub.presence.connect(&session.tenant_id, &session.user_id);
    if first {
        hub.metrics.users_online.inc();
    }
    s.extensions.insert(FirstDevice(first));
    s.extensions.insert(Resume(asked));
    s.extensions.insert(session);
    Ok(())
}

/// The handshake's `auth.offset`, when the client asked to recover.
#[derive(Debug, Clone)]
struct Resume(Option<Value>);

/// Whether a socket was its user's first on this replica when it connected.
#[derive(Debug, Clone, Copy)]
struct FirstDevice(bool);

/// The session a handshake's `auth` payload opens, or why it opens none; an admitted socket is
/// already counted in the presence tables.
async fn admit(hub: &Hub, auth: Option<Value>) -> Result<Session, ConnectRefused> {
    let token = auth
        .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string))
        .ok_or(ConnectRefused::NoToken)?;
    let principal = {
        let mut conn = hub.db.conn().await.map_err(|e| unavailable(&e))?;
        users::authenticate(&mut conn, &token, db::now()).await
    };
    let Principal { tenant, user, .. } = principal.map_err(|e| match e {
        users::Refused::Database(e) => unavailable(&e),
        other => ConnectRefused::Token(other.outcome(), other.to_string()),
    })?;
    let session = Session {
        tenant_id: tenant.id,
        user_id: user.id,
    };
    let mut tx = hub.db.begin().await.map_err(|e| unavailable(&e))?;
    take_connection(&mut tx, hub, &session).await?;
    tx.commit().await.map_err(|e| unavailable(&e))?;
    Ok(session)
}

/// Counts the session's socket in the presence tables, unless the tenant's plan has no
/// messaging or its users hold `max_realtime_connections` sockets on live replicas already.
///
/// The tenant's row lock makes the count and the increment one step for all replicas: two
/// handshakes of a tenant never both take its last connection, so the limit holds exactly over
/// live replicas. What escapes it: a replica that stopped heartbeating (cut off from the
/// database but still serving) drops out of the count after `DEAD_AFTER`, so its sockets can be
/// overshot by until it is swept and its clients reconnect elsewhere. Lowering the limit ends no
/// connection; it refuses handshakes until the count is below it.
async fn take_connection(
    tx: &mut db::Conn,
    hub: &Hub,
    session: &Session,
) -> Result<(), ConnectRefused> {
    let fail = |e: sqlx::Error| unavailable(&e);
    let tenant = if db::tenants::lock(tx, &session.tenant_id)
        .await
        .map_err(fail)?
    {
        db::tenants::get(tx, &session.tenant_id)
            .await
            .map_err(fail)?
    } else {
        None
    };
    let Some(tenant) = tenant else {
        return Err(ConnectRefused::Token(
            "no_user",
            format!("The tenant {:?} does not exist.", session.tenant_id),
        ));
    };
    let plan = match db::plans::get(tx, &tenant.plan_id).await.map_err(fail)? {
        Some(p) if p.features.messaging => p,
        Some(p) => return Err(ConnectRefused::NoMessaging(p.name)),
        None => return Err(ConnectRefused::NoMessaging(tenant.plan_id)),
    };
    let used = db::presence::tenant_sockets(tx, &tenant.id, alive_since())
        .await
        .map_err(fail)?;
    let limit = plan.limits.max_realtime_connections;
    if used >= i64::from(limit) {
        return Err(ConnectRefused::ConnectionLimit {
            plan: plan.name,
            limit,
        });
    }
    db::presence::join(tx, &hub.replica, &session.tenant_id, &session.user_id)
        .await
        .map_err(fail)
}

/// A socket is connected: replay what it missed (or tell it where its user's feed is), then
/// announce its user online when it is their first device here. A duplicate `user-online` (the
/// user came online on two replicas at once) is harmless, a missed one is not.
async fn connected<A: Adapter>(s: SocketRef<A>, State(hub): State<Arc<Hub>>) {
    let Some(session) = s.extensions.get::<Session>() else {
        return;
    };
    let asked = s.extensions.get::<Resume>().and_then(|r| r.0);
    resume(&hub, &s, &session, asked).await;
    calls::resume(&hub, &s, &session).await;
    if s.extensions.get::<FirstDevice>().is_some_and(|f| f.0)
        && let Some(a) =
            events::presence_change(&hub, &session.tenant_id, &session.user_id, true).await
    {
        let _ = hub.scoped(s.to(a.rooms)).emit(a.event, &a.body).await;
    }
}

/// Sends a connecting socket the events its user was sent after `asked` (its handshake's
/// offset), joins it to its user's room if it asked, and ends with `recovery`. If the database
/// cannot say, the socket still joins and is told to reload.
///
/// Each offset reaches the socket once, and in order: the plan is read with the user's feed
/// locked, and while the lock holds the socket joins the skip room of each event it is replayed
/// (their live copies pass it by, see `recovery::skip_room`), then its user's room, and queues
/// as much of the replay as its queue takes. Events up to the plan's head thus come only
/// replayed; later ones commit only after the lock is released, so they come only live, behind
/// the queued replay. (A replay longer than the queue goes on, paced, after the release; newer
/// events may then come between its parts, still once each.)
async fn resume<A: Adapter>(hub: &Hub, s: &SocketRef<A>, session: &Session, asked: Option<Value>) {
    let recovering = asked.is_some();
    let (tenant, user) = (&session.tenant_id, &session.user_id);
    s.extensions.insert(Replaying);
    let deadline = tokio::time::Instant::now() + REPLAY_STALL;
    let read = async {
        if !recovering {
            // Already in its user's room: it is only told where its user's feed stands.
            let mut conn = hub.db.conn().await?;
            let plan = recovery::Plan::read(&mut conn, tenant, user, None, false).await?;
            return Ok((plan, true));
        }
        let mut tx = hub.db.begin().await?;
        let plan = recovery::Plan::read(&mut tx, tenant, user, asked.as_ref(), true).await?;
        for (_, _, offset) in &plan.replay {
            s.join(recovery::skip_room(tenant, user, offset));
        }
        s.join(session.room());
        let queued = queue_now(s, &plan.replay);
        tx.commit().await?;
        let sent = replay_to(s, deadline, &plan.replay[queued..]).await;
        Ok::<_, sqlx::Error>((plan, sent))
    };
    let status = match read.await {
        // The socket is gone, or did not make room: `slow` drops it; it reconnects from the
        // last offset it got.
        Ok((_, false)) => {
            s.extensions.remove::<Replaying>();
            return;
        }
        Ok((plan, true)) => {
            let newest = plan.replay.last().map_or(&plan.head, |(_, _, o)| o);
            let status = plan.status(plan.replay.len(), newest);
            hub.metrics
                .recovery(recovering, plan.incomplete.is_none(), plan.replay.len());
            status
        }
        Err(e) => {
            tracing::warn!(error = %e, "realtime: cannot read the user's feed");
            s.join(session.room());
            serde_json::json!({
                "recovered": false,
                "offset": Value::Null,
                "replayed": 0,
                "reason": "The server could not read what you missed: load the state through REST.",
            })
        }
    };
    let _ = s.emit(recovery::RECOVERY, &status);
    s.extensions.remove::<Replaying>();
}

/// Queues replayed events for as long as the socket's queue takes them, without waiting;
/// answers how many it took.
fn queue_now<A: Adapter>(s: &SocketRef<A>, events: &[(String, Value, recovery::Offset)]) -> usize {
    events
        .iter()
        .take_while(|(event, payload, offset)| {
            s.emit(event.as_str(), &(payload, offset.to_string()))
                .is_ok()
        })
        .count()
}

async fn disconnected<A: Adapter>(s: SocketRef<A>, State(hub): State<Arc<Hub>>) {
    let Some((session, true)) = socket_gone(&hub, s.id).await else {
        return;
    };
    if let Some(a) =
        events::presence_change(&hub, &session.tenant_id, &session.user_id, false).await
    {
        let _ = hub.scoped(s.to(a.rooms)).emit(a.event, &a.body).await;
    }
}

/// A socket is gone: its connection time stops, and it leaves this replica's presence and the
/// presence tables. Once per socket (None after the first call); true with the session when
/// its user has no connection left on any live replica.
async fn socket_gone(hub: &Hub, sid: Sid) -> Option<(Session, bool)> {
    let (tenant_id, user_id) = hub.meter.close(&sid, db::now_millis())?;
    let session = Session { tenant_id, user_id };
    hub.metrics.connections.dec();
    let rooms = hub.rooms.gone(sid);
    hub.metrics
        .chat_viewers
        .sub(i64::try_from(rooms).unwrap_or(i64::MAX));
    if hub
        .presence
        .disconnect(&session.tenant_id, &session.user_id)
    {
        hub.metrics.users_online.dec();
        hub.limits.forget(&session.tenant_id, &session.user_id);
    }
    let alive_since = alive_since();
    let elsewhere = async {
        let mut conn = hub.db.conn().await?;
        db::presence::leave(
            &mut conn,
            &hub.replica,
            &session.tenant_id,
            &session.user_id,
        )
        .await?;
        db::presence::online(&mut conn, &session.tenant_id, &session.user_id, alive_since).await
    };
    match elsewhere.await {
        Ok(online) => Some((session, !online)),
        Err(e) => {
            tracing::warn!(error = %e, "realtime: presence");
            Some((session, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What hyper hands over: a head whose URI and header values are slices of one buffer.
    #[tokio::test]
    async fn a_gateway_requests_head_is_copied_out_of_the_read_buffer() {
        let text = b"/socket.io/?EIO=4&transport=websocketabc123";
        let mut buffer = bytes::BytesMut::zeroed(16 * 1024);
        buffer[..text.len()].copy_from_slice(text);
        let shared = buffer.freeze();
        let value =
            axum::http::HeaderValue::from_maybe_shared(shared.slice(37..43)).expect("a value");
        let uri = axum::http::Uri::from_maybe_shared(shared.slice(0..37)).expect("a uri");
        let head = |req: &axum::extract::Request| {
            (
                req.headers()["sec-websocket-key"].as_bytes().as_ptr(),
                req.uri().path().as_ptr(),
                req.extensions()
                    .get::<axum::extract::OriginalUri>()
                    .map(|o| o.0.path().as_ptr()),
            )
        };
        let inside_shared = |p: *const u8| {
            let start = shared.as_ptr() as usize;
            (start..start + shared.len()).contains(&(p as usize))
        };
        let mut req = axum::extract::Request::new(axum::body::Body::empty());
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert("sec-websocket-key", value.clone());
        req.extensions_mut().insert(axum::extract::OriginalUri(uri));
        let (v, p, o) = head(&req);
        assert!(inside_shared(v) && inside_shared(p) && o.is_some_and(inside_shared));
        let req = detach_head(req).await;
        let (v, p, o) = head(&req);
        assert!(!inside_shared(v) && !inside_shared(p) && !o.is_some_and(inside_shared));
        assert_eq!(req.headers()["sec-websocket-key"], "abc123");
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");

        // Other paths pass untouched.
        let mut other = axum::extract::Request::new(axum::body::Body::empty());
        other.headers_mut().insert("x-key", value);
        let other = detach_head(other).await;
        assert!(inside_shared(other.headers()["x-key"].as_bytes().as_ptr()));
    }
}
