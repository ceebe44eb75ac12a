//! The one membership check: whether a viewer may watch a creator's stream, chat in its room or
//! call the creator, and otherwise what would let them in. Everything that decides access asks
//! [`entitled`] and nothing else, so access is decided in one place: playback
//! (`POST /v1/me/streams/{id}/playback`, `api::paywall`, which then signs the stream's playback
//! token for the viewer), a signed-in user's view of a stream (`api::my_streams`, whose
//! `entitled` and `grant` the watch page shows), joining a stream's chat and tipping in it
//! (`chat::may_join`), a subscribers-only chat (`realtime::stream_chat`), `initiate-call` to a
//! creator whose calls are for subscribers (`realtime::calls`); a creator's profile
//! (`api::creators`) shows from it whether the viewer subscribes. The edge then checks the
//! playback token of every stream that is not public on every playlist, part and segment.
//!
//! The answer is read from the memberships the money made (a subscription whose end is in the
//! future, a pay-per-view purchase) and from the stream's access mode; the creator is always
//! let in to their own streams.

use crate::db::{self, Conn};
use onda_shared::api::{AccessGrant, LiveStream, StreamAccess};

/// Why a viewer is let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The stream is public.
    Public,
    /// The viewer is the creator.
    Creator,
    /// A subscription of the viewer to the creator runs until `ends_ms`.
    Subscriber { ends_ms: i64 },
    /// The viewer bought the pay-per-view stream with this ledger transaction.
    Purchased { transaction_id: String },
}

/// What would let a refused viewer in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Subscribing to the creator: at `price` from the wallet, or (None) only through the
    /// tenant, which declares its own subscribers.
    Subscribe {
        creator_id: String,
        price: Option<i64>,
    },
    /// Buying the stream once at `price`.
    Purchase {
        stream_id: String,
        creator_id: String,
        price: i64,
    },
    /// Only the tenant lets viewers in (a token stream: its site mints the tokens).
    Tenant,
}

/// The membership check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Granted(Reason),
    Denied(Offer),
}

/// Whether `viewer` (a user of `tenant_id`) may watch `stream` — or, without a stream, take
/// part in what `creator` keeps for their subscribers (chat, calls) — at `now_ms`.
pub async fn entitled(
    conn: &mut Conn,
    tenant_id: &str,
    viewer: &str,
    (creator, stream): (Option<&str>, Option<&LiveStream>),
    now_ms: i64,
) -> Result<Access, sqlx::Error> {
    let creator = stream.and_then(|s| s.creator_id.as_deref()).or(creator);
    if creator == Some(viewer) {
        return Ok(Access::Granted(Reason::Creator));
    }
    let mode = stream.map_or(StreamAccess::Subscribers, |s| s.access);
    match (mode, creator) {
        (StreamAccess::Public, _) => Ok(Access::Granted(Reason::Public)),
        (StreamAccess::Token, _) | (_, None) => Ok(Access::Denied(Offer::Tenant)),
        (StreamAccess::Subscribers, Some(creator)) => {
            if let Some(s) = db::subscriptions::get(conn, tenant_id, (creator, viewer), false)
                .await?
                .filter(|s| s.ends_ms > now_ms)
            {
                return Ok(Access::Granted(Reason::Subscriber { ends_ms: s.ends_ms }));
            }
            let price = db::users::get(conn, tenant_id, creator)
                .await?
                .filter(|u| u.creator)
                .and_then(|u| u.subscription_price);
            Ok(Access::Denied(Offer::Subscribe {
                creator_id: creator.to_string(),
                price,
            }))
        }
        (StreamAccess::PayPerView, Some(creator)) => {
            let Some(stream) = stream else {
                return Ok(Access::Denied(Offer::Tenant));
            };
            if let Some(transaction_id) =
                db::subscriptions::purchase(conn, tenant_id, (&stream.id, viewer)).await?
            {
                return Ok(Access::Granted(Reason::Purchased { transaction_id }));
            }
            match stream.price {
                Some(price) => Ok(Access::Denied(Offer::Purchase {
                    stream_id: stream.id.clone(),
                    creator_id: creator.to_string(),
                    price,
                })),
                None => Ok(Access::Denied(Offer::Tenant)),
            }
        }
    }
}

impl Offer {
    /// A sentence saying what would grant access, with prices in minor units of `currency`.
    pub fn sentence(&self, what: &str, currency: &str) -> String {
        match self {
            Offer::Subscribe {
                creator_id,
                price: Some(p),
            } => format!(
                "{what} is for subscribers of {creator_id:?}: subscribe for {p} (minor units of \
                 {currency}) per 30 days with POST /v1/me/subscriptions to watch."
            ),
            Offer::Subscribe {
                creator_id,
                price: None,
            } => format!(
                "{what} is for subscribers of {creator_id:?}, who sells no subscription from \
                 the wallet: only the platform can make you a subscriber."
            ),
            Offer::Purchase {
                stream_id, price, ..
            } => format!(
                "{what} is pay-per-view: buy it for {price} (minor units of {currency}) with \
                 POST /v1/me/streams/{stream_id}/purchase to watch."
            ),
            Offer::Tenant => format!(
                "{what} is watched with a playback token from the platform's own site, not \
                 through a membership."
            ),
        }
    }

    /// The problem's `grant`: the same offer for programs.
    pub fn grant(&self, currency: &str) -> AccessGrant {
        let (action, creator_id, stream_id, price) = match self {
            Offer::Subscribe { creator_id, price } => {
                let action = if price.is_some() {
                    "subscribe"
                } else {
                    "tenant"
                };
                (action, Some(creator_id.clone()), None, *price)
            }
            Offer::Purchase {
                stream_id,
                creator_id,
                price,
            } => (
                "purchase",
                Some(creator_id.clone()),
                Some(stream_id.clone()),
                Some(*price),
            ),
            Offer::Tenant => ("tenant", None, None, None),
        };
        AccessGrant {
            action: action.to_string(),
            creator_id,
            stream_id,
            price,
            currency: currency.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_say_what_would_grant_access() {
        let sub = Offer::Subscribe {
            creator_id: "star".to_string(),
            price: Some(499),
        };
        assert!(
            sub.sentence("This stream", "USD")
                .contains("subscribe for 499")
        );
        assert_eq!(sub.grant("USD").action, "subscribe");
        let none = Offer::Subscribe {
            creator_id: "star".to_string(),
            price: None,
        };
        assert_eq!(none.grant("USD").action, "tenant");
        assert!(
            none.sentence("This stream", "USD")
                .contains("only the platform")
        );
        let buy = Offer::Purchase {
            stream_id: "lvs_1".to_string(),
            creator_id: "star".to_string(),
            price: 1200,
        };
        let g = buy.grant("EUR");
        assert_eq!((g.action.as_str(), g.price), ("purchase", Some(1200)));
        assert!(
            buy.sentence("This stream", "EUR")
                .contains("buy it for 1200")
        );
    }
}
