//! 1-to-1 calls over the gateway (docs/calls.md): `initiate-call`, `accept-call`,
//! `reject-call`, `end-call`, `signal` and `call-connected`, and the call state a reconnecting
//! socket is told. The rules are `crate::calls` (pure), the writes `steps`, the time-driven
//! changes (missed, billing, warnings, a party gone) the `clock`, run by every replica over the
//! database, so a call outlives the replica it was made on.
//!
//! Each state change is committed before anyone hears of it; both parties' devices then get
//! `call-state { callId, state, reason, call }`. Signals (SDP offers and answers, ICE
//! candidates) go only to the other party's devices, never stored.

mod clock;
mod steps;

use super::protocol::{self, NOTIFICATION, Refusal, stored};
use super::recovery::{self, Entry};
use super::{Hub, Session, user_room};
use crate::calls::{self, Act, Outcome, Party, Record};
use crate::db;
use crate::ledger::Account;
use crate::memberships::{self, Access};
use onda_shared::api::{CallState, EndUser, IceServer, Tenant, WebhookEventType};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::sync::Arc;
use steps::{Charge, ChargeError, Told};

/// `initiate-call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InitiateCall {
    receiver_id: String,
}

/// `accept-call`, `reject-call`, `end-call`, `call-connected`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CallRef {
    call_id: String,
}

/// `signal`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Signal {
    call_id: String,
    signal: Value,
}

fn charge_refusal(e: ChargeError) -> Refusal {
    match e {
        ChargeError::Raced => {
            Refusal::busy("The caller's wallet changed meanwhile; send it again.")
        }
        ChargeError::Database(e) => stored(&e),
    }
}

/// The ICE servers of `user`, a party of `call`: the relays of the caller's region (else the
/// callee's), so both parties meet on the same TURN servers.
async fn party_ice(
    conn: &mut db::Conn,
    call: &Record,
    user: &str,
) -> Result<Vec<IceServer>, sqlx::Error> {
    let mut region = None;
    for party in [&call.caller_id, &call.callee_id] {
        if region.is_none() {
            region = db::users::get(conn, &call.tenant_id, party)
                .await?
                .and_then(|u| u.region);
        }
    }
    crate::turn::ice_servers(
        conn,
        (&call.tenant_id, user),
        region.as_deref(),
        db::now_millis(),
    )
    .await
}

/// `incoming-call`'s payload, with the caller's display name.
async fn incoming_body(
    conn: &mut db::Conn,
    call: &Record,
    ice: &[IceServer],
) -> Result<Value, sqlx::Error> {
    let name = db::users::get(conn, &call.tenant_id, &call.caller_id)
        .await?
        .map_or_else(|| call.caller_id.clone(), |u| u.display_name);
    Ok(
        json!({ "callId": call.id, "callerId": call.caller_id, "callerName": name,
            "pricePerMinute": call.price_per_minute, "currency": call.currency,
            "billing": call.billing, "iceServers": ice }),
    )
}

/// The creator `receiver`, checked: a creator who takes calls now, online, who has not blocked
/// the caller (nor been blocked), and whose subscribers-only rule lets the caller in.
async fn callable(
    conn: &mut db::Conn,
    session: &Session,
    receiver: &str,
) -> Result<(EndUser, i64), Refusal> {
    let tenant = &session.tenant_id;
    let callee = db::users::get(conn, tenant, receiver)
        .await
        .map_err(|e| stored(&e))?
        .ok_or_else(|| Refusal::new("not_found", format!("There is no user {receiver:?}.")))?;
    if !callee.creator {
        return Err(Refusal::new(
            "not_a_creator",
            format!("{receiver:?} is not a creator: only creators take calls."),
        ));
    }
    let Some(price) = callee
        .call_price_per_minute
        .filter(|_| callee.available_for_calls)
    else {
        return Err(Refusal::new(
            "unavailable",
            format!("{} does not take calls now.", callee.display_name),
        ));
    };
    let (i_blocked, blocked_me) = db::moderation::between(conn, tenant, &session.user_id, receiver)
        .await
        .map_err(|e| stored(&e))?;
    if i_blocked || blocked_me {
        return Err(Refusal::new(
            "blocked",
            format!(
                "You and {} have blocked each other or one of you has: no calls.",
                callee.display_name
            ),
        ));
    }
    if callee.calls_subscribers_only {
        let access = memberships::entitled(
            conn,
            tenant,
            &session.user_id,
            (Some(receiver), None),
            db::now_millis(),
        )
        .await
        .map_err(|e| stored(&e))?;
        if let Access::Denied(offer) = access {
            let currency = db::tenants::get(conn, tenant)
                .await
                .map_err(|e| stored(&e))?
                .map(|t| t.currency)
                .unwrap_or_default();
            return Err(Refusal::new(
                "subscription_required",
                offer.sentence(&format!("Calling {}", callee.display_name), &currency),
            ));
        }
    }
    let alive_since = super::alive_since();
    if !db::presence::online(conn, tenant, receiver, alive_since)
        .await
        .map_err(|e| stored(&e))?
    {
        return Err(Refusal::new(
            "offline",
            format!("{} is not online now.", callee.display_name),
        ));
    }
    Ok((callee, price))
}

