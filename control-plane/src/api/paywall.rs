//! A signed-in viewer and a stream's paywall: `POST /v1/me/streams/{id}/playback` answers the
//! stream's signed playback token to a viewer [`crate::memberships::entitled`] lets in (and
//! nothing else decides; the viewer counts among the unique viewers of the stream's open
//! session), or a 402/403 problem saying what would grant access;
//! `POST /v1/me/streams/{id}/purchase` buys a pay-per-view stream once from the wallet (source
//! `purchase`, the fee split off, `purchase.created`, the creator's "payment received").
//!
//! The edge keeps checking the token on every playlist, part and segment (it has the secret of
//! every stream that is not public), so the paywall holds on every edge and relay.

use super::AppState;
use super::auth::UserCaller;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use super::idempotency::{self, Begun, IdempotencyKey};
use super::streams;
use super::tips::api_error;
use super::transactions::{post_error, rule_error};
use crate::db;
use crate::ledger::{self, Account};
use crate::memberships::{self, Access, Offer};
use crate::metrics::NotificationSource;
use crate::notifications::{self, Content};
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery::{self, Entry};
use crate::webhooks;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use onda_shared::api::{
    LedgerSource, LiveStream, PlaybackToken, Problem, Purchase, StreamAccess, WebhookEventType,
};
use serde_json::{Map, json};

const PURCHASE_ROUTE: &str = "POST /v1/me/streams/{id}/purchase";

/// How long a viewer's playback token plays; the player asks again after.
pub const VIEWER_TOKEN_TTL: u64 = 3600;

/// The token's viewer: the user's id when it fits a token (letters, digits, `_`, `-`, at most
/// 64), else a digest of it, so each token names one viewer.
fn viewer_of(user_id: &str) -> String {
    if onda_shared::playback::valid_viewer(user_id) {
        user_id.to_string()
    } else {
        format!("u-{}", &crate::secrets::sha256_hex(user_id)[..32])
    }
}

/// Ask to watch a live stream (user token): a playback token when the membership check lets you
/// in; otherwise 402 (pay-per-view: buy it) or 403 (subscribers only, or tokens from the
/// platform), the problem's `grant` saying what would let you in.
#[utoipa::path(post, path = "/v1/me/streams/{id}/playback", tag = "streams",
    params(("id" = String, Path, description = "The stream's id")),
    responses((status = 201, body = PlaybackToken),
              (status = 402, body = Problem, description = "Pay-per-view: buy the stream (grant.price)"),
              (status = 403, body = Problem, description = "Subscribers only (grant.price: the subscription), or not a user token"),
              (status = 404, body = Problem)))]
pub async fn playback(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<PlaybackToken>)> {
    let mut conn = st.db.conn().await?;
    let s = streams::find(&mut conn, &id, Some(&me.tenant.id)).await?;
    let access = memberships::entitled(
        &mut conn,
        &me.tenant.id,
        &me.user.id,
        (None, Some(&s)),
        db::now_millis(),
    )
    .await?;
    match access {
        Access::Granted(_) => {
            // One of the open session's unique viewers (if the stream is on the air).
            db::stream_sessions::add_viewer(
                &mut conn,
                &me.tenant.id,
                &s.id,
                &me.user.id,
                db::now_millis(),
            )
            .await?;
            let token =
                streams::sign(&mut conn, &s, &viewer_of(&me.user.id), VIEWER_TOKEN_TTL).await?;
            Ok((StatusCode::CREATED, Json(token)))
        }
        Access::Denied(offer) => Err(refused(&s, &offer, &me.tenant.currency)),
    }
}

fn refused(s: &LiveStream, offer: &Offer, currency: &str) -> ApiError {
    ApiError::NoAccess {
        detail: offer.sentence(&format!("Live stream {:?}", s.name), currency),
        grant: Box::new(offer.grant(currency)),
    }
}

/// The creator's notification of a purchase ("payment received").
fn purchased(buyer_name: &str, stream: &LiveStream, p: &Purchase) -> Content {
    let mut data = Map::new();
    data.insert("transactionId".into(), json!(p.id));
    data.insert("streamId".into(), json!(p.stream_id));
    data.insert("buyerId".into(), json!(p.buyer_id));
    data.insert("amount".into(), json!(p.amount));
    data.insert("net".into(), json!(p.net));
    data.insert("currency".into(), json!(p.currency));
    Content {
        kind: notifications::PAYMENT_RECEIVED.to_string(),
        title: format!("Payment received: {buyer_name} bought {}", stream.name),
        body: format!(
            "{buyer_name} bought your pay-per-view stream {:?} for {} (minor units of {}).",
            stream.name, p.amount, p.currency
        ),
        link: None,
        data,
    }
}

