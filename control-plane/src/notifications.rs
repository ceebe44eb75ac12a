//! Notifications of end users: what one may hold (pure checks, so every refusal is tested
//! without a server), the one Onda writes for a new message, and [`store`], the one way both the
//! REST route and the gateway create them: stored, then counted with the user's unread ones for
//! the live `notification` event, with its `notification.created` webhook event in the same
//! transaction.

use crate::db::{self, Conn};
use crate::validate::Invalid;
use onda_shared::api::{
    CreateNotification, Message, NotificationPush, Payout, PayoutStatus, Tip, WebhookEventType,
};
use serde_json::{Map, Value, json};

/// The longest `type`.
pub const MAX_KIND: usize = 64;
/// The longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// The longest body, in characters.
pub const MAX_BODY: usize = 2000;
/// The longest link.
pub const MAX_LINK: usize = 2048;
/// The largest `data` object, serialized.
pub const MAX_DATA_BYTES: usize = 4096;
/// How much of a message its notification shows, in characters.
pub const MESSAGE_PREVIEW_CHARS: usize = 100;

/// The `type` of the notification Onda makes for a new message.
pub const MESSAGE_CREATED: &str = "message.created";
/// The `type` of the notification a creator gets for a tip (a payment received).
pub const PAYMENT_RECEIVED: &str = "payment.received";
/// The `type` of the notification a creator gets when the tenant decided their payout.
pub const PAYOUT_PROCESSED: &str = "payout.processed";

/// A notification's content, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub kind: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub data: Map<String, Value>,
}

/// The notification a tenant asks for, checked.
pub fn check(req: CreateNotification) -> Result<Content, Invalid> {
    let data = match req.data {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(Invalid::Value("data must be a JSON object.".to_string())),
    };
    let size = Value::Object(data.clone()).to_string().len();
    if size > MAX_DATA_BYTES {
        return Err(Invalid::Value(format!(
            "data is {size} bytes as JSON; at most {MAX_DATA_BYTES} are kept."
        )));
    }
    Ok(Content {
        kind: kind(&req.kind)?.to_string(),
        title: text("title", &req.title, MAX_TITLE, false)?.to_string(),
        body: text("body", &req.body, MAX_BODY, true)?.to_string(),
        link: req.link.as_deref().map(link).transpose()?,
        data,
    })
}

/// A `type`: 1 to 64 of `a-z 0-9 . _ -`, so apps can switch on it as is.
fn kind(value: &str) -> Result<&str, Invalid> {
    let ok = (1..=MAX_KIND).contains(&value.len())
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(value)
    } else {
        Err(Invalid::Value(format!(
            "type {value:.80?} must be 1 to {MAX_KIND} of a-z, 0-9, '.', '_' and '-'."
        )))
    }
}

/// Text shown to the user: at most `max` characters, no control characters but line breaks
/// and tabs; blank only when `may_be_empty`.
fn text<'a>(
    field: &str,
    value: &'a str,
    max: usize,
    may_be_empty: bool,
) -> Result<&'a str, Invalid> {
    let n = value.chars().count();
    if n > max {
        return Err(Invalid::Value(format!(
            "{field} has {n} characters; at most {max} are kept."
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid::Value(format!(
            "{field} must not contain control characters other than line breaks and tabs."
        )));
    }
    if !may_be_empty && value.trim().is_empty() {
        return Err(Invalid::Value(format!("{field} must not be blank.")));
    }
    Ok(value)
}

/// A link: an http(s) URL, or a path of the app starting with '/' (never `javascript:` or
/// another scheme an app would follow blindly, nor `//host`, which is another site).
fn link(value: &str) -> Result<String, Invalid> {
    if value.len() > MAX_LINK {
        return Err(Invalid::Value(format!(
            "link is longer than {MAX_LINK} characters."
        )));
    }
    let path = value.starts_with('/')
        && !value.starts_with("//")
        && !value.contains('\\')
        && !value.chars().any(|c| c.is_control() || c.is_whitespace());
    if path {
        return Ok(value.to_string());
    }
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(u.to_string()),
        _ => Err(Invalid::Value(format!(
            "link {value:.80?} is neither an http or https URL nor a path starting with '/'."
        ))),
    }
}

/// The notification of a new message for its receiver: its first characters, or what it
/// carries when it is only an attachment.
pub fn for_message(sender_name: &str, message: &Message) -> Content {
    let preview: String = match message.media_type.as_deref() {
        Some(kind) if message.content.trim().is_empty() => match kind {
            "image" => "Sent an image.",
            "audio" => "Sent audio.",
            "video" => "Sent a video.",
            _ => "Sent an attachment.",
        }
        .to_string(),
        _ => message
            .content
            .chars()
            .take(MESSAGE_PREVIEW_CHARS)
            .collect(),
    };
    let mut data = Map::new();
    data.insert("conversationId".into(), json!(message.conversation_id));
    data.insert("messageId".into(), json!(message.id));
    data.insert("senderId".into(), json!(message.sender_id));
    Content {
        kind: MESSAGE_CREATED.to_string(),
        title: format!("New message from {sender_name}"),
        body: preview,
        link: None,
        data,
    }
}

