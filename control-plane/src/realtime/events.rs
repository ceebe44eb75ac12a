//! The gateway's event handlers. Each checks the connection's event budget and its payload,
//! commits what it changes, acknowledges (`{ ok, … }` or `{ error: { code, message } }`), and
//! only then tells the other sockets. Nothing a client sends ends its connection.

use super::protocol::{self, MarkRead, Refusal, SendMessage, Typing};
use super::recovery::{self, Entry};
use super::stream_chat::{self, Sanction};
use super::{Hub, Session, calls, limits, moderation, notify, tips, user_room, writer};
use crate::calls::Act;
use crate::db;
use crate::metrics::NotificationSource;
use crate::users;
use crate::webhooks;
use onda_shared::api::WebhookEventType;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A typing indicator ends by itself this long after its last `typing-start`.
pub const TYPING_EXPIRES: Duration = Duration::from_secs(6);

type Handler<A> = fn(Arc<Hub>, SocketRef<A>, Session, Option<Value>) -> HandlerFuture;
type HandlerFuture = std::pin::Pin<Box<dyn Future<Output = Result<Value, Refusal>> + Send>>;

/// The handlers of the events a client may send, each under its name (which the metrics count
/// it by). One table for every socket: socketioxide keeps a socket's own handlers in a map per
/// socket (one boxed handler per event: about 1.3 KiB of every connection when measured), so
/// the gateway registers one fallback handler per socket that looks the event up here.
macro_rules! handlers {
    ($event:expr, $($name:literal => $call:expr,)*) => {
        match $event {
            $($name => Some(($name, (|hub, s, session, data| Box::pin($call(hub, s, session, data))) as Handler<A>)),)*
            _ => None,
        }
    };
}

fn handler<A: Adapter>(event: &str) -> Option<(&'static str, Handler<A>)> {
    handlers!(event,
        "send-message" => send_message,
        "mark-read" => mark_read,
        "typing-start" => |h, s, se, d| typing(h, s, se, d, true),
        "typing-stop" => |h, s, se, d| typing(h, s, se, d, false),
        "edit-message" => moderation::edit_message,
        "delete-message" => moderation::delete_message,
        "block-user" => |h, s, se, d| moderation::block(h, s, se, d, true),
        "unblock-user" => |h, s, se, d| moderation::block(h, s, se, d, false),
        "report-message" => moderation::report,
        "send-tip" => tips::send_tip,
        "join-stream" => stream_chat::join,
        "leave-stream" => stream_chat::leave,
        "chat-message" => stream_chat::say,
        "delete-chat-message" => stream_chat::delete,
        "timeout-user" => |h, s, se, d| stream_chat::sanction(h, s, se, d, Sanction::Timeout),
        "ban-user" => |h, s, se, d| stream_chat::sanction(h, s, se, d, Sanction::Ban),
        "unban-user" => |h, s, se, d| stream_chat::sanction(h, s, se, d, Sanction::Unban),
        "chat-settings" => stream_chat::settings,
        "initiate-call" => calls::initiate,
        "accept-call" => |h, s, se, d| calls::act(h, s, se, d, Act::Accept),
        "reject-call" => |h, s, se, d| calls::act(h, s, se, d, Act::Reject),
        "end-call" => |h, s, se, d| calls::act(h, s, se, d, Act::End),
        "signal" => calls::signal,
        "call-connected" => calls::connected,
        "mark-notification-read" => notify::mark_read,
        "mark-all-notifications-read" => notify::mark_all_read,
    )
}

/// Listens to every event a client may send: each goes through the checks every event gets
/// (the socket's session, the connection's event budget) to its handler, and is answered with
/// one ack of either shape; an event the gateway does not know is refused `unknown_event`.
pub(super) fn register<A: Adapter>(s: &SocketRef<A>) {
    s.on_fallback(
        async move |s: SocketRef<A>,
                    Event(event): Event,
                    TryData(data): TryData<Value>,
                    ack: AckSender<A>,
                    State(hub): State<Arc<Hub>>| {
            let known = handler::<A>(&event);
            let answer = match (admit(&s), known) {
                (Ok(session), Some((_, handler))) => {
                    handler(hub.clone(), s, session, data.ok()).await
                }
                (Ok(_), None) => Err(unknown(&event)),
                (Err(refusal), _) => Err(refusal),
            };
            let name = known.map_or("unknown", |(name, _)| name);
            hub.metrics
                .event(name, answer.as_ref().err().map(|r| r.code));
            let reply = answer.unwrap_or_else(|r| r.ack());
            // A client that did not ask for an ack gets none; one whose buffer is full is
            // already being dropped.
            let _ = ack.send(&reply);
        },
    );
}

