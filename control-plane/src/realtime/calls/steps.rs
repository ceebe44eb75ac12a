//! The writes of a call's changes, shared by the handlers (a party's action) and the clock
//! (time): charging started units to the caller's wallet, ending a call with its notifications
//! and webhooks, and what the parties are told once the transaction has committed ([`Told`]).

use super::super::protocol::NOTIFICATION;
use super::super::recovery::{self, Entry, Recorded};
use super::super::{Hub, user_room};
use crate::calls::{self, Record};
use crate::db::{self, Conn};
use crate::ledger::{self, Account};
use crate::notifications::{self, Content};
use crate::webhooks;
use onda_shared::api::{CallEndReason, CallState, LedgerSource, Tenant, WebhookEventType};
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;

/// What the parties are told after the commit: events to rooms, and notifications recorded in
/// their feeds.
pub(crate) struct Told {
    tenant_id: String,
    events: Vec<(Vec<String>, &'static str, Value)>,
    recorded: Vec<Recorded>,
}

impl Told {
    pub(crate) fn new(tenant_id: &str) -> Told {
        Told {
            tenant_id: tenant_id.to_string(),
            events: Vec::new(),
            recorded: Vec::new(),
        }
    }

    /// Notifications recorded in the parties' feeds in the change's transaction.
    pub(crate) fn recorded(&mut self, recorded: Vec<Recorded>) {
        self.recorded.extend(recorded);
    }

    /// `event` to every device of both parties.
    pub(crate) fn both(&mut self, call: &Record, event: &'static str, body: Value) {
        let rooms = vec![
            user_room(&call.tenant_id, &call.caller_id),
            user_room(&call.tenant_id, &call.callee_id),
        ];
        self.events.push((rooms, event, body));
    }

    /// `event` to every device of one user.
    pub(crate) fn user(&mut self, tenant_id: &str, user: &str, event: &'static str, body: Value) {
        self.events
            .push((vec![user_room(tenant_id, user)], event, body));
    }

    /// `call-state` of `call` as it is now, to both parties.
    pub(crate) fn state(&mut self, call: &Record) {
        self.both(call, "call-state", state_body(call));
    }

