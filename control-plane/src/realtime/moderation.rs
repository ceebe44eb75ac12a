//! Events that change or police what was said: editing and deleting one's own message (with its
//! attachment, unless another message carries it too), blocking
//! a user (a blocked user cannot message or type to the blocker), and reporting a message (the
//! report keeps the message as the reporter saw it, listed for the tenant at `GET /v1/reports`).

use super::protocol::{self, Refusal};
use super::recovery::{self, Entry};
use super::{Hub, Session};
use crate::db;
use crate::users;
use crate::webhooks;
use onda_shared::api::WebhookEventType;
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::sync::Arc;

/// The longest reason of a report, in characters.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EditMessage {
    message_id: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeleteMessage {
    message_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Block {
    user_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReportMessage {
    message_id: String,
    reason: String,
}

fn not_yours() -> Refusal {
    Refusal::new(
        "not_found",
        "There is no such message of yours (or it is already deleted).",
    )
}

/// Records, in the change's transaction `tx`, that both users' devices are to hear of it; send
/// the result with `recovery::send` after the commit.
async fn record_both(
    tx: &mut crate::db::Conn,
    session: &Session,
    other: &str,
    event: &'static str,
    body: Value,
) -> Result<Vec<recovery::Recorded>, Refusal> {
    recovery::record(
        tx,
        &session.tenant_id,
        vec![
            Entry::new(other, event, body.clone()),
            Entry::new(&session.user_id, event, body),
        ],
    )
    .await
    .map_err(|e| protocol::stored(&e))
}

pub(super) async fn edit_message<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: EditMessage = protocol::parse("edit-message", data)?;
    let content = protocol::content(&req.content, false)?;
    let mut tx = hub.db.begin().await.map_err(|e| protocol::stored(&e))?;
    let message = db::messages::edit(
        &mut tx,
        &session.tenant_id,
        &session.user_id,
        &req.message_id,
        content,
        db::now_millis(),
    )
    .await
    .map_err(|e| protocol::stored(&e))?
    .ok_or_else(not_yours)?;
    let recorded = record_both(
        &mut tx,
        &session,
        &message.receiver_id,
        "message-edited",
        json!(message),
    )
    .await?;
    tx.commit().await.map_err(|e| protocol::stored(&e))?;
    recovery::send(&hub, &s, &session.tenant_id, &recorded).await;
    Ok(protocol::ok(json!({
        "id": message.id,
        "editedAt": message.edited_at,
        "offset": recovery::own_offset(&recorded, &session.user_id),
    })))
}

pub(super) async fn delete_message<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: DeleteMessage = protocol::parse("delete-message", data)?;
    // The attachment goes with the last message that carries it: its row in the same
    // transaction, its blob after the commit, under the store's reference lock.
    let refs = hub.media.lock_refs().await;
    let mut tx = hub.db.begin().await.map_err(|e| protocol::stored(&e))?;
    let media_url = db::messages::get(&mut tx, &session.tenant_id, &req.message_id)
        .await
        .map_err(|e| protocol::stored(&e))?
        .and_then(|m| m.media_url);
    let message = db::messages::delete(
        &mut tx,
        &session.tenant_id,
        &session.user_id,
        &req.message_id,
        db::now_millis(),
    )
    .await
    .map_err(|e| protocol::stored(&e))?
    .ok_or_else(not_yours)?;
    let orphan = match &media_url {
        Some(url) => db::attachments::delete_unless_sent(&mut tx, &session.tenant_id, url)
            .await
            .map_err(|e| protocol::stored(&e))?,
        None => None,
    };
    let body = json!({
        "id": message.id,
        "conversationId": message.conversation_id,
        "deletedAt": message.deleted_at,
    });
    let recorded = record_both(
        &mut tx,
        &session,
        &message.receiver_id,
        "message-deleted",
        body,
    )
    .await?;
    tx.commit().await.map_err(|e| protocol::stored(&e))?;
    if let Some(sha256) = orphan {
        hub.media
            .remove_if_unreferenced(&refs, &hub.db, &sha256)
            .await;
    }
    drop(refs);
    recovery::send(&hub, &s, &session.tenant_id, &recorded).await;
    Ok(protocol::ok(json!({
        "id": message.id,
        "offset": recovery::own_offset(&recorded, &session.user_id),
    })))
}

