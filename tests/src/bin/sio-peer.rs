//! The socketioxide peer of the realtime benchmarks (`bench-realtime`, `bench-live-chat`): the
//! Node.js peer's events (tests/bench/realtime-node/server.mjs) — the same handshake, the same
//! checks, one `INSERT … RETURNING` per message, the same emits and acks — on socketioxide, the
//! engine under Onda's gateway, configured as the gateway configures it
//! (`onda_control_plane::realtime::engine`, the request heads detached, TCP_NODELAY), with the
//! in-process adapter (Onda's PostgreSQL adapter emits locally too while no other replica
//! serves). It does none of Onda's own work (no notification, conversation index, recovery
//! feed, presence, limits or metering), so beside Onda and Node it tells what the engine itself
//! costs: the floor under Onda's figures, on the same machine in the same run.
//!
//! Environment as the Node peer's: `DATABASE_URL` (PostgreSQL), `JWT_SECRET` and `JWT_ISSUER`
//! (the user tokens' key and tenant), `PORT` (0: a free one). Prints `listening on PORT` once
//! it serves.

use onda_control_plane::realtime::protocol::{self, Refusal};
use onda_control_plane::users::{self, jwt};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::sync::Arc;

struct Peer {
    db: PgPool,
    secret: Vec<u8>,
    issuer: String,
}

/// The user a socket acts as.
#[derive(Clone)]
struct Me(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMessage {
    receiver_id: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamMessage {
    stream_id: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinStream {
    stream_id: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("set DATABASE_URL, JWT_SECRET and JWT_ISSUER ({name} is missing)");
        std::process::exit(2);
    })
}

/// The handshake: an HS256 user token of the issuer, unexpired, naming a user.
async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    State(peer): State<Arc<Peer>>,
) -> Result<(), String> {
    let auth = auth.map_err(|_| "Connect with the user token.".to_string())?;
    let token = auth["token"]
        .as_str()
        .ok_or("Connect with the user token.")?;
    let claims = jwt::parse(token)
        .and_then(|t| t.verify(&peer.secret, onda_control_plane::db::now()))
        .map_err(|e| e.to_string())?;
    if claims.iss != peer.issuer || users::user_id(&claims.sub).is_err() {
        return Err("The token names no user of this tenant.".to_string());
    }
    s.join(format!("user:{}", claims.sub));
    s.extensions.insert(Me(claims.sub));
    s.on(
        "send-message",
        async |s: SocketRef,
               TryData(d): TryData<Value>,
               ack: AckSender,
               State(p): State<Arc<Peer>>| {
            message(false, s, d.ok(), ack, &p).await;
        },
    );
    s.on("join-stream", join_stream);
    s.on(
        "stream-message",
        async |s: SocketRef,
               TryData(d): TryData<Value>,
               ack: AckSender,
               State(p): State<Arc<Peer>>| {
            message(true, s, d.ok(), ack, &p).await;
        },
    );
    Ok(())
}

/// Where a message goes: to another user, or to a stream's room.
enum To<'a> {
    User(&'a str),
    Stream(&'a str),
}

/// The user the socket acts as.
fn me(s: &SocketRef) -> Result<String, Refusal> {
    Ok(s.extensions
        .get::<Me>()
        .ok_or_else(|| Refusal::new("unauthorized", "This connection acts as no user."))?
        .0)
}

/// Stores the message `text` of `me` and emits it (`event`) to its room but the writer's socket:
/// the ack's answer.
async fn say(
    (s, peer): (&SocketRef, &Peer),
    (me, to): (&str, To<'_>),
    text: &str,
    event: &'static str,
) -> Result<Value, Refusal> {
    let (stream, receiver) = match to {
        To::User(r) => (None, Some(r)),
        To::Stream(st) => (Some(st), None),
    };
    let (id, created): (i64, String) = sqlx::query_as(
        "INSERT INTO messages (room, sender_id, receiver_id, content) VALUES ($1, $2, $3, $4) \
         RETURNING id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    )
    .bind(stream)
    .bind(me)
    .bind(receiver)
    .bind(text)
    .fetch_one(&peer.db)
    .await
    .map_err(|e| Refusal::new("internal", format!("could not store the message: {e}")))?;
    let id = id.to_string();
    let mut message = json!({ "id": id, "senderId": me, "content": text, "createdAt": created });
    let _ = match to {
        To::User(r) => {
            message["receiverId"] = json!(r);
            let rooms = [format!("user:{r}"), format!("user:{me}")];
            s.to(rooms).emit(event, &message).await
        }
        To::Stream(st) => {
            message["streamId"] = json!(st);
            s.to(format!("stream:{st}")).emit(event, &message).await
        }
    };
    Ok(json!({ "ok": true, "id": id, "createdAt": created }))
}

/// `send-message` (`stream` false) or `stream-message`: checked, stored, emitted, answered.
async fn message(stream: bool, s: SocketRef, data: Option<Value>, ack: AckSender, peer: &Peer) {
    let answer = async {
        let me = me(&s)?;
        if stream {
            let req: StreamMessage = protocol::parse("stream-message", data)?;
            let stream = users::user_id(&req.stream_id)
                .map_err(|_| Refusal::invalid("streamId is not an id."))?;
            let text = protocol::content(&req.content, false)?;
            say(
                (&s, peer),
                (&me, To::Stream(stream)),
                text,
                "stream-message",
            )
            .await
        } else {
            let req: SendMessage = protocol::parse("send-message", data)?;
            let receiver = users::user_id(&req.receiver_id)
                .ok()
                .filter(|r| *r != me)
                .ok_or_else(|| Refusal::invalid("receiverId is not another user's id."))?;
            let text = protocol::content(&req.content, false)?;
            say(
                (&s, peer),
                (&me, To::User(receiver)),
                text,
                "receive-message",
            )
            .await
        }
    };
    let _ = ack.send(&answer.await.unwrap_or_else(|r| r.ack()));
}

async fn join_stream(s: SocketRef, TryData(data): TryData<Value>, ack: AckSender) {
    let answer = protocol::parse::<JoinStream>("join-stream", data.ok()).and_then(|j| {
        users::user_id(&j.stream_id).map_err(|_| Refusal::invalid("streamId is not an id."))?;
        s.join(format!("stream:{}", j.stream_id));
        Ok(json!({ "ok": true }))
    });
    let _ = ack.send(&answer.unwrap_or_else(|r| r.ack()));
}

async fn serve() -> anyhow::Result<()> {
    let db = PgPoolOptions::new()
        .max_connections(10)
        .connect(&env("DATABASE_URL"))
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS messages (id BIGSERIAL PRIMARY KEY, room TEXT, \
         sender_id TEXT NOT NULL, receiver_id TEXT, content TEXT NOT NULL, \
         created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&db)
    .await?;
    let peer = Arc::new(Peer {
        db,
        secret: env("JWT_SECRET").into_bytes(),
        issuer: env("JWT_ISSUER"),
    });
    let (layer, io) = onda_control_plane::realtime::engine()
        .with_state(peer)
        .build_layer();
    io.ns("/", (async |_: SocketRef| {}).with(authenticate));
    let app = axum::Router::new()
        .fallback(async || axum::http::StatusCode::NOT_FOUND)
        .layer(layer)
        .layer(axum::middleware::map_request(
            onda_control_plane::realtime::detach_head,
        ));
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?.port());
    // As the control plane's connections: TCP_NODELAY (see `onda_control_plane::lanes`).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = rt.block_on(serve()) {
        eprintln!("sio-peer: {e:#}");
        std::process::exit(1);
    }
}