/// `initiate-call { receiverId }`: rings every device of a creator who takes calls; acks
/// `{ ok, callId, iceServers }`. A party already in a call makes it a busy call (error `busy`
/// with its `callId`).
pub(super) async fn initiate<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: InitiateCall = protocol::parse("initiate-call", data)?;
    let receiver = crate::users::user_id(&req.receiver_id)
        .map_err(|e| Refusal::invalid(format!("receiverId: {e}")))?;
    if receiver == session.user_id {
        return Err(Refusal::invalid("You cannot call yourself."));
    }
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let tenant =
        super::featured_tenant(&mut conn, &session, ("calls", "calls", |f| f.calls)).await?;
    let (callee, price) = callable(&mut conn, &session, receiver).await?;
    let minimum = calls::ring_minimum(price, callee.call_billing);
    let wallet = Account::Wallet(session.user_id.clone());
    let balance = db::ledger::balance(&mut conn, &tenant.id, &wallet)
        .await
        .map_err(|e| stored(&e))?;
    if balance < minimum {
        return Err(Refusal::new(
            "insufficient_funds",
            format!(
                "A call with {} costs {price} a minute (minor units of {}); your wallet holds \
                 {balance}, less than one minute.",
                callee.display_name, tenant.currency
            ),
        ));
    }
    drop(conn);
    // Counted only for calls that would ring: a refused one costs a read, not a ring.
    if let Err(ms) = hub.limits.call(&session.tenant_id, &session.user_id) {
        let mut r = Refusal::new(
            "rate_limited",
            format!("You make calls too often; wait {ms} ms."),
        );
        r.retry_after_ms = Some(ms);
        return Err(r);
    }
    let (call, told) = open(&hub, &tenant, &session, (&callee, price)).await?;
    hub.metrics.calls.started.inc();
    if call.state == CallState::Ended {
        told.deliver(&hub, |rooms| s.within(rooms), Some((&s, &session.user_id)))
            .await;
        let mut r = Refusal::new(
            "busy",
            format!("{} or you are in another call.", callee.display_name),
        )
        .ack();
        r["callId"] = json!(call.id);
        return Ok(r);
    }
    ring(&hub, &s, call, told).await
}

/// Records the call (busy when a party is in one), with the callee's "incoming call"
/// notification.
async fn open(
    hub: &Hub,
    tenant: &Tenant,
    session: &Session,
    (callee, price): (&EndUser, i64),
) -> Result<(Record, Told), Refusal> {
    let now = db::now_millis();
    let id = crate::secrets::new_time_id("call", now);
    let new = db::calls::NewCall {
        id: &id,
        tenant_id: &tenant.id,
        caller_id: &session.user_id,
        callee_id: &callee.id,
        price_per_minute: price,
        billing: callee.call_billing,
        currency: &tenant.currency,
        now_ms: now,
    };
    // Twice: a call of a party made at the same moment on another replica fails the second
    // INSERT of `call_parties`; the retry sees it and records a busy call.
    let mut last = None;
    for _ in 0..2 {
        let mut tx = hub.db.begin().await.map_err(|e| stored(&e))?;
        let call = match db::calls::open(&mut tx, &new).await {
            Ok(c) => c,
            Err(e) if db::is_unique_violation(&e) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(stored(&e)),
        };
        let mut told = Told::new(&tenant.id);
        if call.state == CallState::Ended {
            hub.metrics
                .calls
                .ended(onda_shared::api::CallEndReason::Busy);
            let outbox = crate::webhooks::Outbox::load(&mut tx, &tenant.id)
                .await
                .map_err(|e| stored(&e))?;
            outbox
                .enqueue(
                    &mut tx,
                    WebhookEventType::CallEnded,
                    &db::calls::wire(&call),
                )
                .await
                .map_err(|e| stored(&e))?;
            told.user(
                &tenant.id,
                &call.caller_id,
                "call-state",
                steps::state_body(&call),
            );
        } else {
            let caller_name = db::users::get(&mut tx, &tenant.id, &session.user_id)
                .await
                .map_err(|e| stored(&e))?
                .map_or_else(|| session.user_id.clone(), |u| u.display_name);
            let content = steps::incoming(&call, &caller_name);
            let push = crate::notifications::store(&mut tx, &tenant.id, &callee.id, &content, now)
                .await
                .map_err(|e| stored(&e))?;
            let entry = Entry::new(&callee.id, NOTIFICATION, json!(push));
            told.recorded(
                recovery::record(&mut tx, &tenant.id, vec![entry])
                    .await
                    .map_err(|e| stored(&e))?,
            );
        }
        tx.commit().await.map_err(|e| stored(&e))?;
        return Ok((call, told));
    }
    Err(stored(&last.unwrap_or(sqlx::Error::RowNotFound)))
}

