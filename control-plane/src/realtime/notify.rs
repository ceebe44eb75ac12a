//! Notifications over the gateway: `mark-notification-read` and `mark-all-notifications-read`
//! (acknowledged with the unread count after the commit), and the notification of a new
//! message, stored in the message's transaction (which also records it in the receiver's feed,
//! and pushes it to their devices after the commit).

use super::protocol::{self, MarkAllNotificationsRead, MarkNotificationRead, Refusal};
use super::{Hub, Session};
use crate::db::{self, Conn};
use crate::notifications;
use crate::webhooks::Outbox;
use onda_shared::api::{Message, NotificationPush};
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::sync::Arc;

/// Stores the notification of `message` for its receiver, from `sender_name`. Call it in the
/// message's transaction, so both are stored or neither.
pub(super) async fn message_notification(
    tx: &mut Conn,
    outbox: &Outbox,
    sender_name: &str,
    message: &Message,
) -> Result<NotificationPush, sqlx::Error> {
    let content = notifications::for_message(sender_name, message);
    let ms = db::now_millis();
    notifications::store_with(tx, outbox, &message.receiver_id, &content, ms).await
}

pub(super) async fn mark_read<A: Adapter>(
    hub: Arc<Hub>,
    _s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: MarkNotificationRead = protocol::parse("mark-notification-read", data)?;
    let mut conn = hub.db.conn().await.map_err(|e| protocol::stored(&e))?;
    let ms = db::now_millis();
    let (tenant, user) = (&session.tenant_id, &session.user_id);
    if !db::notifications::mark_read(&mut conn, tenant, user, &req.id, ms)
        .await
        .map_err(|e| protocol::stored(&e))?
    {
        return Err(Refusal::new(
            "not_found",
            format!("You have no notification {:.80?}.", req.id),
        ));
    }
    let unread = db::notifications::unread_count(&mut conn, tenant, user)
        .await
        .map_err(|e| protocol::stored(&e))?;
    Ok(protocol::ok(json!({ "unreadCount": unread })))
}

pub(super) async fn mark_all_read<A: Adapter>(
    hub: Arc<Hub>,
    _s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let MarkAllNotificationsRead {} = protocol::parse("mark-all-notifications-read", data)?;
    let mut conn = hub.db.conn().await.map_err(|e| protocol::stored(&e))?;
    let ms = db::now_millis();
    let (tenant, user) = (&session.tenant_id, &session.user_id);
    db::notifications::mark_all_read(&mut conn, tenant, user, ms)
        .await
        .map_err(|e| protocol::stored(&e))?;
    let unread = db::notifications::unread_count(&mut conn, tenant, user)
        .await
        .map_err(|e| protocol::stored(&e))?;
    Ok(protocol::ok(json!({ "unreadCount": unread })))
}
