//! Wire types of webhooks: the endpoints a tenant registers (`/v1/webhooks`), the events Onda
//! posts to them, and the state of each delivery.

use serde::{Deserialize, Serialize};

/// The kinds of event a webhook endpoint may subscribe to (`"*"` subscribes to all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WebhookEventType {
    /// A message was stored; `data` is the message.
    #[serde(rename = "message.created")]
    MessageCreated,
    /// A notification was stored for a user.
    #[serde(rename = "notification.created")]
    NotificationCreated,
    /// A user's first connection opened; `data` is `{ userId }`.
    #[serde(rename = "user.online")]
    UserOnline,
    /// A user's last connection closed; `data` is `{ userId, lastSeen }`.
    #[serde(rename = "user.offline")]
    UserOffline,
    /// A user reported something.
    #[serde(rename = "report.created")]
    ReportCreated,
    /// A fan tipped a creator; `data` is the tip.
    #[serde(rename = "tip.created")]
    TipCreated,
    /// A creator requested a payout; `data` is the payout.
    #[serde(rename = "payout.requested")]
    PayoutRequested,
    /// The tenant marked a payout paid; `data` is the payout.
    #[serde(rename = "payout.paid")]
    PayoutPaid,
    /// The tenant rejected a payout (its amount is back in the creator's earnings); `data` is
    /// the payout.
    #[serde(rename = "payout.rejected")]
    PayoutRejected,
    /// A fan bought a pay-per-view stream; `data` is the purchase.
    #[serde(rename = "purchase.created")]
    PurchaseCreated,
    /// A fan subscribed to a creator from their wallet; `data` is the subscription.
    #[serde(rename = "subscription.created")]
    SubscriptionCreated,
    /// A wallet subscription was renewed for another 30 days; `data` is the subscription.
    #[serde(rename = "subscription.renewed")]
    SubscriptionRenewed,
    /// A renewal failed (the wallet did not cover it): the subscription ends at its end;
    /// `data` is the subscription.
    #[serde(rename = "subscription.lapsed")]
    SubscriptionLapsed,
    /// A live stream went on the air: a stream session opened; `data` is the session.
    #[serde(rename = "stream.started")]
    StreamStarted,
    /// A live stream's session closed (off the air for a few seconds); `data` is the session
    /// with its figures.
    #[serde(rename = "stream.ended")]
    StreamEnded,
    /// A creator answered a call: billing started; `data` is the call.
    #[serde(rename = "call.started")]
    CallStarted,
    /// A call ended (rejected, missed, busy, hung up, …, with its reason and cost); `data` is
    /// the call.
    #[serde(rename = "call.ended")]
    CallEnded,
    /// Sent by `POST /v1/webhooks/{id}/test` to that endpoint only, whatever it subscribes to.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl WebhookEventType {
    pub const ALL: [WebhookEventType; 18] = [
        WebhookEventType::MessageCreated,
        WebhookEventType::NotificationCreated,
        WebhookEventType::UserOnline,
        WebhookEventType::UserOffline,
        WebhookEventType::ReportCreated,
        WebhookEventType::TipCreated,
        WebhookEventType::PayoutRequested,
        WebhookEventType::PayoutPaid,
        WebhookEventType::PayoutRejected,
        WebhookEventType::PurchaseCreated,
        WebhookEventType::SubscriptionCreated,
        WebhookEventType::SubscriptionRenewed,
        WebhookEventType::SubscriptionLapsed,
        WebhookEventType::StreamStarted,
        WebhookEventType::StreamEnded,
        WebhookEventType::CallStarted,
        WebhookEventType::CallEnded,
        WebhookEventType::WebhookTest,
    ];

    /// The name on the wire, e.g. `message.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::MessageCreated => "message.created",
            WebhookEventType::NotificationCreated => "notification.created",
            WebhookEventType::UserOnline => "user.online",
            WebhookEventType::UserOffline => "user.offline",
            WebhookEventType::ReportCreated => "report.created",
            WebhookEventType::TipCreated => "tip.created",
            WebhookEventType::PayoutRequested => "payout.requested",
            WebhookEventType::PayoutPaid => "payout.paid",
            WebhookEventType::PayoutRejected => "payout.rejected",
            WebhookEventType::PurchaseCreated => "purchase.created",
            WebhookEventType::SubscriptionCreated => "subscription.created",
            WebhookEventType::SubscriptionRenewed => "subscription.renewed",
            WebhookEventType::SubscriptionLapsed => "subscription.lapsed",
            WebhookEventType::StreamStarted => "stream.started",
            WebhookEventType::StreamEnded => "stream.ended",
            WebhookEventType::CallStarted => "call.started",
            WebhookEventType::CallEnded => "call.ended",
            WebhookEventType::WebhookTest => "webhook.test",
        }
    }
}

impl std::fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WebhookEventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        WebhookEventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = WebhookEventType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "{s:?} is not an event type; use \"*\" or some of {}",
                    known.join(", ")
                )
            })
    }
}

/// `POST /v1/webhooks`: where to post and which events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// An `http` or `https` URL of the tenant's backend, at most 2048 characters.
    pub url: String,
    /// Event types (`message.created`, …), or `["*"]` for all of them.
    pub events: Vec<String>,
}

/// A registered webhook endpoint (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// `whk_…`
    pub id: String,
    pub url: String,
    /// What it subscribes to; `["*"]` is every type.
    pub events: Vec<String>,
    pub created_at: String,
    pub disabled: bool,
}

/// The answer to `POST /v1/webhooks`: the endpoint and the secret its deliveries are signed
/// with. The secret is in this answer only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_…`: the HMAC-SHA256 key is this whole string, as bytes.
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet: the next attempt is at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// No attempt succeeded within 24 hours of the event; no more are made.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(format!("{other:?} is not a delivery state")),
        }
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// `evt_…`: the same in every attempt (the `Onda-Event-Id` header), so a receiver can tell
    /// a retry from a new event.
    pub event_id: String,
    pub event_type: WebhookEventType,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last attempt, when it got an answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    /// When the event happened.
    pub created_at: String,
}

/// The answer to `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookTestEvent {
    pub event_id: String,
}
