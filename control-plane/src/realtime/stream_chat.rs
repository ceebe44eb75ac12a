//! Live streams' chats over the gateway: joining a stream's room (only viewers let in to the
//! stream, and never a banned one), saying something in it, and the creator's and moderators'
//! moderation (deleting a message, timing out and banning a user, the chat's settings). The
//! rules are [`crate::chat`]'s; this reads what they need, commits, acknowledges, and then tells
//! the room. A room spans every replica (`stream_room`); the viewer count each replica pushes
//! to its own sockets in the room ([`Rooms`] knows which those are).

use super::protocol::{self, Refusal};
use super::{Hub, Session, limits};
use crate::chat::{self, Role, Said};
use crate::db::{self, stream_chat::Restriction};
use crate::memberships::{self, Access};
use onda_shared::api::{ChatMessageKind, ChatSettings, LiveStream};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The room of a tenant's live stream: its chat and its pushed figures.
pub fn stream_room(tenant_id: &str, stream_id: &str) -> String {
    format!("stream:{tenant_id}:{stream_id}")
}

/// A stream one of this replica's sockets joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Joined {
    tenant_id: String,
    stream_id: String,
    slug: String,
    creator_id: String,
}

/// Which streams this replica's sockets joined.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    joined: Mutex<HashMap<Sid, Vec<Joined>>>,
}

impl Rooms {
    /// True when the socket was not in that stream's room yet.
    fn join(&self, sid: Sid, j: Joined) -> bool {
        let mut joined = onda_shared::sync::lock(&self.joined);
        let rooms = joined.entry(sid).or_default();
        if rooms.contains(&j) {
            return false;
        }
        rooms.push(j);
        true
    }

    fn leave(&self, sid: Sid, tenant_id: &str, stream_id: &str) -> bool {
        let mut joined = onda_shared::sync::lock(&self.joined);
        let Some(rooms) = joined.get_mut(&sid) else {
            return false;
        };
        let before = rooms.len();
        rooms.retain(|j| !(j.tenant_id == tenant_id && j.stream_id == stream_id));
        let left = rooms.len() < before;
        if rooms.is_empty() {
            joined.remove(&sid);
        }
        left
    }

    /// The socket is gone: how many rooms it was in.
    pub(super) fn gone(&self, sid: Sid) -> usize {
        onda_shared::sync::lock(&self.joined)
            .remove(&sid)
            .map_or(0, |r| r.len())
    }

    /// The creator of a stream the socket joined.
    fn creator(&self, sid: Sid, tenant_id: &str, stream_id: &str) -> Option<String> {
        onda_shared::sync::lock(&self.joined)
            .get(&sid)?
            .iter()
            .find(|j| j.tenant_id == tenant_id && j.stream_id == stream_id)
            .map(|j| j.creator_id.clone())
    }