pub(super) async fn block<A: Adapter>(
    hub: Arc<Hub>,
    _s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
    blocking: bool,
) -> Result<Value, Refusal> {
    let event = if blocking {
        "block-user"
    } else {
        "unblock-user"
    };
    let req: Block = protocol::parse(event, data)?;
    let other =
        users::user_id(&req.user_id).map_err(|e| Refusal::invalid(format!("userId: {e}")))?;
    if other == session.user_id {
        return Err(Refusal::invalid("userId is your own id."));
    }
    let mut conn = hub.db.conn().await.map_err(|e| protocol::stored(&e))?;
    let done = if blocking {
        db::moderation::block(
            &mut conn,
            &session.tenant_id,
            &session.user_id,
            other,
            db::now_millis(),
        )
        .await
    } else {
        db::moderation::unblock(&mut conn, &session.tenant_id, &session.user_id, other).await
    };
    done.map_err(|e| protocol::stored(&e))?;
    Ok(protocol::ok(
        json!({ "userId": other, "blocked": blocking }),
    ))
}

/// Whether `sender` may message or type to `receiver`: neither blocked the other.
pub(super) async fn may_reach(hub: &Hub, session: &Session, receiver: &str) -> Result<(), Refusal> {
    let mut conn = hub.db.conn().await.map_err(|e| protocol::stored(&e))?;
    let (i_blocked, they_blocked) =
        db::moderation::between(&mut conn, &session.tenant_id, &session.user_id, receiver)
            .await
            .map_err(|e| protocol::stored(&e))?;
    unblocked(i_blocked, they_blocked)
}

/// The refusal when either user blocked the other.
pub(super) fn unblocked(i_blocked: bool, they_blocked: bool) -> Result<(), Refusal> {
    if they_blocked {
        return Err(Refusal::new(
            "blocked",
            "This user does not accept messages from you.",
        ));
    }
    if i_blocked {
        return Err(Refusal::new(
            "blocked",
            "You blocked this user: unblock them (unblock-user) to message them.",
        ));
    }
    Ok(())
}

pub(super) async fn report<A: Adapter>(
    hub: Arc<Hub>,
    _s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: ReportMessage = protocol::parse("report-message", data)?;
    let reason = req.reason.trim();
    let n = reason.chars().count();
    if n == 0 || n > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(Refusal::invalid(format!(
            "reason must be 1 to {MAX_REASON_CHARS} characters without control characters."
        )));
    }
    let mut tx = hub.db.begin().await.map_err(|e| protocol::stored(&e))?;
    let message = db::messages::get(&mut tx, &session.tenant_id, &req.message_id)
        .await
        .map_err(|e| protocol::stored(&e))?
        // Only a message the reporter could see: one of their own conversations.
        .filter(|m| m.sender_id == session.user_id || m.receiver_id == session.user_id)
        .ok_or_else(|| {
            Refusal::new(
                "not_found",
                "There is no such message in your conversations.",
            )
        })?;
    let id = crate::secrets::new_time_id("rpt", db::now_millis());
    db::moderation::report(
        &mut tx,
        &session.tenant_id,
        &id,
        &session.user_id,
        reason,
        &message,
        db::now_millis(),
    )
    .await
    .map_err(|e| protocol::stored(&e))?;
    let event =
        json!({ "id": id, "reporterId": session.user_id, "reason": reason, "message": message });
    webhooks::enqueue(
        &mut tx,
        &session.tenant_id,
        WebhookEventType::ReportCreated,
        &event,
    )
    .await
    .map_err(|e| protocol::stored(&e))?;
    tx.commit().await.map_err(|e| protocol::stored(&e))?;
    Ok(protocol::ok(json!({ "id": id })))
}