/// The creator's notification of a tip ("payment received"): who sent it, how much reached
/// their earnings, and the fan's message as its body. Amounts are minor units of `currency`.
pub fn for_tip(sender_name: &str, tip: &Tip) -> Content {
    let mut data = Map::new();
    data.insert("tipId".into(), json!(tip.id));
    data.insert("senderId".into(), json!(tip.sender_id));
    data.insert("amount".into(), json!(tip.amount));
    data.insert("net".into(), json!(tip.net));
    data.insert("currency".into(), json!(tip.currency));
    Content {
        kind: PAYMENT_RECEIVED.to_string(),
        title: format!("Payment received: a tip from {sender_name}"),
        body: tip.message.clone(),
        link: None,
        data,
    }
}

/// The creator's notification that the tenant paid or rejected their payout ("payout
/// processed").
pub fn for_payout(payout: &Payout) -> Content {
    let body = match (payout.status, payout.reason.as_deref()) {
        (PayoutStatus::Rejected, Some(reason)) => format!(
            "Your payout of {} (minor units of {}) was rejected: {reason} The amount is back in \
             your earnings.",
            payout.amount, payout.currency
        ),
        _ => format!(
            "Your payout of {} (minor units of {}) was paid.",
            payout.amount, payout.currency
        ),
    };
    let mut data = Map::new();
    data.insert("payoutId".into(), json!(payout.id));
    data.insert("status".into(), json!(payout.status));
    data.insert("amount".into(), json!(payout.amount));
    data.insert("currency".into(), json!(payout.currency));
    Content {
        kind: PAYOUT_PROCESSED.to_string(),
        title: "Payout processed".to_string(),
        body,
        link: None,
        data,
    }
}

/// Stores `content` for the user and counts their unread notifications with it: the payload of
/// the `notification` event, to push once the caller's transaction commits.
pub async fn store(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
    content: &Content,
    created_ms: i64,
) -> Result<NotificationPush, sqlx::Error> {
    let outbox = crate::webhooks::Outbox::load(conn, tenant_id).await?;
    store_with(conn, &outbox, user_id, content, created_ms).await
}

/// As [`store`], with the tenant's webhook endpoints already read by the caller's transaction.
pub async fn store_with(
    conn: &mut Conn,
    outbox: &crate::webhooks::Outbox,
    user_id: &str,
    content: &Content,
    created_ms: i64,
) -> Result<NotificationPush, sqlx::Error> {
    let mut pushed = store_many(conn, outbox, &[(user_id, content)], created_ms).await?;
    pushed.pop().ok_or(sqlx::Error::RowNotFound)
}