/// Buy a pay-per-view stream once from your wallet (user token): one ledger transaction of its
/// price (source `purchase`, the tenant's fee split off); then playback answers a token.
/// Requires an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/me/streams/{id}/purchase", tag = "money",
    params(("id" = String, Path, description = "The stream's id"),
           ("Idempotency-Key" = String, Header, description = "Unique per purchase; a retry with the same key answers the same purchase")),
    responses((status = 201, body = Purchase), (status = 400, body = Problem),
              (status = 402, body = Problem, description = "The wallet does not hold the price"),
              (status = 403, body = Problem, description = "Not a user token, or the plan has no monetization"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Already bought, or the stream is not pay-per-view"),
              (status = 422, body = Problem, description = "Your own stream")))]
pub async fn purchase(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(id): ApiPath<String>,
    key: Result<IdempotencyKey, ApiError>,
) -> ApiResult<Response> {
    let tenant = &me.tenant;
    let s = streams::find(&mut *st.db.conn().await?, &id, Some(&tenant.id)).await?;
    crate::tips::monetized(&mut *st.db.conn().await?, tenant)
        .await
        .map_err(api_error)?;
    let key = key?;
    let (Some(creator), Some(price), StreamAccess::PayPerView) =
        (s.creator_id.clone(), s.price, s.access)
    else {
        return Err(ApiError::Conflict(format!(
            "Live stream {:?} is not pay-per-view: there is nothing to buy.",
            s.name
        )));
    };
    if creator == me.user.id {
        return Err(ApiError::Unprocessable(
            "This is your own stream: you cannot buy it.".to_string(),
        ));
    }
    let hash = idempotency::request_hash(PURCHASE_ROUTE, &format!("{id}\n{}", me.user.id), &())?;
    let mut m = match idempotency::begin(&st, &tenant.id, key, PURCHASE_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    if db::subscriptions::purchase(&mut m.tx, &tenant.id, (&s.id, &me.user.id))
        .await?
        .is_some()
    {
        return Err(already(&s));
    }
    let mut posting = ledger::payment(
        LedgerSource::Purchase,
        &me.user.id,
        &creator,
        price,
        tenant.platform_fee_bps,
    )
    .map_err(|e| rule_error(&st, e))?;
    posting.reference = Some(s.id.clone());
    let t = db::ledger::post(&mut m.tx, tenant, &posting)
        .await
        .map_err(|e| match post_error(&st, e) {
            ApiError::Conflict(_) => ApiError::PaymentRequired(format!(
                "Your wallet holds less than the {price} this stream costs; nothing was moved."
            )),
            other => other,
        })?;
    let now = db::now_millis();
    if !db::subscriptions::insert_purchase(&mut m.tx, &tenant.id, (&s.id, &me.user.id), &t.id, now)
        .await?
    {
        // Bought at the same moment with another key: this one is rolled back.
        return Err(already(&s));
    }
    let fee = t
        .entries
        .iter()
        .find(|e| e.account == Account::Platform.key())
        .map_or(0, |e| e.amount);
    let p = Purchase {
        id: t.id,
        stream_id: s.id.clone(),
        buyer_id: me.user.id.clone(),
        creator_id: creator.clone(),
        amount: t.amount,
        fee,
        net: t.amount - fee,
        currency: t.currency,
        created_at: t.created_at,
    };
    let outbox = webhooks::Outbox::load(&mut m.tx, &tenant.id).await?;
    outbox
        .enqueue(&mut m.tx, WebhookEventType::PurchaseCreated, &p)
        .await?;
    let content = purchased(&me.user.display_name, &s, &p);
    let push = notifications::store_with(&mut m.tx, &outbox, &creator, &content, now).await?;
    let entry = Entry::new(&creator, NOTIFICATION, json!(push));
    let recorded = recovery::record(&mut m.tx, &tenant.id, vec![entry]).await?;
    let resp = m.finish(StatusCode::CREATED, &p).await?;
    st.metrics.ledger.transaction(LedgerSource::Purchase);
    st.metrics
        .ledger
        .paid(LedgerSource::Purchase, &p.currency, p.amount);
    st.metrics.realtime.notification(NotificationSource::Money);
    st.realtime.send(&tenant.id, &recorded).await;
    Ok(resp)
}

fn already(s: &LiveStream) -> ApiError {
    ApiError::Conflict(format!(
        "You bought live stream {:?} already: ask for playback to watch it.",
        s.name
    ))
}