    /// Sends it all, through `to` (a socket's `within` or the server's `to`). `acting` is the
    /// socket whose event made the change, with its user: a broadcast with `except` (which
    /// the recorded events need, to pass by sockets being replayed them) leaves the sending
    /// socket out, so it gets its own copy here.
    pub(crate) async fn deliver<A: Adapter>(
        self,
        hub: &Hub,
        to: impl Fn(Vec<String>) -> BroadcastOperators<A>,
        acting: Option<(&SocketRef<A>, &str)>,
    ) {
        for (rooms, event, body) in self.events {
            if let Err(e) = hub.scoped(to(rooms)).emit(event, &body).await {
                tracing::debug!(error = %e, "{event} not delivered to every socket");
            }
        }
        let tenant = &self.tenant_id;
        for r in self.recorded {
            let op = to(vec![user_room(tenant, &r.user_id)]).except(r.skip_room(tenant));
            if let Err(e) = hub.scoped(op).emit(r.event, &r.args()).await {
                tracing::debug!(error = %e, "{} not delivered to every socket", r.event);
            }
            if let Some((s, user)) = acting
                && user == r.user_id
            {
                let _ = s.emit(r.event, &r.args());
            }
        }
    }
}

/// `call-state`'s payload: `{ callId, state, reason, call }`.
pub(crate) fn state_body(call: &Record) -> Value {
    json!({
        "callId": call.id,
        "state": call.state,
        "reason": call.reason,
        "call": db::calls::wire(call),
    })
}

/// Why a charge did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChargeError {
    /// The wallet changed between reading and debiting it (another spend): roll back; the
    /// clock charges again at its next tick.
    #[error("the caller's wallet changed while the call was charged")]
    Raced,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<db::ledger::PostError> for ChargeError {
    fn from(e: db::ledger::PostError) -> Self {
        match e {
            db::ledger::PostError::Insufficient { .. } => ChargeError::Raced,
            db::ledger::PostError::Database(e) => ChargeError::Database(e),
        }
    }
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Units up to the one asked for are paid.
    Paid,
    /// The wallet paid only up to `units` (fewer than asked): the call ends at that boundary.
    Short { units: i64 },
    /// Another replica charged these units first: nothing was written.
    Lost,
}

/// Charges the units of `call` up to (not including) `to`, as far as the caller's wallet pays
/// them, in one ledger transaction (the tenant's fee split off) and the guarded update of the
/// call; sets when the one-minute warning is due and tells both parties what was billed (and
/// the warning, when it is due now).
pub(crate) async fn charge(
    tx: &mut Conn,
    (tenant, hub): (&Tenant, &Hub),
    call: &mut Record,
    to: i64,
    (now, told): (i64, &mut Told),
) -> Result<Charge, ChargeError> {
    let from = call.units_charged;
    let accepted = call.accepted_ms.unwrap_or(call.created_ms);
    if to <= from {
        return Ok(Charge::Paid);
    }
    let wallet = Account::Wallet(call.caller_id.clone());
    let balance = db::ledger::balance(tx, &tenant.id, &wallet).await?;
    let n = (to - from).min(calls::affordable(
        call.price_per_minute,
        call.billing,
        from,
        balance,
    ));
    let amount = calls::cost(call.price_per_minute, call.billing, from, n);
    if amount > 0 {
        let mut posting = ledger::payment(
            LedgerSource::Call,
            &call.caller_id,
            &call.callee_id,
            amount,
            tenant.platform_fee_bps,
        )
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        posting.reference = Some(call.id.clone());
        posting.reason = Some(format!(
            "call units {}..{} ({} s each)",
            from,
            from + n,
            call.billing.unit_secs()
        ));
        db::ledger::post(tx, tenant, &posting).await?;
    }
    if n > 0 {
        // The tenant's plan prices its users' call minutes: the time charged, with the charge.
        let ms = u64::try_from(n * call.unit_ms()).unwrap_or(0);
        db::realtime_usage::add_call_time(tx, &tenant.id, now, ms).await?;
    }
    let paid = from + n;
    let paid_until = calls::paid_until(call, paid, balance - amount);
    let warn_at = paid_until - calls::WARN_BEFORE_MS;
    let warned = match (warn_at <= now, call.warned_ms) {
        (true, None) => Some(Some(now)),
        (false, Some(_)) => Some(None),
        _ => None,
    };
    let change = db::calls::Charged {
        from,
        to: paid,
        amount,
        next_charge_ms: accepted + paid * call.unit_ms(),
        warn_at_ms: warn_at,
        warned_ms: warned,
    };
    if !db::calls::charge(tx, &call.id, &change).await? {
        return Ok(Charge::Lost);
    }
    call.units_charged = paid;
    call.amount_charged += amount;
    call.next_charge_ms = Some(change.next_charge_ms);
    call.warn_at_ms = Some(warn_at);
    if let Some(w) = warned {
        call.warned_ms = w;
    }
    if amount > 0 {
        hub.metrics
            .calls
            .billed_seconds
            .inc_by(u64::try_from(n * call.billing.unit_secs()).unwrap_or(0));
        hub.ledger.transaction(LedgerSource::Call);
        hub.ledger
            .paid(LedgerSource::Call, &tenant.currency, amount);
    }
    told.both(
        call,
        "call-billed",
        json!({ "callId": call.id, "unitsCharged": call.units_charged,
                "amount": call.amount_charged, "currency": call.currency,
                "paidUntil": db::messages::rfc3339_ms(paid_until) }),
    );
    if warned == Some(Some(now)) {
        told.both(call, "call-warning", warning_body(call, paid_until, now));
    }
    Ok(if paid < to {
        Charge::Short { units: paid }
    } else {
        Charge::Paid
    })
}

/// `call-warning`'s payload: when the balance stops paying, and how many seconds are left.
pub(crate) fn warning_body(call: &Record, paid_until: i64, now: i64) -> Value {
    json!({
        "callId": call.id,
        "endsAt": db::messages::rfc3339_ms(paid_until),
        "secondsLeft": ((paid_until - now).max(0) + 999) / 1000,
    })
}

/// Ends `call` at `ended_ms` for `reason`: an answered call first pays each unit it was in (as
/// far as the wallet does), then the parties are freed, notified (a missed call, an ended call
/// with its cost) and the tenant's webhooks get `call.ended`. False when the call had ended
/// already (nothing written).
pub(crate) async fn finish(
    tx: &mut Conn,
    (tenant, hub): (&Tenant, &Hub),
    call: &mut Record,
    (reason, ended_ms): (CallEndReason, i64),
    told: &mut Told,
) -> Result<bool, ChargeError> {
    if call.state == CallState::Ended {
        return Ok(false);
    }
    if call.state == CallState::InProgress
        && let Some(accepted) = call.accepted_ms
    {
        let owed = calls::owed_units(accepted, call.unit_ms(), ended_ms.max(accepted));
        // Ending: no low-balance warning for a call that is over (the charge warns only a
        // call that has not been warned).
        call.warned_ms.get_or_insert(ended_ms);
        if charge(tx, (tenant, hub), call, owed, (ended_ms, told)).await? == Charge::Lost {
            return Ok(false);
        }
    }
    if !db::calls::end(tx, &call.id, reason, ended_ms).await? {
        return Ok(false);
    }
    call.state = CallState::Ended;
    call.reason = Some(reason);
    call.ended_ms = Some(ended_ms);
    let wire = db::calls::wire(call);
    let outbox = webhooks::Outbox::load(tx, &tenant.id).await?;
    outbox
        .enqueue(tx, WebhookEventType::CallEnded, &wire)
        .await?;
    let mut notes: Vec<(String, Content)> = Vec::new();
    if reason == CallEndReason::Missed {
        notes.push((call.callee_id.clone(), missed(call)));
    }
    if call.accepted_ms.is_some() {
        for user in [&call.caller_id, &call.callee_id] {
            notes.push((user.clone(), ended(call, wire.duration_secs)));
        }
    }
    let mut entries = Vec::new();
    for (user, content) in &notes {
        let push = notifications::store_with(tx, &outbox, user, content, ended_ms).await?;
        entries.push(Entry::new(user, NOTIFICATION, json!(push)));
    }
    told.recorded(recovery::record(tx, &tenant.id, entries).await?);
    told.state(call);
    hub.metrics.calls.ended(reason);
    Ok(true)
}

fn call_data(call: &Record) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("callId".into(), json!(call.id));
    data.insert("callerId".into(), json!(call.caller_id));
    data.insert("calleeId".into(), json!(call.callee_id));
    data
}

