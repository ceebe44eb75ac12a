//! The realtime gateway: the Socket.io v4 protocol (socketioxide) on the control plane's HTTP
//! server at `/socket.io/`, for a tenant's end users. A client connects with its user token
//! (`auth: { token }`); every socket of a user joins that user's room, so an event for a user
//! reaches all their devices. The database is the truth: state-changing events are acknowledged
//! after the commit, and what a client missed while away is in the REST history.
//!
//! Layers: `protocol` (payloads and acks, pure) ← `limits` (token buckets) ← `presence`
//! (who is online here) ← `events` (the handlers) ← this module (the `Gateway` handle).

mod events;
mod limits;
mod presence;
pub mod protocol;

use crate::db::Db;
use crate::metrics::RealtimeMetrics;
use crate::users::{self, Principal};
use limits::Limits;
use presence::Presence;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use socketioxide::layer::SocketIoLayer;
use std::sync::Arc;
use std::time::Duration;

/// The largest Socket.io packet a client may send; a bigger one closes its connection (it is
/// not a client of ours). Every valid event fits in a small fraction of it.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Packets queued for one socket before it counts as not reading.
const SOCKET_BUFFER: usize = 256;

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

/// What every handler shares.
pub(crate) struct Hub {
    db: Db,
    metrics: RealtimeMetrics,
    presence: Presence,
    limits: Limits,
    typing: events::TypingTimers,
}

/// The gateway's handle: the Socket.io server and its state.
#[derive(Clone)]
pub struct Gateway {
    io: SocketIo,
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway and the tower layer that serves it in front of the API router.
    pub fn new(db: Db, metrics: RealtimeMetrics) -> (Gateway, SocketIoLayer) {
        let hub = Arc::new(Hub {
            db,
            metrics,
            presence: Presence::default(),
            limits: Limits::default(),
            typing: events::TypingTimers::default(),
        });
        let (layer, io) = SocketIo::builder()
            .with_state(hub.clone())
            .max_payload(MAX_PACKET_BYTES as u64)
            .ws_max_message_size(MAX_PACKET_BYTES)
            .ws_max_frame_size(MAX_PACKET_BYTES)
            .max_buffer_size(SOCKET_BUFFER)
            .ping_interval(Duration::from_secs(20))
            .ping_timeout(Duration::from_secs(10))
            .build_layer();
        io.ns("/", connected.with(authenticate));
        (Gateway { io, hub }, layer)
    }

    /// Ends every connection of a user at once (the user was deleted).
    pub async fn disconnect_user(&self, tenant_id: &str, user_id: &str) {
        if let Err(e) = self.io.to(user_room(tenant_id, user_id)).disconnect().await {
            tracing::warn!(error = %e, "cannot disconnect a deleted user's sockets");
        }
    }

    /// Whether the user has a connection to this replica.
    pub fn online(&self, tenant_id: &str, user_id: &str) -> bool {
        self.hub.presence.online(tenant_id, user_id)
    }

    /// Closes every connection (the server is shutting down).
    pub async fn close(&self) {
        self.io.close().await;
    }
}

/// Why a connection is refused: told to the client as `connect_error`'s message.
#[derive(Debug, thiserror::Error)]
enum ConnectRefused {
    #[error(
        "Connect with the user token in the handshake: io(url, {{ auth: {{ token: USER_TOKEN }} }})."
    )]
    NoToken,
    #[error("{0}")]
    Token(String),
}

/// The connect middleware: the handshake's `auth.token` must be a valid user token.
async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    State(hub): State<Arc<Hub>>,
) -> Result<(), ConnectRefused> {
    let token = auth
        .ok()
        .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string))
        .ok_or(ConnectRefused::NoToken)?;
    let principal = match hub.db.conn().await {
        Ok(mut conn) => users::authenticate(&mut conn, &token, crate::db::now()).await,
        Err(e) => Err(users::Refused::Database(e)),
    };
    hub.metrics.handshake(principal.as_ref().err());
    let Principal { tenant, user, .. } = principal.map_err(|e| match e {
        users::Refused::Database(e) => {
            tracing::error!(error = %e, "cannot check a user token");
            ConnectRefused::Token("The server could not check the token; try again.".to_string())
        }
        other => ConnectRefused::Token(other.to_string()),
    })?;
    s.extensions.insert(Session {
        tenant_id: tenant.id,
        user_id: user.id,
    });
    Ok(())
}

/// A socket passed the middleware: join the user's room, count it, listen to its events.
async fn connected(s: SocketRef, State(hub): State<Arc<Hub>>) {
    let Some(session) = s.extensions.get::<Session>() else {
        // The middleware always sets it; a socket without one acts as no one.
        let _ = s.disconnect();
        return;
    };
    s.join(session.room());
    hub.metrics.connections.inc();
    s.extensions.insert(limits::Connection::default());
    events::register(&s);
    if hub.presence.connect(&session.tenant_id, &session.user_id) {
        hub.metrics.users_online.inc();
        events::announce(&hub, &s, &session, true).await;
    }
    s.on_disconnect(async |s: SocketRef, State(hub): State<Arc<Hub>>| {
        hub.metrics.connections.dec();
        let Some(session) = s.extensions.get::<Session>() else {
            return;
        };
        if hub
            .presence
            .disconnect(&session.tenant_id, &session.user_id)
        {
            hub.metrics.users_online.dec();
            hub.limits.forget(&session.tenant_id, &session.user_id);
            events::announce(&hub, &s, &session, false).await;
        }
    });
}
