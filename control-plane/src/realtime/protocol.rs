//! The gateway's events as data: what clients send (checked strictly: unknown fields, wrong
//! types and oversized values are refused with an error ack, never a disconnect), and the acks
//! they get back. Pure but for `stored` (which logs a database error), so every refusal is
//! tested without a socket. `docs/realtime.md` is the reference for clients.

use onda_shared::api::MediaType;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The longest message text, in characters.
pub const MAX_CONTENT_CHARS: usize = 4000;

/// Why an event was refused: a stable `code` clients branch on, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    /// For `rate_limited`: when to try again.
    pub retry_after_ms: Option<u64>,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new("invalid_payload", message)
    }

    /// The server is overloaded and did nothing: send the same event again in a second.
    pub fn busy(message: impl Into<String>) -> Refusal {
        Refusal {
            retry_after_ms: Some(1000),
            ..Refusal::new("busy", message)
        }
    }

    /// The error ack: `{ error: { code, message[, retryAfterMs] } }`.
    pub fn ack(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(ms) = self.retry_after_ms {
            error["retryAfterMs"] = json!(ms);
        }
        json!({ "error": error })
    }
}

/// A storage failure: logged here, told to the client without details.
pub fn stored(e: &sqlx::Error) -> Refusal {
    if matches!(e, sqlx::Error::PoolTimedOut) {
        // Overload, not a fault: the client may send the same event again.
        return Refusal::busy(crate::db::POOL_BUSY);
    }
    tracing::error!(error = %e, "realtime: database");
    Refusal::new("internal", "The server could not do this; try again.")
}

/// The event's payload as a `T`, or an `invalid_payload` refusal naming what is wrong.
pub fn parse<T: DeserializeOwned>(event: &str, payload: Option<Value>) -> Result<T, Refusal> {
    // serde would also read a struct from an array of its fields in order; a client's
    // payload is an object with named fields, nothing else.
    let Some(payload) = payload.filter(Value::is_object) else {
        return Err(Refusal::invalid(format!(
            "{event} needs a JSON object as its first argument."
        )));
    };
    serde_json::from_value(payload)
        .map_err(|e| Refusal::invalid(format!("{event}: the payload does not fit ({e}).")))
}

/// `send-message`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendMessage {
    pub receiver_id: String,
    #[serde(default)]
    pub content: String,
    pub media_url: Option<String>,
    pub media_type: Option<String>,
}

/// The attachment a `mediaUrl` names: the `url` of `POST /v1/me/attachments`'s answer
/// (`/v1/attachments/{id}`, or that path on `http.public_url`), or that path on any origin (a
/// client may resolve it against the API's). Returns the attachment's id.
pub fn attachment_id(media_url: &str) -> Result<&str, Refusal> {
    crate::db::attachments::id_in(media_url).ok_or_else(|| {
        Refusal::invalid(
            "mediaUrl must be the url of an attachment you uploaded (POST /v1/me/attachments \
             answers it: /v1/attachments/{id}).",
        )
    })
}

/// The `mediaType` of a message with an attachment of type `actual`: the attachment's, which a
/// client may also state (and then must state right).
pub fn media_type(stated: Option<&str>, actual: MediaType) -> Result<MediaType, Refusal> {
    match stated {
        None => Ok(actual),
        Some(s) if s == actual.as_str() => Ok(actual),
        Some(s) => Err(Refusal::invalid(format!(
            "mediaType is {s:?}, but the attachment at mediaUrl is {:?}; send {:?} or leave \
             mediaType out.",
            actual.as_str(),
            actual.as_str()
        ))),
    }
}

/// The text of a message, checked: UTF-8 (emoji welcome), at most 4000 characters, no NUL or
/// other control characters except line breaks and tabs.
pub fn content(text: &str, has_media: bool) -> Result<&str, Refusal> {
    let n = text.chars().count();
    if n > MAX_CONTENT_CHARS {
        return Err(Refusal::invalid(format!(
            "content has {n} characters; a message has at most {MAX_CONTENT_CHARS}."
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Refusal::invalid(
            "content must not contain NUL or other control characters.",
        ));
    }
    if text.trim().is_empty() && !has_media {
        return Err(Refusal::invalid(
            "A message needs content or a media attachment.",
        ));
    }
    Ok(text)
}

/// `send-tip`: the fields of `POST /v1/me/tips` and the idempotency key (1 to 255 visible
/// ASCII characters) that a retry sends again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendTip {
    pub creator_id: String,
    pub amount: i64,
    #[serde(default)]
    pub message: String,
    pub idempotency_key: String,
    /// A stream of the creator's whose chat shows the tip.
    pub stream_id: Option<String>,
}

/// `mark-read`: what `senderId` sent is read, up to `messageId` (the newest when absent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MarkRead {
    pub sender_id: String,
    pub message_id: Option<String>,
}

/// `typing-start` and `typing-stop`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Typing {
    pub receiver_id: String,
}

