//! Wire types of messaging, the same over the realtime gateway and REST. Their fields are
//! camelCase, as creator platforms' Socket.io clients already name them (`senderId`,
//! `receiverId`, `createdAt`).

use serde::{Deserialize, Serialize};

/// One message of a 1-to-1 conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub sender_id: String,
    pub receiver_id: String,
    /// Empty once the message is deleted.
    pub content: String,
    /// The attachment's `url` (`/v1/attachments/{id}`, absolute on `http.public_url` when that
    /// was set when the message was sent); None once the message is deleted.
    pub media_url: Option<String>,
    /// "image", "audio" or "video" when the message has an attachment.
    pub media_type: Option<String>,
    /// RFC 3339 with milliseconds.
    pub created_at: String,
    pub edited_at: Option<String>,
    pub deleted_at: Option<String>,
}

/// What kind of media an attachment is; a message's `mediaType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    Image,
    Audio,
    Video,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Image => "image",
            MediaType::Audio => "audio",
            MediaType::Video => "video",
        }
    }

    pub fn parse(s: &str) -> Option<MediaType> {
        match s {
            "image" => Some(MediaType::Image),
            "audio" => Some(MediaType::Audio),
            "video" => Some(MediaType::Video),
            _ => None,
        }
    }
}

/// A media file an end user uploaded for a message (`POST /v1/me/attachments`). `url` is a
/// capability: anyone who has it can fetch the file, without a token, so it works in
/// `<img src>`; send it as a message's `mediaUrl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: String,
    /// `/v1/attachments/{id}`: a path on the API's origin, or an absolute URL on the control
    /// plane's `http.public_url` when that is set.
    pub url: String,
    pub media_type: MediaType,
    /// The type it was uploaded and is served as, e.g. "image/png".
    pub content_type: String,
    pub bytes: u64,
    /// Pixels, for images and video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Measured by decoding, for audio and video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The other member of a conversation as its member sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub id: String,
    /// None when the user was deleted: their messages stay, their profile is gone.
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub deleted: bool,
    pub online: bool,
    pub last_seen: Option<String>,
}

/// One conversation in its member's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub user: Peer,
    pub last_message: Option<Message>,
    pub unread_count: u64,
}

/// `GET /v1/me/conversations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    /// Most recently active first.
    pub items: Vec<Conversation>,
    pub unread_total: u64,
}

/// A page of a conversation's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    pub items: Vec<Message>,
    /// Pass as `before` for older messages; None on the oldest page.
    pub next_before: Option<String>,
}

/// Parameters of a conversation's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct MessageHistoryParams {
    /// Messages per page, 1 to 100 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// A message id: only messages older than it.
    pub before: Option<String>,
}

/// An abuse report of a message, with the message as the reporter saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub id: String,
    pub reporter_id: String,
    pub reason: String,
    pub message: Message,
    pub created_at: String,
}
