//! Creator subscriptions. A fan subscribes from their wallet (`POST /v1/me/subscriptions`, user
//! token, `Idempotency-Key`): one ledger transaction of the creator's price (source
//! `subscription`, the fee split off) for 30 days, renewed from the wallet by
//! [`crate::subscriptions::renew_due`]; they list theirs and cancel the renewal (access stays
//! until the end). The tenant declares subscribers it bills itself
//! (`PUT`/`DELETE /v1/creators/{id}/subscribers/{user_id}`), moving no money. A creator sets
//! their price with `PATCH /v1/me` (the tenant with `PUT /v1/users/{id}`).

use super::AppState;
use super::auth::{Caller, UserCaller};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use super::idempotency::{self, Begun, IdempotencyKey, Movement};
use super::tips::api_error;
use super::transactions::{post_error, rule_error};
use crate::db::{self, subscriptions::Row};
use crate::ledger;
use crate::metrics::NotificationSource;
use crate::notifications;
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery::{self, Entry, Recorded};
use crate::subscriptions::{self as subs, PERIOD_MS};
use crate::users;
use crate::webhooks;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use onda_shared::api::{
    CreateSubscription, DeclareSubscriber, EndUser, LedgerSource, Page, Problem, Subscription,
    Tenant, UpdateMe, WebhookEventType,
};

const SUBSCRIBE_ROUTE: &str = "POST /v1/me/subscriptions";

/// The tenant's creator `id`, else a 404 (another tenant's id names nothing) or a 422.
async fn creator(conn: &mut db::Conn, tenant_id: &str, id: &str) -> ApiResult<EndUser> {
    let u = db::users::get(conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no user {id:?}.")))?;
    if !u.creator {
        return Err(ApiError::Unprocessable(format!(
            "User {id:?} is not a creator: only creators have subscribers."
        )));
    }
    Ok(u)
}

/// Subscribe to a creator for 30 days from your wallet at their `subscription_price` (user
/// token): one ledger transaction, the tenant's fee split off, renewed from the wallet at each
/// end until cancelled. Subscribing again while a cancelled subscription runs turns its renewal
/// back on (200, nothing moved). Requires an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/me/subscriptions", tag = "money",
    params(("Idempotency-Key" = String, Header, description = "Unique per subscription; a retry with the same key answers the same result")),
    request_body = CreateSubscription,
    responses((status = 201, body = Subscription), (status = 200, body = Subscription, description = "Renewal turned back on"),
              (status = 400, body = Problem),
              (status = 402, body = Problem, description = "The wallet does not hold the price"),
              (status = 403, body = Problem, description = "Not a user token, the plan has no monetization, or a block between the two"),
              (status = 404, body = Problem), (status = 409, body = Problem, description = "Already subscribed"),
              (status = 422, body = Problem)))]