/// The event that pushes a new notification, with the user's unread count, to every device of
/// its user.
pub const NOTIFICATION: &str = "notification";

/// `mark-notification-read`: one of your notifications is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MarkNotificationRead {
    pub id: String,
}

/// `mark-all-notifications-read`: every one of your notifications is read. No fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkAllNotificationsRead {}

/// The success ack of a state change, after it is committed.
pub fn ok(fields: Value) -> Value {
    let mut ack = json!({ "ok": true });
    if let (Some(ack), Value::Object(fields)) = (ack.as_object_mut(), fields) {
        ack.extend(fields);
    }
    ack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_timeout_is_busy_and_says_when_to_retry() {
        let busy = stored(&sqlx::Error::PoolTimedOut);
        assert_eq!((busy.code, busy.retry_after_ms), ("busy", Some(1000)));
        assert!(busy.message.contains("again"), "{}", busy.message);
        assert_eq!(stored(&sqlx::Error::RowNotFound).code, "internal");
    }

    #[test]
    fn payloads_are_checked_strictly() {
        let good = json!({"receiverId": "bo", "content": "hi 👋"});
        let m: SendMessage = parse("send-message", Some(good)).expect("fits");
        assert_eq!(m.receiver_id, "bo");
        for bad in [
            json!({"receiverId": 5, "content": "x"}),
            json!({"receiverId": "bo", "content": "x", "senderId": "me"}),
            json!("just text"),
            json!(["bo", "x", null, null]),
        ] {
            let e = parse::<SendMessage>("send-message", Some(bad)).expect_err("refused");
            assert_eq!(e.code, "invalid_payload");
            assert!(e.message.starts_with("send-message"), "{}", e.message);
        }
        let e = parse::<SendMessage>("send-message", None).expect_err("refused");
        assert!(e.message.contains("JSON object"));
    }

    #[test]
    fn a_tip_event_needs_its_key_and_whole_amounts() {
        let t: SendTip = parse(
            "send-tip",
            Some(json!({"creatorId": "star", "amount": 500, "idempotencyKey": "k1"})),
        )
        .expect("fits");
        assert_eq!((t.amount, t.message.as_str()), (500, ""));
        for bad in [
            json!({"creatorId": "star", "amount": 500}),
            json!({"creatorId": "star", "amount": 1.5, "idempotencyKey": "k1"}),
            json!({"creatorId": "star", "amount": "500", "idempotencyKey": "k1"}),
            json!({"creatorId": "star", "amount": 5, "idempotencyKey": "k1", "senderId": "x"}),
        ] {
            let e = parse::<SendTip>("send-tip", Some(bad.clone())).expect_err("refused");
            assert_eq!(e.code, "invalid_payload", "{bad}");
        }
    }

    #[test]
    fn message_text_rules() {
        assert!(content("hello\nworld 🎉", false).is_ok());
        assert!(content(&"é".repeat(MAX_CONTENT_CHARS), false).is_ok());
        let e = content(&"é".repeat(MAX_CONTENT_CHARS + 1), false).expect_err("long");
        assert!(e.message.contains("4001"));
        assert!(content("a\u{0}b", false).is_err());
        assert!(content("a\u{1b}[31m", false).is_err());
        assert!(content("  ", false).is_err());
        assert!(content("", true).is_ok());
    }

    #[test]
    fn media_urls_name_attachments() {
        let id = "att_0123456789abcdefABCDEF0123456789";
        assert_eq!(attachment_id(&format!("/v1/attachments/{id}")), Ok(id));
        assert_eq!(
            attachment_id(&format!("https://panel.example.com/v1/attachments/{id}")),
            Ok(id)
        );
        for bad in [
            "https://x/y.png".to_string(),
            "/v1/attachments/".to_string(),
            format!("/v1/attachments/{id}/x"),
            format!("/v1/attachments/{id}?a=1"),
            format!("/v1/media/{id}"),
            "/v1/attachments/att_short".to_string(),
            String::new(),
        ] {
            let e = attachment_id(&bad).expect_err("refused");
            assert_eq!(e.code, "invalid_payload", "{bad}");
            assert!(
                e.message.contains("POST /v1/me/attachments"),
                "{}",
                e.message
            );
        }
        assert_eq!(media_type(None, MediaType::Audio), Ok(MediaType::Audio));
        assert_eq!(
            media_type(Some("image"), MediaType::Image),
            Ok(MediaType::Image)
        );
        let e = media_type(Some("video"), MediaType::Image).expect_err("wrong type");
        assert!(e.message.contains("\"image\""), "{}", e.message);
    }

    #[test]
    fn acks_have_one_shape() {
        assert_eq!(ok(json!({"id": "m1"})), json!({"ok": true, "id": "m1"}));
        let mut r = Refusal::new("rate_limited", "Slow down.");
        r.retry_after_ms = Some(250);
        assert_eq!(
            r.ack(),
            json!({"error": {"code": "rate_limited", "message": "Slow down.", "retryAfterMs": 250}})
        );
    }
}
