//! `/v1/me/conversations`: an end user's conversations and their history, with a user token.
//! What the gateway pushed while a client was away is here: the list (last message, unread
//! count, the other user's profile and presence) and each conversation's messages, newest first.

use super::AppState;
use super::auth::UserCaller;
use super::error::ApiResult;
use super::extract::{ApiPath, ApiQuery};
use crate::db;
use crate::db::messages::conversation_id;
use crate::users;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{
    Conversation, ConversationList, MessageHistoryParams, MessagePage, Peer, Problem,
};

/// How many conversations the list holds.
const MAX_CONVERSATIONS: u32 = 200;

/// The caller's conversations, most recently active first (at most 200), with the total of
/// unread messages.
#[utoipa::path(get, path = "/v1/me/conversations", tag = "messaging",
    responses((status = 200, body = ConversationList), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
) -> ApiResult<Json<ConversationList>> {
    let tenant = &me.tenant.id;
    let mut conn = st.db.conn().await?;
    let rows = db::messages::conversations(
        &mut conn,
        tenant,
        &me.user.id,
        MAX_CONVERSATIONS,
        st.realtime.alive_since(),
    )
    .await?;
    let items: Vec<Conversation> = rows
        .into_iter()
        .map(|row| Conversation {
            id: row.conversation_id,
            user: Peer {
                deleted: row.peer.display_name.is_none(),
                online: row.peer.online,
                display_name: row.peer.display_name,
                avatar_url: row.peer.avatar_url,
                last_seen: row.peer.last_seen_ms.map(db::rfc3339),
                id: row.peer.id,
            },
            last_message: row.last,
            unread_count: row.unread,
        })
        .collect();
    Ok(Json(ConversationList {
        unread_total: items.iter().map(|c| c.unread_count).sum(),
        items,
    }))
}

/// The caller's conversation with `user_id`, newest first; `before` pages to older messages.
#[utoipa::path(get, path = "/v1/me/conversations/{user_id}/messages", tag = "messaging",
    params(("user_id" = String, Path, description = "The other user's id"), MessageHistoryParams),
    responses((status = 200, body = MessagePage), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn history(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(other): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessageHistoryParams>,
) -> ApiResult<Json<MessagePage>> {
    let other = users::user_id(&other)?;
    let limit = super::extract::page_limit(q.limit)?;
    let conversation = conversation_id(&me.tenant.id, &me.user.id, other);
    let mut conn = st.db.conn().await?;
    let mut items =
        db::messages::history(&mut conn, &conversation, q.before.as_deref(), limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(Json(MessagePage {
        next_before: if more {
            items.last().map(|m| m.id.clone())
        } else {
            None
        },
        items,
    }))
}