pub async fn create(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    key: Result<IdempotencyKey, ApiError>,
    req: Result<ApiJson<CreateSubscription>, ApiError>,
) -> ApiResult<Response> {
    crate::tips::monetized(&mut *st.db.conn().await?, &me.tenant)
        .await
        .map_err(api_error)?;
    let (key, ApiJson(req)) = (key?, req?);
    let creator_id = users::user_id(&req.creator_id)
        .map_err(|e| ApiError::Unprocessable(format!("creatorId: {e}")))?
        .to_string();
    if creator_id == me.user.id {
        return Err(ApiError::Unprocessable(
            "creatorId is your own id: you cannot subscribe to yourself.".to_string(),
        ));
    }
    let hash = idempotency::request_hash(SUBSCRIBE_ROUTE, &me.user.id, &req)?;
    let tenant = &me.tenant;
    let mut m = match idempotency::begin(&st, &tenant.id, key, SUBSCRIBE_ROUTE, hash).await? {
        Begun::Replay(r) => return Ok(r),
        Begun::Fresh(m) => m,
    };
    let c = creator(&mut m.tx, &tenant.id, &creator_id).await?;
    let Some(price) = c.subscription_price else {
        return Err(ApiError::Unprocessable(format!(
            "{:?} sells no subscription (no subscription_price is set).",
            c.id
        )));
    };
    let (i_blocked, they_blocked) =
        db::moderation::between(&mut m.tx, &tenant.id, &me.user.id, &c.id).await?;
    if i_blocked || they_blocked {
        return Err(ApiError::Forbidden(
            "One of you blocked the other: no subscription between you.".to_string(),
        ));
    }
    let now = db::now_millis();
    let existing =
        db::subscriptions::get(&mut m.tx, &tenant.id, (&c.id, &me.user.id), true).await?;
    if let Some(s) = existing.as_ref().filter(|s| s.ends_ms > now) {
        return resume(m, tenant, s, now).await;
    }
    let mut posting = ledger::payment(
        LedgerSource::Subscription,
        &me.user.id,
        &c.id,
        price,
        tenant.platform_fee_bps,
    )
    .map_err(|e| rule_error(&st, e))?;
    let id = existing
        .as_ref()
        .map_or_else(|| crate::secrets::new_time_id("sub", now), |s| s.id.clone());
    posting.reference = Some(id.clone());
    let t = db::ledger::post(&mut m.tx, tenant, &posting)
        .await
        .map_err(|e| match post_error(&st, e) {
            ApiError::Conflict(_) => ApiError::PaymentRequired(format!(
                "Your wallet holds less than the {price} this subscription takes; nothing was \
                 moved."
            )),
            other => other,
        })?;
    let row = Row {
        id,
        tenant_id: tenant.id.clone(),
        creator_id: c.id.clone(),
        user_id: me.user.id.clone(),
        kind: db::subscriptions::WALLET.to_string(),
        price: Some(price),
        renews: true,
        period: existing.as_ref().map_or(0, |s| s.period) + 1,
        started_ms: now,
        ends_ms: now + PERIOD_MS,
        transaction_id: Some(t.id),
        lapsed_ms: None,
    };
    if let Err(e) = db::subscriptions::upsert(&mut m.tx, &row, now).await {
        // Another request (another key) subscribed this fan at the same moment and committed
        // first: this one is rolled back, its payment with it.
        return Err(if db::is_unique_violation(&e) {
            ApiError::Conflict(format!(
                "You subscribed to {:?} at the same moment with another request; nothing more \
                 was moved.",
                c.id
            ))
        } else {
            e.into()
        });
    }
    let sub = subs::to_api(&row, &tenant.currency, now);
    let recorded = announce(&mut m.tx, tenant, &me.user, &sub, now).await?;
    let resp = m.finish(StatusCode::CREATED, &sub).await?;
    st.metrics.ledger.transaction(LedgerSource::Subscription);
    st.metrics
        .ledger
        .paid(LedgerSource::Subscription, &tenant.currency, price);
    st.metrics.realtime.notification(NotificationSource::Money);
    st.realtime.send(&tenant.id, &recorded).await;
    Ok(resp)
}

/// A subscription that still runs: a cancelled wallet one renews again; anything else is a 409.
async fn resume(mut m: Movement, tenant: &Tenant, s: &Row, now: i64) -> ApiResult<Response> {
    if s.kind != db::subscriptions::WALLET || s.renews {
        return Err(ApiError::Conflict(format!(
            "You are subscribed to {:?} until {} already.",
            s.creator_id,
            db::messages::rfc3339_ms(s.ends_ms)
        )));
    }
    db::subscriptions::set_renews(&mut m.tx, &s.id, true, now).await?;
    let row = Row {
        renews: true,
        ..s.clone()
    };
    m.finish(StatusCode::OK, &subs::to_api(&row, &tenant.currency, now))
        .await
}

