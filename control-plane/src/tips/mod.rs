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
//! Tips that arrive together share that transaction ([`writer`]: group commit, a few
//! statements for the whole batch, [`batch`]), each with its own answer: one tip's refusal
//! never touches another's. A tip the server cannot queue (too many waiting) is refused as
//! [`Refused::Busy`], which says to try again with the same key.
//!
//! Idempotency: the key is stored under one route name for both transports with a hash of the
//! payer and the request, so a retry with the same key, over either, answers the stored tip and
//! moves nothing; the same key with another tip is refused. A refused tip stores nothing.

mod batch;
mod writer;

pub use writer::Writer;

use crate::chat;
use crate::db::{self, ledger::StoredAnswer};
use crate::ledger;
use crate::metrics::LedgerMetrics;
use crate::realtime::recovery::Recorded;
use crate::users;
use onda_shared::api::{ChatMessage, CreateTip, LedgerSource, Tenant, Tip};

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
    /// The payer's tenant is gone (deleted while they were connected).
    #[error("{0}")]
    TenantGone(String),
    /// Too many tips are waiting to be written (or the server is stopping): nothing was done,
    /// and the same request with the same key may be sent again.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Refused {
    /// The refusal of a tip from a tenant whose plan has no monetization.
    fn not_monetized(tenant: &Tenant) -> Refused {
        Refused::Forbidden {
            code: "forbidden",
            detail: format!(
                "The tenant's plan {:?} does not include monetization (the plan feature \
                 `monetization`), so its users cannot tip or request payouts.",
                tenant.plan_id
            ),
        }
    }
}

/// A tip to write: who pays, in which tenant, under which key, and the hash of the request
/// stored with the key.
#[derive(Debug, Clone)]
struct Queued {
    tenant_id: String,
    payer: String,
    key: String,
    req: CreateTip,
    hash: String,
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
        _ => Err(Refused::not_monetized(tenant)),
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
/// documentation), through the tenant's `writer`. Counts the transaction or the refusal in
/// `metrics`.
pub async fn send(
    writer: &Writer,
    metrics: &LedgerMetrics,
    tenant_id: &str,
    payer: &str,
    (key, req): (&str, &CreateTip),
) -> Result<Sent, Refused> {
    let body = serde_json::to_string(req).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let tip = Queued {
        tenant_id: tenant_id.to_string(),
        payer: payer.to_string(),
        key: key.to_string(),
        req: req.clone(),
        hash: crate::secrets::sha256_hex(&format!("{ROUTE}\n{payer}\n{body}")),
    };
    let done = writer.send(tip).await;
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