/// The callee's notification of a call nobody answered.
fn missed(call: &Record) -> Content {
    Content {
        kind: "call.missed".to_string(),
        title: format!("Missed call from {}", call.caller_id),
        body: format!(
            "{} called you and nobody answered within {} seconds.",
            call.caller_id,
            calls::RING_TIMEOUT_MS / 1000
        ),
        link: None,
        data: call_data(call),
    }
}

/// Each party's notification of an answered call's end, with its length and cost.
fn ended(call: &Record, duration_secs: i64) -> Content {
    let mut data = call_data(call);
    data.insert("durationSecs".into(), json!(duration_secs));
    data.insert("amount".into(), json!(call.amount_charged));
    data.insert("currency".into(), json!(call.currency));
    data.insert("reason".into(), json!(call.reason));
    Content {
        kind: "call.ended".to_string(),
        title: format!(
            "Call ended: {}:{:02}",
            duration_secs / 60,
            duration_secs % 60
        ),
        body: format!(
            "The call between {} and {} lasted {} s and cost {} (minor units of {}).",
            call.caller_id, call.callee_id, duration_secs, call.amount_charged, call.currency
        ),
        link: None,
        data,
    }
}

/// The callee's notification of a call ringing (for their other devices and apps that are
/// closed).
pub(crate) fn incoming(call: &Record, caller_name: &str) -> Content {
    let mut data = call_data(call);
    data.insert("pricePerMinute".into(), json!(call.price_per_minute));
    data.insert("currency".into(), json!(call.currency));
    Content {
        kind: "call.incoming".to_string(),
        title: format!("Incoming call from {caller_name}"),
        body: format!(
            "{caller_name} is calling you ({} a minute, minor units of {}).",
            call.price_per_minute, call.currency
        ),
        link: None,
        data,
    }
}
