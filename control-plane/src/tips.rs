//! Tips: a fan pays a creator of their tenant from their wallet, over REST (`POST /v1/me/tips`)
//! or the gateway (`send-tip`); both call [`send`], so the rules and the idempotency are one.
//!
//! A tip is one ledger transaction (`ledger::payment` with source `tip`: the fan's wallet pays
//! the creator's earnings, the tenant's fee split off), written with its message, the creator's
//! "payment received" notification, their new earnings for the `earnings` event, the
//! `tip.created` webhook event and the idempotency key's answer, all in one database
//! transaction: either all of it is committed or nothing is. The caller pushes the recorded
//! events after the commit.
//!
//! Idempotency: the key is stored under one route name for both transports with a hash of the
//! payer and the request, so a retry with the same key, over either, answers the stored tip and
//! moves nothing; the same key with another tip is refused. A refused tip stores nothing.

use crate::chat;
use crate::db::{self, Db, ledger::PostError, ledger::StoredAnswer};
use crate::ledger::{self, Account};
use crate::metrics::LedgerMetrics;
use crate::notifications;
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery::{self, Entry, Recorded};
use crate::users;
use crate::webhooks;
use onda_shared::api::{
    ChatMessage, ChatMessageKind, CreateTip, LedgerSource, Tenant, Tip, WebhookEventType,
};
use serde_json::json;

/// The longest tip message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// The idempotency route of a tip, over REST and the gateway alike.
pub const ROUTE: &str = "tip";

/// The event that tells a creator's devices their new earnings balance.
pub const EARNINGS_EVENT: &str = "earnings";

/// Why a tip was refused; nothing was moved.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A bad request: amount, message, a non-creator, oneself, under the minimum.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The plan has no monetization, or one of the two blocked the other.
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// The wallet does not hold the amount.
    #[error("{0}")]
    Insufficient(String),
    /// The key was used for another request.
    #[error("{0}")]
    KeyConflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A tip done (or found done under its key): the tip, whether it is a replay, and the events to
/// push to the creator's devices (none for a replay).
#[derive(Debug)]
pub struct Sent {
    pub tip: Tip,
    pub replayed: bool,
    pub recorded: Vec<Recorded>,
    /// The tip's line in the stream's chat it was given in (none for a replay: the room saw it).
    pub chat: Option<ChatMessage>,
}

/// Whether the tenant's plan includes monetization; the refusal says which feature is missing.
pub async fn monetized(conn: &mut db::Conn, tenant: &Tenant) -> Result<(), Refused> {
    match db::plans::get(conn, &tenant.plan_id).await? {
        Some(p) if p.features.monetization => Ok(()),
        _ => Err(Refused::Forbidden {
            code: "forbidden",
            detail: format!(
                "The tenant's plan {:?} does not include monetization (the plan feature \
                 `monetization`), so its users cannot tip or request payouts.",
                tenant.plan_id
            ),
        }),
    }
}

/// The checks that need no database: a creator id that is not the payer's, a valid amount, a
/// short message without control characters.
fn check(payer: &str, req: &CreateTip) -> Result<(), Refused> {
    let creator =
        users::user_id(&req.creator_id).map_err(|e| Refused::Invalid(format!("creatorId: {e}")))?;
    if creator == payer {
        return Err(Refused::Invalid(
            "creatorId is your own id: you cannot tip yourself.".to_string(),
        ));
    }
    ledger::amount("amount", req.amount).map_err(|e| Refused::Invalid(e.to_string()))?;
    let n = req.message.chars().count();
    if n > MAX_MESSAGE_CHARS {
        return Err(Refused::Invalid(format!(
            "message has {n} characters; a tip's message has at most {MAX_MESSAGE_CHARS}."
        )));
    }
    if req.message.chars().any(char::is_control) {
        return Err(Refused::Invalid(
            "message must not contain control characters.".to_string(),
        ));
    }
    Ok(())
}

fn refusal_reason(r: &Refused) -> Option<&'static str> {
    match r {
        Refused::Invalid(d) if d.starts_with("amount") => Some("invalid_amount"),
        Refused::Insufficient(_) => Some("insufficient_funds"),
        Refused::KeyConflict(_) => Some("idempotency_conflict"),
        _ => None,
    }
}

/// Tips `req.creator_id` from `payer`'s wallet under the idempotency `key` (see the module's
/// documentation). Counts the transaction or the refusal in `metrics`.
pub async fn send(
    db: &Db,
    metrics: &LedgerMetrics,
    tenant: &Tenant,
    payer: &str,
    (key, req): (&str, &CreateTip),
) -> Result<Sent, Refused> {
    let done = attempt(db, tenant, payer, key, req).await;
    match &done {
        Ok(s) if !s.replayed => {
            metrics.transaction(LedgerSource::Tip);
            metrics.paid(LedgerSource::Tip, &s.tip.currency, s.tip.amount);
        }
        Ok(_) => {}
        Err(r) => {
            if let Some(reason) = refusal_reason(r) {
                metrics.refused(reason);
            }
        }
    }
    done
}

