//! Live streams' chats: a message as the room and the saved chat show it, and a creator's chat
//! settings.

use serde::{Deserialize, Serialize};

/// What a chat line is: something a viewer said, or a tip shown to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChatMessageKind {
    Message,
    Tip,
}

impl ChatMessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatMessageKind::Message => "message",
            ChatMessageKind::Tip => "tip",
        }
    }
}

impl std::str::FromStr for ChatMessageKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [ChatMessageKind::Message, ChatMessageKind::Tip]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a chat message kind"))
    }
}

/// A line of a stream's chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// `chm_…`, in time order.
    pub id: String,
    pub stream_id: String,
    pub user_id: String,
    /// The author's display name now ("Deleted user" once their profile is gone).
    pub display_name: String,
    pub kind: ChatMessageKind,
    /// What was said (a tip's message); empty once deleted.
    pub content: String,
    /// A tip's amount, in minor units of the tenant's currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// Removed by a moderator or its author (only the saved chat shows such lines).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// How a creator's streams' chats run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatSettings {
    /// Seconds a viewer waits between two messages (0: off); moderators are exempt.
    pub slow_mode_secs: u32,
    /// Only the creator's subscribers (and moderators) may write.
    pub subscribers_only: bool,
    /// Words (case-insensitive, whole words) a message may not contain.
    pub blocked_words: Vec<String>,
}

/// A creator's chat moderators (`GET /v1/me/moderators`, `GET /v1/creators/{id}/moderators`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Moderators {
    pub creator_id: String,
    /// User ids, sorted.
    pub moderators: Vec<String>,
}