/// Stores a notification for each (user, content) of the outbox's tenant, in a few statements
/// whatever the count; answers their pushes in the order given. A user who gets several here
/// is told the same unread count (the one after all of them) with each.
pub async fn store_many(
    conn: &mut Conn,
    outbox: &crate::webhooks::Outbox,
    items: &[(&str, &Content)],
    created_ms: i64,
) -> Result<Vec<NotificationPush>, sqlx::Error> {
    let tenant_id = outbox.tenant_id();
    let ids: Vec<String> = items
        .iter()
        .map(|_| crate::secrets::new_time_id("ntf", created_ms))
        .collect();
    let new: Vec<db::notifications::NewNotification<'_>> = items
        .iter()
        .zip(&ids)
        .map(
            |((user_id, content), id)| db::notifications::NewNotification {
                id,
                tenant_id,
                user_id,
                kind: &content.kind,
                title: &content.title,
                body: &content.body,
                link: content.link.as_deref(),
                data: &content.data,
                created_ms,
            },
        )
        .collect();
    let stored = db::notifications::insert_all(conn, &new).await?;
    // The tenant's backend hears of them in the same transaction (the outbox).
    let mut events = Vec::with_capacity(stored.len());
    for (notification, (user_id, _)) in stored.iter().zip(items) {
        let mut event =
            serde_json::to_value(notification).map_err(|e| sqlx::Error::Encode(e.into()))?;
        if let Value::Object(fields) = &mut event {
            fields.insert("userId".into(), json!(user_id));
        }
        events.push(event);
    }
    outbox
        .enqueue_many(conn, WebhookEventType::NotificationCreated, &events)
        .await?;
    let users: Vec<&str> = items.iter().map(|(u, _)| *u).collect();
    let unread = db::notifications::unread_counts(conn, tenant_id, &users).await?;
    Ok(stored
        .into_iter()
        .zip(items)
        .map(|(notification, (user_id, _))| NotificationPush {
            notification,
            unread_count: unread.get(*user_id).copied().unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> CreateNotification {
        serde_json::from_value(v).expect("fits the wire type")
    }

    #[test]
    fn a_tenants_notification_is_checked() {
        let ok = check(req(json!({
            "type": "subscriber.new", "title": "Ana subscribed 🎉",
            "link": "/fans/ana", "data": {"tier": 2}
        })))
        .expect("valid");
        assert_eq!(ok.kind, "subscriber.new");
        assert_eq!(ok.body, "");
        assert_eq!(ok.link.as_deref(), Some("/fans/ana"));
        assert_eq!(ok.data["tier"], 2);
        for (bad, says) in [
            (json!({"type": "Subscriber", "title": "x"}), "type"),
            (json!({"type": "", "title": "x"}), "type"),
            (json!({"type": "a".repeat(65), "title": "x"}), "type"),
            (json!({"type": "a", "title": "  "}), "blank"),
            (json!({"type": "a", "title": "é".repeat(201)}), "201"),
            (
                json!({"type": "a", "title": "x", "body": "b".repeat(2001)}),
                "body",
            ),
            (json!({"type": "a", "title": "a\u{1b}[31m"}), "control"),
            (json!({"type": "a", "title": "x", "data": [1]}), "object"),
            (
                json!({"type": "a", "title": "x", "data": {"k": "v".repeat(4100)}}),
                "4096",
            ),
            (
                json!({"type": "a", "title": "x", "link": "javascript:alert(1)"}),
                "link",
            ),
            (
                json!({"type": "a", "title": "x", "link": "//evil.example/x"}),
                "link",
            ),
            (
                json!({"type": "a", "title": "x", "link": "ftp://example.com/x"}),
                "link",
            ),
            (json!({"type": "a", "title": "x", "link": "/a b"}), "link"),
        ] {
            let e = check(req(bad.clone())).expect_err("refused").to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let url = check(req(
            json!({"type": "a", "title": "x", "link": "https://example.com/p?q=1"}),
        ))
        .expect("an https link");
        assert_eq!(url.link.as_deref(), Some("https://example.com/p?q=1"));
        assert!(check(req(json!({"type": "a", "title": "é".repeat(200)}))).is_ok());
    }

    #[test]
    fn money_notifications_say_what_happened() {
        let tip = Tip {
            id: "txn_1".into(),
            sender_id: "fan-1".into(),
            creator_id: "star".into(),
            amount: 999,
            fee: 199,
            net: 800,
            currency: "EUR".into(),
            message: "great set".into(),
            created_at: String::new(),
        };
        let n = for_tip("Fan One", &tip);
        assert_eq!(n.kind, PAYMENT_RECEIVED);
        assert_eq!(n.title, "Payment received: a tip from Fan One");
        assert_eq!(n.body, "great set");
        assert_eq!(
            Value::Object(n.data),
            json!({"tipId": "txn_1", "senderId": "fan-1", "amount": 999, "net": 800, "currency": "EUR"})
        );
        let mut payout = Payout {
            id: "pyt_1".into(),
            user_id: "star".into(),
            amount: 700,
            currency: "EUR".into(),
            status: PayoutStatus::Paid,
            reference: Some("tr_1".into()),
            reason: None,
            request_transaction_id: "txn_2".into(),
            decision_transaction_id: Some("txn_3".into()),
            created_at: String::new(),
            decided_at: None,
        };
        let n = for_payout(&payout);
        assert_eq!(
            (n.kind.as_str(), n.title.as_str()),
            (PAYOUT_PROCESSED, "Payout processed")
        );
        assert!(
            n.body.contains("700") && n.body.contains("paid"),
            "{}",
            n.body
        );
        payout.status = PayoutStatus::Rejected;
        payout.reason = Some("No bank account on file.".into());
        let n = for_payout(&payout);
        assert!(
            n.body.contains("rejected: No bank account on file.") && n.body.contains("back"),
            "{}",
            n.body
        );
        assert_eq!(n.data["status"], "rejected");
    }

    #[test]
    fn a_message_notification_shows_the_first_100_characters() {
        let message = Message {
            id: "msg_1".into(),
            conversation_id: "cnv_1".into(),
            sender_id: "fan-1".into(),
            receiver_id: "creator-1".into(),
            content: "🎧".repeat(150),
            media_url: None,
            media_type: None,
            created_at: String::new(),
            edited_at: None,
            deleted_at: None,
        };
        let n = for_message("Fan One", &message);
        assert_eq!(n.kind, MESSAGE_CREATED);
        assert_eq!(n.title, "New message from Fan One");
        assert_eq!(n.body, "🎧".repeat(100));
        let photo = Message {
            content: String::new(),
            media_url: Some("/v1/attachments/att_x".into()),
            media_type: Some("image".into()),
            ..message.clone()
        };
        assert_eq!(for_message("Fan One", &photo).body, "Sent an image.");
        let captioned = Message {
            content: "look".into(),
            ..photo
        };
        assert_eq!(for_message("Fan One", &captioned).body, "look");
        assert_eq!(n.link, None);
        assert_eq!(
            Value::Object(n.data),
            json!({"conversationId": "cnv_1", "messageId": "msg_1", "senderId": "fan-1"})
        );
    }
}