    /// Every stream some socket of this replica is in: (tenant, stream id) → slug.
    pub(super) fn streams(&self) -> BTreeMap<(String, String), String> {
        onda_shared::sync::lock(&self.joined)
            .values()
            .flatten()
            .map(|j| ((j.tenant_id.clone(), j.stream_id.clone()), j.slug.clone()))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StreamOnly {
    stream_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChatLine {
    stream_id: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MessageRef {
    stream_id: String,
    message_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UserRef {
    stream_id: String,
    user_id: String,
    /// Only for `timeout-user`.
    seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SettingsPatch {
    stream_id: String,
    slow_mode_secs: Option<u32>,
    subscribers_only: Option<bool>,
    blocked_words: Option<Vec<String>>,
}

fn refusal(r: chat::Refused) -> Refusal {
    Refusal {
        code: r.code,
        message: r.message,
        retry_after_ms: r.retry_after_ms,
    }
}

fn stored(e: &sqlx::Error) -> Refusal {
    protocol::stored(e)
}

/// The stream of the session's tenant whose chat an event names, if the tenant's plan has live
/// chat.
async fn stream_of(
    conn: &mut db::Conn,
    session: &Session,
    stream_id: &str,
) -> Result<(onda_shared::api::Tenant, LiveStream), Refusal> {
    let tenant =
        super::featured_tenant(conn, session, ("live chat", "live_chat", |f| f.live_chat)).await?;
    let stream = db::live_streams::get(conn, stream_id, Some(&tenant.id))
        .await
        .map_err(|e| stored(&e))?
        .ok_or_else(|| Refusal::new("not_found", format!("There is no stream {stream_id:?}.")))?;
    Ok((tenant, stream))
}

/// What the room is told of the settings: the blocked words stay with the moderators.
fn public_settings(s: &ChatSettings) -> Value {
    json!({ "slowModeSecs": s.slow_mode_secs, "subscribersOnly": s.subscribers_only })
}

pub(super) async fn join<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: StreamOnly = protocol::parse("join-stream", data)?;
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let (tenant, stream) = stream_of(&mut conn, &session, &req.stream_id).await?;
    let now = db::now_millis();
    let role = chat::may_join(
        &mut conn,
        (&tenant.id, &tenant.currency),
        &stream,
        &session.user_id,
        now,
    )
    .await
    .map_err(|e| stored(&e))?
    .map_err(refusal)?;
    let creator = chat::creator_of(&stream).map_err(refusal)?.to_string();
    let settings = db::stream_chat::settings(&mut conn, &tenant.id, &creator)
        .await
        .map_err(|e| stored(&e))?;
    let messages = db::stream_chat::recent(&mut conn, &tenant.id, &stream.id, chat::RECENT)
        .await
        .map_err(|e| stored(&e))?;
    drop(conn);
    s.join(stream_room(&tenant.id, &stream.id));
    let joined = Joined {
        tenant_id: tenant.id.clone(),
        stream_id: stream.id.clone(),
        slug: stream.slug.clone(),
        creator_id: creator.clone(),
    };
    if hub.rooms.join(s.id, joined) {
        hub.metrics.chat_viewers.inc();
    }
    let (viewers, live) = hub.audience(&stream.id, &stream.slug);
    let mut shown = public_settings(&settings);
    if role.moderates() {
        shown["blockedWords"] = json!(settings.blocked_words);
    }
    Ok(protocol::ok(json!({
        "stream": {
            "id": stream.id,
            "slug": stream.slug,
            "title": stream.name,
            "creatorId": creator,
            "live": live,
            "viewers": viewers,
        },
        "role": role.as_str(),
        "settings": shown,
        "messages": messages,
    })))
}

pub(super) async fn leave<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: StreamOnly = protocol::parse("leave-stream", data)?;
    s.leave(stream_room(&session.tenant_id, &req.stream_id));
    if hub.rooms.leave(s.id, &session.tenant_id, &req.stream_id) {
        hub.metrics.chat_viewers.dec();
    }
    Ok(protocol::ok(json!({})))
}

pub(super) async fn say<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: ChatLine = protocol::parse("chat-message", data)?;
    let (tenant_id, user_id) = (&session.tenant_id, &session.user_id);
    let creator = hub
        .rooms
        .creator(s.id, tenant_id, &req.stream_id)
        .ok_or_else(|| {
            Refusal::new(
                "not_joined",
                "Join the stream's chat first (join-stream), then write in it.",
            )
        })?;
    let now = db::now_millis();
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let facts = read_said(&mut conn, (tenant_id, &creator, user_id), now)
        .await
        .map_err(|e| stored(&e))?;
    chat::admit(&Said {
        content: &req.content,
        role: facts.role,
        restriction: facts.restriction,
        settings: &facts.settings,
        last_said_ms: facts.last_said_ms,
        subscriber: facts.subscriber,
        now_ms: now,
    })
    .map_err(refusal)?;
    // The burst limit counts what would be said: a refused message costs nothing (the
    // connection's event budget bounds retries), and moderators are not held.
    if !facts.role.moderates() {
        mute_check(&hub, tenant_id, user_id)?;
    }
    let line = db::stream_chat::NewChatMessage {
        id: &crate::secrets::new_time_id("chm", now),
        tenant_id,
        stream_id: &req.stream_id,
        creator_id: &creator,
        user_id,
        kind: ChatMessageKind::Message,
        content: &req.content,
        tip: None,
        created_ms: now,
    };
    drop(conn);
    // The message and its count for billing (the plan's messages) commit together.
    let stored_line = async {
        let mut tx = hub.db.begin().await?;
        let message = db::stream_chat::insert(&mut tx, &line).await?;
        db::realtime_usage::add(&mut tx, tenant_id, now, 0, 1).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(message)
    };
    let message = stored_line.await.map_err(|e| stored(&e))?;
    hub.metrics.chat_messages.inc();
    let body = json!({ "streamId": req.stream_id, "message": message });
    let room = stream_room(tenant_id, &req.stream_id);
    let _ = hub.scoped(s.to(room)).emit("chat-message", &body).await;
    Ok(protocol::ok(json!({ "message": message })))
}

/// The user's burst limit: over it, they are muted for a while (the refusal says so).
fn mute_check(hub: &Hub, tenant_id: &str, user_id: &str) -> Result<(), Refusal> {
    if let Err(muted) = hub.limits.chat(tenant_id, user_id, Instant::now()) {
        let mut r = Refusal::new(
            "rate_limited",
            if muted.now {
                format!(
                    "You are sending messages too fast ({} at once at most): muted for {} s.",
                    limits::CHAT_BURST,
                    limits::CHAT_MUTE.as_secs()
                )
            } else {
                format!(
                    "You are muted for sending too fast; {} s left.",
                    muted.ms.div_ceil(1000)
                )
            },
        );
        r.retry_after_ms = Some(muted.ms);
        return Err(r);
    }
    Ok(())
}

/// What deciding a chat message needs from the database: the writer's role, the creator's
/// settings, the writer's restriction, their last message (only under slow mode) and whether
/// they subscribe (only in a subscribers-only chat).
struct SaidFacts {
    role: Role,
    settings: ChatSettings,
    restriction: Option<Restriction>,
    last_said_ms: Option<i64>,
    subscriber: bool,
}

async fn read_said(
    conn: &mut db::Conn,
    (tenant_id, creator, user_id): (&str, &str, &str),
    now: i64,
) -> Result<SaidFacts, sqlx::Error> {
    let role = chat::role(conn, tenant_id, creator, user_id).await?;
    let settings = db::stream_chat::settings(conn, tenant_id, creator).await?;
    if role.moderates() {
        return Ok(SaidFacts {
            role,
            settings,
            restriction: None,
            last_said_ms: None,
            subscriber: false,
        });
    }
    let restriction = db::stream_chat::restriction(conn, tenant_id, creator, user_id, now).await?;
    let last = if settings.slow_mode_secs > 0 {
        db::stream_chat::last_said_ms(conn, tenant_id, creator, user_id).await?
    } else {
        None
    };
    let subscriber = settings.subscribers_only
        && matches!(
            memberships::entitled(conn, tenant_id, user_id, (Some(creator), None), now).await?,
            Access::Granted(_)
        );
    Ok(SaidFacts {
        role,
        settings,
        restriction,
        last_said_ms: last,
        subscriber,
    })
}

/// The stream an event names and the caller's role in its creator's chats, refusing anyone who
/// does not moderate them.
async fn moderating(
    conn: &mut db::Conn,
    session: &Session,
    stream_id: &str,
) -> Result<(LiveStream, String, Role), Refusal> {
    let (_, stream) = stream_of(conn, session, stream_id).await?;
    let creator = chat::creator_of(&stream).map_err(refusal)?.to_string();
    let role = chat::role(conn, &session.tenant_id, &creator, &session.user_id)
        .await
        .map_err(|e| stored(&e))?;
    if !role.moderates() {
        return Err(Refusal::new(
            "forbidden",
            "Only the creator and the moderators they named moderate this chat.",
        ));
    }
    Ok((stream, creator, role))
}

pub(super) async fn delete<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: MessageRef = protocol::parse("delete-chat-message", data)?;
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let (tenant, stream) = stream_of(&mut conn, &session, &req.stream_id).await?;
    let gone = || {
        Refusal::new(
            "not_found",
            "There is no such message in this stream's chat.",
        )
    };
    let message = db::stream_chat::get(&mut conn, &tenant.id, &stream.id, &req.message_id)
        .await
        .map_err(|e| stored(&e))?
        .filter(|m| !m.deleted)
        .ok_or_else(gone)?;
    if message.user_id != session.user_id {
        moderating(&mut conn, &session, &stream.id).await?;
    }
    let deleted = db::stream_chat::delete(
        &mut conn,
        &tenant.id,
        &stream.id,
        (&message.id, &session.user_id),
        db::now_millis(),
    )
    .await
    .map_err(|e| stored(&e))?;
    if !deleted {
        return Err(gone());
    }
    drop(conn);
    let body = json!({ "streamId": stream.id, "messageId": message.id });
    let room = stream_room(&tenant.id, &stream.id);
    let _ = hub
        .scoped(s.to(room))
        .emit("chat-message-deleted", &body)
        .await;
    Ok(protocol::ok(json!({})))
}

/// `timeout-user` (with `seconds`), `ban-user` and `unban-user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sanction {
    Timeout,
    Ban,
    Unban,
}

impl Sanction {
    fn event(self) -> &'static str {
        match self {
            Sanction::Timeout => "timeout-user",
            Sanction::Ban => "ban-user",
            Sanction::Unban => "unban-user",
        }
    }
}

