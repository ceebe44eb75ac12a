//! Wire types of notifications, the same over REST and the realtime gateway. Their fields are
//! camelCase like the rest of the interactive layer (`unreadCount`, `createdAt`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One notification of an end user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: String,
    /// What happened, as a short name: `message.created` (Onda's own), or the tenant's
    /// (`subscriber.new`, …): 1 to 64 of `a-z 0-9 . _ -`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// Empty when the notification has none.
    pub body: String,
    /// Where the app takes the user: an http(s) URL or a path starting with '/'.
    pub link: Option<String>,
    /// Whatever the app needs to act on it: a JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Map<String, Value>,
    pub read: bool,
    /// RFC 3339 with milliseconds; None while unread.
    pub read_at: Option<String>,
    /// RFC 3339 with milliseconds.
    pub created_at: String,
}

/// `POST /v1/users/{user_id}/notifications`: a notification a tenant sends its user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateNotification {
    /// A short name: 1 to 64 of `a-z 0-9 . _ -` (`subscriber.new`).
    #[serde(rename = "type")]
    pub kind: String,
    /// At most 200 characters, not blank.
    pub title: String,
    /// At most 2000 characters.
    #[serde(default)]
    pub body: String,
    /// An http or https URL, or a path starting with '/' (at most 2048 characters).
    pub link: Option<String>,
    /// A JSON object of at most 4 KiB (serialized); defaults to `{}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<Value>,
}

/// `GET /v1/me/notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationList {
    /// Newest first.
    pub items: Vec<Notification>,
    /// All the user's unread notifications, not only this page's.
    pub unread_count: u64,
    /// Pass as `before` for older notifications; None on the oldest page.
    pub next_before: Option<String>,
}

/// Parameters of `GET /v1/me/notifications`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct NotificationListParams {
    /// Notifications per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// A notification id: only notifications older than it.
    pub before: Option<String>,
    /// Only unread notifications.
    #[serde(default)]
    pub unread: bool,
}

/// The `notification` event of the realtime gateway: a new notification and the user's unread
/// count with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationPush {
    pub notification: Notification,
    pub unread_count: u64,
}

/// What marking notifications read answers: the user's unread count after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnreadCount {
    pub unread_count: u64,
}