async fn attempt(
    db: &Db,
    tenant: &Tenant,
    payer: &str,
    key: &str,
    req: &CreateTip,
) -> Result<Sent, Refused> {
    monetized(&mut *db.conn().await?, tenant).await?;
    check(payer, req)?;
    let body = serde_json::to_string(req).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let hash = crate::secrets::sha256_hex(&format!("{ROUTE}\n{payer}\n{body}"));
    let mut tx = db.begin().await?;
    if let Some(stored) = db::ledger::idempotent_answer(&mut tx, &tenant.id, key).await? {
        return replay(key, &stored, &hash);
    }
    let mut answer = StoredAnswer {
        route: ROUTE.to_string(),
        request_hash: hash,
        status: 0,
        body: String::new(),
    };
    if let Err(e) = db::ledger::store_answer(&mut tx, &tenant.id, key, &answer).await {
        if !db::is_unique_violation(&e) {
            return Err(e.into());
        }
        // A concurrent request with this key committed while we waited: answer what it stored.
        drop(tx);
        let stored = db::ledger::idempotent_answer(&mut *db.conn().await?, &tenant.id, key)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        return replay(key, &stored, &answer.request_hash);
    }
    let (tip, recorded, chat) = pay(&mut tx, tenant, payer, req).await?;
    answer.status = 201;
    answer.body = serde_json::to_string(&tip).map_err(|e| sqlx::Error::Encode(e.into()))?;
    db::ledger::complete_answer(&mut tx, &tenant.id, key, &answer).await?;
    tx.commit().await?;
    Ok(Sent {
        tip,
        replayed: false,
        recorded,
        chat,
    })
}

fn replay(key: &str, stored: &StoredAnswer, hash: &str) -> Result<Sent, Refused> {
    if stored.route != ROUTE || stored.request_hash != hash {
        return Err(Refused::KeyConflict(format!(
            "Idempotency key {key:?} was already used with a different request ({}); use a new \
             key for a new operation.",
            stored.route
        )));
    }
    let tip = serde_json::from_str(&stored.body).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(Sent {
        tip,
        replayed: true,
        recorded: Vec::new(),
        chat: None,
    })
}