/// The refusal of an event the gateway does not know, naming it (cut short: a name may be as
/// long as a packet).
fn unknown(event: &str) -> Refusal {
    const SHOWN: usize = 64;
    let shown: String = event.chars().take(SHOWN).collect();
    let more = if event.chars().nth(SHOWN).is_some() {
        "…"
    } else {
        ""
    };
    Refusal::new(
        "unknown_event",
        format!(
            "There is no event {shown:?}{more}; docs/realtime.md and docs/calls.md list the events."
        ),
    )
}

/// The socket's session if it may send one more event now.
fn admit<A: Adapter>(s: &SocketRef<A>) -> Result<Session, Refusal> {
    let session = s
        .extensions
        .get::<Session>()
        .ok_or_else(|| Refusal::new("unauthorized", "This connection acts as no user."))?;
    if let Some(budget) = s.extensions.get::<limits::Connection>()
        && let Err(ms) = budget.take()
    {
        let mut r = Refusal::new(
            "rate_limited",
            format!(
                "This connection sends more than {} events a second; wait {ms} ms.",
                limits::EVENTS_PER_SEC
            ),
        );
        r.retry_after_ms = Some(ms);
        return Err(r);
    }
    Ok(session)
}

/// The other user an event names: a well-formed id that is not the sender's own.
fn other_user<'a>(session: &Session, field: &str, id: &'a str) -> Result<&'a str, Refusal> {
    let id = users::user_id(id).map_err(|e| Refusal::invalid(format!("{field}: {e}")))?;
    if id == session.user_id {
        return Err(Refusal::invalid(format!("{field} is your own id.")));
    }
    Ok(id)
}

async fn send_message<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    if let Err(ms) = hub.limits.message(&session.tenant_id, &session.user_id) {
        let mut r = Refusal::new(
            "rate_limited",
            format!(
                "You send more than {} messages a second; wait {ms} ms.",
                limits::MESSAGES_PER_SEC
            ),
        );
        r.retry_after_ms = Some(ms);
        return Err(r);
    }
    let req: SendMessage = protocol::parse("send-message", data)?;
    let receiver = other_user(&session, "receiverId", &req.receiver_id)?;
    let attachment_id = match (&req.media_url, &req.media_type) {
        (Some(url), _) => Some(protocol::attachment_id(url)?),
        (None, Some(_)) => {
            return Err(Refusal::invalid(
                "mediaType goes with mediaUrl: send the attachment's url too, or neither.",
            ));
        }
        (None, None) => None,
    };
    let content = protocol::content(&req.content, attachment_id.is_some())?;
    let sent = hub
        .writer
        .send(writer::Outgoing {
            tenant_id: session.tenant_id.clone(),
            sender_id: session.user_id.clone(),
            receiver_id: receiver.to_string(),
            content: content.to_string(),
            attachment: attachment_id.map(|a| (a.to_string(), req.media_type.clone())),
        })
        .await?;
    hub.metrics.messages.inc();
    hub.metrics.notification(NotificationSource::Message);
    recovery::send(&hub, &s, &session.tenant_id, &sent.recorded).await;
    Ok(protocol::ok(json!({
        "id": sent.message.id,
        "conversationId": sent.message.conversation_id,
        "createdAt": sent.message.created_at,
        "offset": recovery::own_offset(&sent.recorded, &session.user_id),
    })))
}

async fn mark_read<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: MarkRead = protocol::parse("mark-read", data)?;
    let sender = other_user(&session, "senderId", &req.sender_id)?;
    let mut tx = hub.db.begin().await.map_err(|e| protocol::stored(&e))?;
    let Some(upto) = db::messages::mark_read(
        &mut tx,
        &session.tenant_id,
        &session.user_id,
        sender,
        req.message_id.as_deref(),
    )
    .await
    .map_err(|e| protocol::stored(&e))?
    else {
        return Err(Refusal::new(
            "not_found",
            "There is no such message in your conversation with this user.",
        ));
    };
    let read = json!({
        "conversationId": upto.conversation_id,
        "readerId": session.user_id,
        "messageId": upto.id,
    });
    let recorded = recovery::record(
        &mut tx,
        &session.tenant_id,
        vec![
            Entry::new(sender, "messages-read", read.clone()),
            Entry::new(&session.user_id, "messages-read", read),
        ],
    )
    .await
    .map_err(|e| protocol::stored(&e))?;
    tx.commit().await.map_err(|e| protocol::stored(&e))?;
    recovery::send(&hub, &s, &session.tenant_id, &recorded).await;
    Ok(protocol::ok(json!({
        "messageId": upto.id,
        "offset": recovery::own_offset(&recorded, &session.user_id),
    })))
}