pub(super) async fn sanction<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
    what: Sanction,
) -> Result<Value, Refusal> {
    let req: UserRef = protocol::parse(what.event(), data)?;
    let target = crate::users::user_id(&req.user_id)
        .map_err(|e| Refusal::invalid(format!("userId: {e}")))?;
    let seconds = match (what, req.seconds) {
        (Sanction::Timeout, Some(n)) if (1..=chat::MAX_TIMEOUT_SECS).contains(&n) => Some(n),
        (Sanction::Timeout, _) => {
            return Err(Refusal::invalid(format!(
                "timeout-user needs seconds, 1 to {}.",
                chat::MAX_TIMEOUT_SECS
            )));
        }
        (_, Some(_)) => {
            return Err(Refusal::invalid(format!(
                "{} takes no seconds (a ban lasts until it is lifted).",
                what.event()
            )));
        }
        (_, None) => None,
    };
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let (stream, creator, _) = moderating(&mut conn, &session, &req.stream_id).await?;
    let tenant_id = &session.tenant_id;
    if db::users::get(&mut conn, tenant_id, target)
        .await
        .map_err(|e| stored(&e))?
        .is_none()
    {
        return Err(Refusal::new(
            "not_found",
            format!("There is no user {target:?}."),
        ));
    }
    let target_role = chat::role(&mut conn, tenant_id, &creator, target)
        .await
        .map_err(|e| stored(&e))?;
    if what != Sanction::Unban && target_role.moderates() {
        return Err(Refusal::new(
            "forbidden",
            "The creator and moderators cannot be timed out or banned (remove a moderator first).",
        ));
    }
    let now = db::now_millis();
    let room = stream_room(tenant_id, &stream.id);
    let (ack, event, body) = match seconds {
        Some(n) => {
            let until = now + i64::from(n) * 1000;
            let until = restrict(
                &mut conn,
                tenant_id,
                (&creator, target, &session),
                Some(until),
                now,
            )
            .await?;
            let at = until.map(db::messages::rfc3339_ms);
            let body = json!({ "streamId": stream.id, "userId": target, "until": at });
            (json!({ "until": at }), "chat-user-timed-out", body)
        }
        None if what == Sanction::Ban => {
            restrict(
                &mut conn,
                tenant_id,
                (&creator, target, &session),
                None,
                now,
            )
            .await?;
            let body = json!({ "streamId": stream.id, "userId": target });
            (json!({}), "chat-user-banned", body)
        }
        None => {
            db::stream_chat::lift(&mut conn, tenant_id, &creator, target)
                .await
                .map_err(|e| stored(&e))?;
            let body = json!({ "streamId": stream.id, "userId": target });
            (json!({}), "chat-user-unbanned", body)
        }
    };
    drop(conn);
    let _ = hub.scoped(s.within(room.clone())).emit(event, &body).await;
    if what == Sanction::Ban {
        // The banned user's sockets leave the room on every replica: they hear no more of it.
        let theirs = hub.scoped(s.within(super::user_room(tenant_id, target)));
        if let Err(e) = theirs.leave(room).await {
            tracing::warn!(error = %e, "realtime: a banned user's sockets did not all leave the room");
        }
    }
    Ok(protocol::ok(ack))
}