/// The tip's writes, in the caller's transaction: the checks that need the creator, the
/// posting, the message, its line in the stream's chat, the webhook event and the creator's
/// notification and earnings event.
async fn pay(
    tx: &mut db::Conn,
    tenant: &Tenant,
    payer: &str,
    req: &CreateTip,
) -> Result<(Tip, Vec<Recorded>, Option<ChatMessage>), Refused> {
    let creator = db::users::get(tx, &tenant.id, &req.creator_id)
        .await?
        .ok_or_else(|| Refused::NotFound(format!("There is no user {:?}.", req.creator_id)))?;
    if !creator.creator {
        return Err(Refused::Invalid(format!(
            "User {:?} is not a creator: only creators can be tipped.",
            creator.id
        )));
    }
    if req.amount < creator.tip_minimum {
        return Err(Refused::Invalid(format!(
            "amount = {} is under {:?}'s minimum tip of {} minor units.",
            req.amount, creator.id, creator.tip_minimum
        )));
    }
    if let Some(stream) = &req.stream_id {
        in_chat(tx, tenant, (payer, &creator.id), stream).await?;
    }
    let (i_blocked, they_blocked) =
        db::moderation::between(tx, &tenant.id, payer, &creator.id).await?;
    if i_blocked || they_blocked {
        return Err(Refused::Forbidden {
            code: "blocked",
            detail: if they_blocked {
                "This user does not accept tips from you.".to_string()
            } else {
                "You blocked this user: unblock them (unblock-user) to tip them.".to_string()
            },
        });
    }
    let posting = ledger::payment(
        LedgerSource::Tip,
        payer,
        &creator.id,
        req.amount,
        tenant.platform_fee_bps,
    )
    .map_err(|e| Refused::Invalid(e.to_string()))?;
    let t = db::ledger::post(tx, tenant, &posting)
        .await
        .map_err(|e| match e {
            PostError::Insufficient { .. } => Refused::Insufficient(format!(
                "Your wallet holds less than the {} this tip takes; nothing was moved.",
                req.amount
            )),
            PostError::Database(e) => Refused::Database(e),
        })?;
    let fee = t
        .entries
        .iter()
        .find(|e| e.account == Account::Platform.key())
        .map_or(0, |e| e.amount);
    db::ledger::insert_tip(tx, &tenant.id, &t.id, &req.message).await?;
    let chat = match &req.stream_id {
        Some(stream_id) => {
            let line = db::stream_chat::NewChatMessage {
                id: &crate::secrets::new_time_id("chm", db::now_millis()),
                tenant_id: &tenant.id,
                stream_id,
                creator_id: &creator.id,
                user_id: payer,
                kind: ChatMessageKind::Tip,
                content: &req.message,
                tip: Some((t.amount, &t.id)),
                created_ms: db::now_millis(),
            };
            Some(db::stream_chat::insert(tx, &line).await?)
        }
        None => None,
    };
    let tip = Tip {
        id: t.id,
        sender_id: payer.to_string(),
        creator_id: creator.id.clone(),
        amount: t.amount,
        fee,
        net: t.amount - fee,
        currency: t.currency,
        message: req.message.clone(),
        created_at: t.created_at,
    };
    // The tenant's endpoints, read once for both events of the tip.
    let outbox = webhooks::Outbox::load(tx, &tenant.id).await?;
    outbox
        .enqueue(tx, WebhookEventType::TipCreated, &tip)
        .await?;
    let sender = db::users::get(tx, &tenant.id, payer)
        .await?
        .map_or_else(|| payer.to_string(), |u| u.display_name);
    let content = notifications::for_tip(&sender, &tip);
    let push =
        notifications::store_with(tx, &outbox, &creator.id, &content, db::now_millis()).await?;
    let earnings =
        db::ledger::balance(tx, &tenant.id, &Account::Earnings(creator.id.clone())).await?;
    let recorded = recovery::record(
        tx,
        &tenant.id,
        vec![
            Entry::new(&creator.id, NOTIFICATION, json!(push)),
            Entry::new(
                &creator.id,
                EARNINGS_EVENT,
                json!({ "currency": tip.currency, "earnings": earnings, "tipId": tip.id }),
            ),
        ],
    )
    .await?;
    Ok((tip, recorded, chat))
}

/// A tip given in a stream's chat: the stream is the creator's, and the tipper may be in its
/// chat (the same check as joining it).
async fn in_chat(
    tx: &mut db::Conn,
    tenant: &Tenant,
    (payer, creator): (&str, &str),
    stream_id: &str,
) -> Result<(), Refused> {
    let stream = db::live_streams::get(tx, stream_id, Some(&tenant.id))
        .await?
        .ok_or_else(|| Refused::NotFound(format!("There is no stream {stream_id:?}.")))?;
    if stream.creator_id.as_deref() != Some(creator) {
        return Err(Refused::Invalid(format!(
            "streamId: stream {stream_id:?} is not {creator:?}'s; a tip shows only in its \
             creator's chats."
        )));
    }
    chat::may_join(
        tx,
        (&tenant.id, &tenant.currency),
        &stream,
        payer,
        db::now_millis(),
    )
    .await?
    .map(|_| ())
    .map_err(|r| match r.code {
        "not_found" => Refused::NotFound(r.message),
        // "forbidden" is the plan's refusal (`monetized`); this one is the viewer's.
        "forbidden" => Refused::Forbidden {
            code: "not_entitled",
            detail: r.message,
        },
        code => Refused::Forbidden {
            code,
            detail: r.message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(creator: &str, amount: i64, message: &str) -> CreateTip {
        CreateTip {
            creator_id: creator.to_string(),
            amount,
            message: message.to_string(),
            stream_id: None,
        }
    }

    #[test]
    fn requests_are_checked_before_the_database() {
        assert!(check("fan", &req("star", 100, "great set 🎶")).is_ok());
        assert!(check("fan", &req("star", 1, &"é".repeat(MAX_MESSAGE_CHARS))).is_ok());
        for (bad, says) in [
            (req("fan", 100, ""), "yourself"),
            (req("", 100, ""), "creatorId"),
            (req("a b", 100, ""), "creatorId"),
            (req("star", 0, ""), "amount = 0"),
            (req("star", -5, ""), "amount = -5"),
            (req("star", ledger::MAX_AMOUNT + 1, ""), "amount"),
            (req("star", 5, &"x".repeat(MAX_MESSAGE_CHARS + 1)), "201"),
            (req("star", 5, "a\u{0}b"), "control"),
        ] {
            let e = check("fan", &bad).expect_err("refused").to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let amount = check("fan", &req("star", 0, "")).expect_err("refused");
        assert_eq!(refusal_reason(&amount), Some("invalid_amount"));
    }
}