/// Tells the caller's devices the call is calling, rings the callee's, and moves it to ringing.
async fn ring<A: Adapter>(
    hub: &Hub,
    s: &SocketRef<A>,
    mut call: Record,
    mut told: Told,
) -> Result<Value, Refusal> {
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let caller_ice = party_ice(&mut conn, &call, &call.caller_id)
        .await
        .map_err(|e| stored(&e))?;
    let callee_ice = party_ice(&mut conn, &call, &call.callee_id)
        .await
        .map_err(|e| stored(&e))?;
    told.user(
        &call.tenant_id,
        &call.caller_id,
        "call-state",
        steps::state_body(&call),
    );
    told.user(
        &call.tenant_id,
        &call.callee_id,
        "incoming-call",
        incoming_body(&mut conn, &call, &callee_ice)
            .await
            .map_err(|e| stored(&e))?,
    );
    if db::calls::advance(&mut conn, &call.id, CallState::Calling, CallState::Ringing)
        .await
        .map_err(|e| stored(&e))?
    {
        call.state = CallState::Ringing;
        told.state(&call);
    }
    let caller = call.caller_id.clone();
    told.deliver(hub, |rooms| s.within(rooms), Some((s, &caller)))
        .await;
    Ok(protocol::ok(json!({
        "callId": call.id,
        "iceServers": caller_ice,
        "state": call.state,
    })))
}

/// A call of the sender's by id: not found when it is not theirs.
async fn party_call(
    conn: &mut db::Conn,
    session: &Session,
    call_id: &str,
) -> Result<(Record, Party), Refusal> {
    let call = db::calls::get(conn, &session.tenant_id, call_id)
        .await
        .map_err(|e| stored(&e))?;
    call.and_then(|c| c.party(&session.user_id).map(|p| (c, p)))
        .ok_or_else(|| Refusal::new("not_found", format!("You have no call {call_id:?}.")))
}

/// `accept-call`, `reject-call`, `end-call` `{ callId }`: acks `{ ok, call }` once the change
/// is committed (the same for a retry of a change already made).
pub(super) async fn act<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
    act: Act,
) -> Result<Value, Refusal> {
    let req: CallRef = protocol::parse(act.event(), data)?;
    let tenant = {
        let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
        db::tenants::get(&mut conn, &session.tenant_id)
            .await
            .map_err(|e| stored(&e))?
            .ok_or_else(|| Refusal::new("unauthorized", "This connection's tenant is gone."))?
    };
    // The call is read in the change's transaction; a guarded write that finds it changed
    // since (the clock charged a unit, the other party acted) rolls back and reads it again.
    for _ in 0..5 {
        let mut tx = hub.db.begin().await.map_err(|e| stored(&e))?;
        let (mut call, party) = party_call(&mut tx, &session, &req.call_id).await?;
        let outcome =
            calls::act(call.state, party, act).map_err(|m| Refusal::new("invalid_state", m))?;
        let now = db::now_millis();
        let mut told = Told::new(&tenant.id);
        let changed = match outcome {
            Outcome::Already => return Ok(protocol::ok(json!({ "call": db::calls::wire(&call) }))),
            Outcome::Answered => answer(&mut tx, (&tenant, &hub), &mut call, (now, &mut told))
                .await
                .map_err(charge_refusal)?,
            Outcome::Ended(reason) => {
                let end = (reason, now);
                steps::finish(&mut tx, (&tenant, &hub), &mut call, end, &mut told)
                    .await
                    .map_err(charge_refusal)?
            }
        };
        if changed {
            tx.commit().await.map_err(|e| stored(&e))?;
            told.deliver(&hub, |rooms| s.within(rooms), Some((&s, &session.user_id)))
                .await;
            return Ok(protocol::ok(json!({ "call": db::calls::wire(&call) })));
        }
    }
    Err(Refusal::busy(
        "The call kept changing while this was done; send it again.",
    ))
}