/// Writes a timeout (`until` Some) or ban; answers the timeout's end (a ban stays a ban).
async fn restrict(
    conn: &mut db::Conn,
    tenant_id: &str,
    (creator, target, by): (&str, &str, &Session),
    until: Option<i64>,
    now: i64,
) -> Result<Option<i64>, Refusal> {
    let now_restricted =
        db::stream_chat::restrict(conn, tenant_id, (creator, target, &by.user_id), until, now)
            .await
            .map_err(|e| stored(&e))?;
    Ok(match now_restricted {
        Some(Restriction::TimedOut { until_ms }) => Some(until_ms),
        _ => None,
    })
}

pub(super) async fn settings<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: SettingsPatch = protocol::parse("chat-settings", data)?;
    if req
        .slow_mode_secs
        .is_some_and(|n| n > chat::MAX_SLOW_MODE_SECS)
    {
        return Err(Refusal::invalid(format!(
            "slowModeSecs is 0 (off) to {} seconds.",
            chat::MAX_SLOW_MODE_SECS
        )));
    }
    let words = req
        .blocked_words
        .map(chat::normalize_words)
        .transpose()
        .map_err(refusal)?;
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let (stream, creator, _) = moderating(&mut conn, &session, &req.stream_id).await?;
    let tenant_id = &session.tenant_id;
    let mut settings = db::stream_chat::settings(&mut conn, tenant_id, &creator)
        .await
        .map_err(|e| stored(&e))?;
    settings.slow_mode_secs = req.slow_mode_secs.unwrap_or(settings.slow_mode_secs);
    settings.subscribers_only = req.subscribers_only.unwrap_or(settings.subscribers_only);
    if let Some(words) = words {
        settings.blocked_words = words;
    }
    db::stream_chat::put_settings(&mut conn, tenant_id, &creator, &settings, db::now_millis())
        .await
        .map_err(|e| stored(&e))?;
    drop(conn);
    let body = json!({ "streamId": stream.id, "settings": public_settings(&settings) });
    let room = stream_room(tenant_id, &stream.id);
    let _ = hub.scoped(s.to(room)).emit("chat-settings", &body).await;
    Ok(protocol::ok(json!({ "settings": settings })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(stream: &str) -> Joined {
        Joined {
            tenant_id: "ten".into(),
            stream_id: stream.into(),
            slug: format!("{stream}-slug"),
            creator_id: "star".into(),
        }
    }

    #[test]
    fn rooms_know_which_socket_is_in_which_stream() {
        let rooms = Rooms::default();
        let (a, b) = (Sid::new(), Sid::new());
        assert!(rooms.join(a, joined("s1")));
        assert!(!rooms.join(a, joined("s1")));
        assert!(rooms.join(a, joined("s2")));
        assert!(rooms.join(b, joined("s1")));
        assert_eq!(rooms.creator(a, "ten", "s2").as_deref(), Some("star"));
        assert_eq!(rooms.creator(b, "ten", "s2"), None);
        assert_eq!(rooms.creator(b, "other", "s1"), None);
        assert_eq!(rooms.streams().len(), 2);
        assert!(rooms.leave(a, "ten", "s2"));
        assert!(!rooms.leave(a, "ten", "s2"));
        assert_eq!(rooms.gone(a), 1);
        assert_eq!(rooms.gone(a), 0);
        assert_eq!(
            rooms.streams().into_keys().collect::<Vec<_>>(),
            vec![("ten".to_string(), "s1".to_string())]
        );
    }
}
