//! Notifications over the gateway: `mark-notification-read` and `mark-all-notifications-read`,
//! acknowledged with the unread count after the commit. (The notification of a new message is
//! stored with the message, by the writer.)

use super::protocol::{self, MarkAllNotificationsRead, MarkNotificationRead, Refusal};
use super::{Hub, Session};
use crate::db;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::sync::Arc;

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