/// The callee answered: in progress, the first unit charged now (a wallet that no longer pays
/// it ends the call at once), `call.started` to the tenant.
async fn answer(
    tx: &mut db::Conn,
    (tenant, hub): (&Tenant, &Hub),
    call: &mut Record,
    (now, told): (i64, &mut Told),
) -> Result<bool, ChargeError> {
    if !db::calls::answer(tx, &call.id, now).await? {
        return Ok(false);
    }
    call.state = CallState::InProgress;
    call.accepted_ms = Some(now);
    call.next_charge_ms = Some(now);
    match steps::charge(tx, (tenant, hub), call, 1, (now, told)).await? {
        Charge::Lost => return Ok(false),
        Charge::Short { .. } => {
            let reason = onda_shared::api::CallEndReason::BalanceExhausted;
            return steps::finish(tx, (tenant, hub), call, (reason, now), told).await;
        }
        Charge::Paid => {}
    }
    let outbox = crate::webhooks::Outbox::load(tx, &tenant.id).await?;
    outbox
        .enqueue(tx, WebhookEventType::CallStarted, &db::calls::wire(call))
        .await?;
    told.state(call);
    Ok(true)
}

/// `signal { callId, signal }`: relayed as `signal { callId, from, signal }` to the other
/// party's devices while the call rings or is in progress.
pub(super) async fn signal<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: Signal = protocol::parse("signal", data)?;
    let size = req.signal.to_string().len();
    if size > calls::MAX_SIGNAL_BYTES {
        return Err(Refusal::new(
            "too_large",
            format!(
                "This signal is {size} bytes as JSON; at most {} are relayed.",
                calls::MAX_SIGNAL_BYTES
            ),
        ));
    }
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let (call, party) = party_call(&mut conn, &session, &req.call_id).await?;
    drop(conn);
    if call.state == CallState::Ended {
        return Err(Refusal::new(
            "invalid_state",
            "This call has ended: its signals go nowhere.",
        ));
    }
    let room = user_room(&call.tenant_id, call.other(party));
    let body = json!({ "callId": call.id, "from": session.user_id, "signal": req.signal });
    if let Err(e) = hub.scoped(s.within(room)).emit("signal", &body).await {
        tracing::debug!(error = %e, "signal not delivered to every socket");
    }
    Ok(protocol::ok(json!({})))
}

/// `call-connected { callId }`: a party's media flows; the first report sets the call's setup
/// time (from `initiate-call`).
pub(super) async fn connected<A: Adapter>(
    hub: Arc<Hub>,
    _s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: CallRef = protocol::parse("call-connected", data)?;
    let mut conn = hub.db.conn().await.map_err(|e| stored(&e))?;
    let (call, _) = party_call(&mut conn, &session, &req.call_id).await?;
    let setup = (db::now_millis() - call.created_ms).max(0);
    if call.state == CallState::InProgress
        && db::calls::set_setup(&mut conn, &call.id, setup)
            .await
            .map_err(|e| stored(&e))?
    {
        hub.metrics.calls.setup.observe(setup as f64 / 1000.0);
    }
    Ok(protocol::ok(json!({})))
}

/// A socket that (re)connects while its user is in a call is told the call's state, and a
/// callee's new device the ring.
pub(super) async fn resume<A: Adapter>(hub: &Hub, s: &SocketRef<A>, session: &Session) {
    let told = async {
        let mut conn = hub.db.conn().await?;
        let Some(call) =
            db::calls::current(&mut conn, &session.tenant_id, &session.user_id).await?
        else {
            return Ok::<_, sqlx::Error>(());
        };
        let _ = s.emit("call-state", &steps::state_body(&call));
        if call.state == CallState::Ringing && call.callee_id == session.user_id {
            let ice = party_ice(&mut conn, &call, &call.callee_id).await?;
            let body = incoming_body(&mut conn, &call, &ice).await?;
            let _ = s.emit("incoming-call", &body);
        }
        Ok(())
    }
    .await;
    if let Err(e) = told {
        tracing::warn!(error = %e, "realtime: a reconnecting socket's call");
    }
}