/// The new subscription's webhook event (wallet ones) and the creator's notification, in the
/// caller's transaction; answers the events to push after the commit.
async fn announce(
    tx: &mut db::Conn,
    tenant: &Tenant,
    subscriber: &EndUser,
    sub: &Subscription,
    now: i64,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let outbox = webhooks::Outbox::load(tx, &tenant.id).await?;
    if sub.kind == db::subscriptions::WALLET {
        outbox
            .enqueue(tx, WebhookEventType::SubscriptionCreated, sub)
            .await?;
    }
    let content = subs::new_subscriber(&subscriber.display_name, sub);
    let push = notifications::store_with(tx, &outbox, &sub.creator_id, &content, now).await?;
    let entry = Entry::new(&sub.creator_id, NOTIFICATION, serde_json::json!(push));
    recovery::record(tx, &tenant.id, vec![entry]).await
}

/// Your subscriptions (user token), running and ended, by creator.
#[utoipa::path(get, path = "/v1/me/subscriptions", tag = "money",
    responses((status = 200, body = Page<Subscription>), (status = 403, body = Problem)))]
pub async fn mine(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
) -> ApiResult<Json<Page<Subscription>>> {
    let rows =
        db::subscriptions::of_user(&mut *st.db.conn().await?, &me.tenant.id, &me.user.id).await?;
    let now = db::now_millis();
    Ok(Json(Page {
        items: rows
            .iter()
            .map(|r| subs::to_api(r, &me.tenant.currency, now))
            .collect(),
        next_cursor: None,
    }))
}

/// Cancel the renewal of your wallet subscription to a creator (user token): nothing is
/// refunded and access stays until its end.
#[utoipa::path(delete, path = "/v1/me/subscriptions/{creator_id}", tag = "money",
    params(("creator_id" = String, Path, description = "The creator subscribed to")),
    responses((status = 200, body = Subscription), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(creator_id): ApiPath<String>,
) -> ApiResult<Json<Subscription>> {
    let now = db::now_millis();
    let mut tx = st.db.begin().await?;
    let s = db::subscriptions::get(&mut tx, &me.tenant.id, (&creator_id, &me.user.id), true)
        .await?
        .filter(|s| s.ends_ms > now)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "You have no running subscription to {creator_id:?}."
            ))
        })?;
    if s.kind != db::subscriptions::WALLET {
        return Err(ApiError::Conflict(format!(
            "Your subscription to {creator_id:?} comes from the platform, which bills it: \
             cancel it there."
        )));
    }
    db::subscriptions::set_renews(&mut tx, &s.id, false, now).await?;
    tx.commit().await?;
    let row = Row { renews: false, ..s };
    Ok(Json(subs::to_api(&row, &me.tenant.currency, now)))
}

/// The tenant's creator and user of a subscriber route, both checked (404 for either unknown).
async fn pair(
    conn: &mut db::Conn,
    tenant: &Tenant,
    (creator_id, user_id): (&str, &str),
) -> ApiResult<(EndUser, EndUser)> {
    let c = creator(conn, &tenant.id, users::user_id(creator_id)?).await?;
    let u = db::users::get(conn, &tenant.id, users::user_id(user_id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no user {user_id:?}.")))?;
    if c.id == u.id {
        return Err(ApiError::Unprocessable(
            "A creator cannot be their own subscriber.".to_string(),
        ));
    }
    Ok((c, u))
}

/// Declare a subscriber the tenant bills itself, until `ends_at` (tenant key); no money moves.
/// On a subscription bought from the wallet it moves its end (renewal goes on from there).
/// 201 for a new subscriber, 200 otherwise.
#[utoipa::path(put, path = "/v1/creators/{creator_id}/subscribers/{user_id}", tag = "money",
    params(("creator_id" = String, Path, description = "The creator"),
           ("user_id" = String, Path, description = "The subscriber")),
    request_body = DeclareSubscriber,
    responses((status = 200, body = Subscription), (status = 201, body = Subscription),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn declare(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((creator_id, user_id)): ApiPath<(String, String)>,
    req: Result<ApiJson<DeclareSubscriber>, ApiError>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let tenant = caller.writing_tenant("Subscribers")?.clone();
    let mut tx = st.db.begin().await?;
    let (c, u) = pair(&mut tx, &tenant, (&creator_id, &user_id)).await?;
    let ApiJson(req) = req?;
    let ends_ms =
        time::OffsetDateTime::parse(&req.ends_at, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .filter(|ms| (0..253_402_300_800_000).contains(ms))
            .ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "ends_at = {:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z.",
                    req.ends_at
                ))
            })?;
    let now = db::now_millis();
    let existing = db::subscriptions::get(&mut tx, &tenant.id, (&c.id, &u.id), true).await?;
    let created = existing.as_ref().is_none_or(|s| s.ends_ms <= now);
    let row = match existing {
        Some(s) if s.kind == db::subscriptions::WALLET && s.ends_ms > now => Row { ends_ms, ..s },
        other => Row {
            id: other
                .as_ref()
                .map_or_else(|| crate::secrets::new_time_id("sub", now), |s| s.id.clone()),
            tenant_id: tenant.id.clone(),
            creator_id: c.id.clone(),
            user_id: u.id.clone(),
            kind: db::subscriptions::TENANT.to_string(),
            price: None,
            renews: false,
            // Periods only count up, so a renewal key (`renew {id} {period}`) is never reused.
            period: other.as_ref().map_or(0, |s| s.period),
            started_ms: now,
            ends_ms,
            transaction_id: None,
            lapsed_ms: None,
        },
    };
    db::subscriptions::upsert(&mut tx, &row, now).await?;
    let sub = subs::to_api(&row, &tenant.currency, now);
    let recorded = if created && ends_ms > now {
        announce(&mut tx, &tenant, &u, &sub, now).await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    if !recorded.is_empty() {
        st.metrics.realtime.notification(NotificationSource::Money);
        st.realtime.send(&tenant.id, &recorded).await;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sub)))
}