/// Generations of typing indicators by (tenant, sender, receiver): a timer ends an indicator
/// only if no newer `typing-start` or `typing-stop` came since it was set.
#[derive(Debug, Default)]
pub(crate) struct TypingTimers {
    generations: Mutex<HashMap<(String, String, String), u64>>,
}

impl TypingTimers {
    /// Bumps the indicator's generation; returns the new one.
    fn bump(&self, key: &(String, String, String), keep: bool) -> u64 {
        let mut map = onda_shared::sync::lock(&self.generations);
        let next = map.get(key).copied().unwrap_or(0) + 1;
        if keep {
            map.insert(key.clone(), next);
        } else {
            map.remove(key);
        }
        next
    }

    /// Ends the indicator if `generation` is still its latest.
    fn expire(&self, key: &(String, String, String), generation: u64) -> bool {
        let mut map = onda_shared::sync::lock(&self.generations);
        if map.get(key) == Some(&generation) {
            map.remove(key);
            true
        } else {
            false
        }
    }
}

async fn typing<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
    start: bool,
) -> Result<Value, Refusal> {
    let event = if start { "typing-start" } else { "typing-stop" };
    let req: Typing = protocol::parse(event, data)?;
    let receiver = other_user(&session, "receiverId", &req.receiver_id)?.to_string();
    moderation::may_reach(&hub, &session, &receiver).await?;
    let key = (
        session.tenant_id.clone(),
        session.user_id.clone(),
        receiver.clone(),
    );
    let generation = hub.typing.bump(&key, start);
    let room = user_room(&session.tenant_id, &receiver);
    let _ = hub
        .scoped(s.to(room.clone()))
        .emit(event, &json!({ "senderId": session.user_id }))
        .await;
    if start {
        let hub = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TYPING_EXPIRES).await;
            if hub.typing.expire(&key, generation) {
                let stop = json!({ "senderId": key.1, "expired": true });
                let _ = hub.scoped(s.to(room)).emit("typing-stop", &stop).await;
            }
        });
    }
    Ok(protocol::ok(json!({})))
}

/// A presence change to tell: the rooms of the users who share a conversation with the user,
/// the event and its payload.
pub(super) struct Announcement {
    pub rooms: Vec<String>,
    pub event: &'static str,
    pub body: Value,
}

/// Stores a user's presence change (last seen, when they went offline everywhere) with its
/// webhook event, and says what to tell to whom. None when no one shares a conversation with
/// them or the database cannot say.
pub(super) async fn presence_change(
    hub: &Hub,
    tenant_id: &str,
    user_id: &str,
    online: bool,
) -> Option<Announcement> {
    let now = db::now();
    let last_seen = db::rfc3339(now);
    if let Err(e) = store_presence(hub, tenant_id, user_id, online, now, &last_seen).await {
        tracing::warn!(error = %e, "presence: cannot store the change");
    }
    let mut conn = match hub.db.conn().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "presence: no database connection");
            return None;
        }
    };
    let peers = match db::messages::peers(&mut conn, tenant_id, user_id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "presence: cannot read conversations");
            return None;
        }
    };
    drop(conn);
    if peers.is_empty() {
        return None;
    }
    let rooms = peers.iter().map(|p| user_room(tenant_id, p)).collect();
    Some(if online {
        Announcement {
            rooms,
            event: "user-online",
            body: json!({ "userId": user_id }),
        }
    } else {
        Announcement {
            rooms,
            event: "user-offline",
            body: json!({ "userId": user_id, "lastSeen": last_seen }),
        }
    })
}

/// `last_seen` (going offline) and the `user.online`/`user.offline` webhook event, in one
/// transaction.
async fn store_presence(
    hub: &Hub,
    tenant_id: &str,
    user_id: &str,
    online: bool,
    now: i64,
    last_seen: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = hub.db.begin().await?;
    let (event_type, data) = if online {
        (WebhookEventType::UserOnline, json!({ "userId": user_id }))
    } else {
        db::users::touch_last_seen(&mut tx, tenant_id, user_id, now).await?;
        (
            WebhookEventType::UserOffline,
            json!({ "userId": user_id, "lastSeen": last_seen }),
        )
    };
    webhooks::enqueue(&mut tx, tenant_id, event_type, &data).await?;
    tx.commit().await
}