/// Remove a subscriber (tenant key): access ends now, whatever the subscription's kind. A
/// wallet subscription's payment is not refunded by this (`POST /v1/transactions/{id}/refunds`
/// does that).
#[utoipa::path(delete, path = "/v1/creators/{creator_id}/subscribers/{user_id}", tag = "money",
    params(("creator_id" = String, Path, description = "The creator"),
           ("user_id" = String, Path, description = "The subscriber")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((creator_id, user_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = caller.writing_tenant("Subscribers")?.clone();
    let mut tx = st.db.begin().await?;
    let (c, u) = pair(&mut tx, &tenant, (&creator_id, &user_id)).await?;
    let s = db::subscriptions::get(&mut tx, &tenant.id, (&c.id, &u.id), true)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{user_id:?} is not a subscriber of {creator_id:?}."
            ))
        })?;
    db::subscriptions::delete(&mut tx, &s.id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change your own profile (a creator's user token): your subscription price (null stops
/// offering one; subscriptions already bought renew at their price), whether you take calls
/// now and at what price per minute, and whether only subscribers may call. A field left out
/// stays as it is.
#[utoipa::path(patch, path = "/v1/me", tag = "users", request_body = UpdateMe,
    responses((status = 200, body = EndUser), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn update_me(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiJson(req): ApiJson<UpdateMe>,
) -> ApiResult<Json<EndUser>> {
    let creator = me.user.creator;
    let change = db::users::OwnChange {
        subscription_price: req
            .subscription_price
            .map(|p| p.map(|p| users::subscription_price(creator, p)).transpose())
            .transpose()?,
        call_price_per_minute: req
            .call_price_per_minute
            .map(|p| p.map(|p| users::call_price(creator, p)).transpose())
            .transpose()?,
        available_for_calls: req.available_for_calls,
        calls_subscribers_only: req.calls_subscribers_only,
    };
    if !creator
        && (req.available_for_calls == Some(true) || req.calls_subscribers_only == Some(true))
    {
        return Err(ApiError::Unprocessable(
            "available_for_calls and calls_subscribers_only are for creators: you are not one."
                .to_string(),
        ));
    }
    let mut conn = st.db.conn().await?;
    let u = db::users::change_own(&mut conn, &me.tenant.id, &me.user.id, &change)
        .await?
        .ok_or_else(|| ApiError::NotFound("Your user no longer exists.".to_string()))?;
    Ok(Json(u))
}
