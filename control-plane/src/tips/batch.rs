//! One transaction for a batch of tips (see `tips::Writer`): the same rules as a tip alone,
//! each tip answered on its own, in a few statements per tenant whatever the count:
//!
//! 1. the tenant; then, in one statement, its plan's monetization and each tip's stored answer,
//!    creator, the blocks between the two and the payer's name (`db::tips::facts`);
//! 2. the rules, in the order a tip alone meets them (monetization, the request's form, a
//!    replay, the creator, the stream's chat, blocks), each tip's refusal its own;
//! 3. the keys of the tips that pass, claimed with their answers in one statement (a key taken
//!    meanwhile by a request in flight answers what that one stored);
//! 4. the payments (`db::ledger::post_payments`: credits, the wallets locked, who can pay,
//!    the debits, transactions and entries), the messages, chat lines (per tip given in a
//!    chat), `tip.created` events, the creators' notifications, their earnings;
//! 5. last, the creators' feed events (their feed row is what tips to one creator queue on
//!    until the commit) and the payments' metering.
//!
//! An error of the database is the batch's (the writer then writes each tip alone).

use super::{EARNINGS_EVENT, Queued, Refused, Sent, check, in_chat, replay};
use crate::db::{self, Conn, Db, ledger::StoredAnswer};
use crate::ledger::{self, Account, Posting};
use crate::notifications;
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery::{self, Entry};
use crate::webhooks::Outbox;
use onda_shared::api::{ChatMessageKind, LedgerSource, Tenant, Tip, WebhookEventType};
use serde_json::json;
use std::collections::BTreeMap;

/// Writes `tips` in one transaction and answers each, in their order.
pub(super) async fn write(
    db: &Db,
    tips: &[&Queued],
) -> Result<Vec<Result<Sent, Refused>>, sqlx::Error> {
    let mut by_tenant: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in tips.iter().enumerate() {
        by_tenant.entry(&t.tenant_id).or_default().push(i);
    }
    let mut out: Vec<Option<Result<Sent, Refused>>> = tips.iter().map(|_| None).collect();
    let mut tx = db.begin().await?;
    for (tenant_id, idx) in by_tenant {
        let group: Vec<&Queued> = idx.iter().map(|i| tips[*i]).collect();
        let answers = write_tenant(&mut tx, tenant_id, &group).await?;
        for (i, a) in idx.into_iter().zip(answers) {
            out[i] = Some(a);
        }
    }
    tx.commit().await?;
    out.into_iter()
        .map(|a| a.ok_or(sqlx::Error::RowNotFound))
        .collect()
}

/// A tip that passed the rules, about to be written.
struct Paying<'a> {
    /// Its place in the tenant's group.
    at: usize,
    tip: &'a Queued,
    posting: Posting,
    answer: Tip,
    payer_name: String,
    created_ms: i64,
}

/// A rule's verdict on one tip.
enum Verdict {
    /// Boxed: a tip's answer is much larger than its posting.
    Answered(Box<Result<Sent, Refused>>),
    Pays(Posting),
}

/// A database error inside a tip's refusal is the batch's.
fn own(r: Refused) -> Result<Verdict, sqlx::Error> {
    match r {
        Refused::Database(e) => Err(e),
        r => Ok(Verdict::Answered(Box::new(Err(r)))),
    }
}

async fn write_tenant(
    tx: &mut Conn,
    tenant_id: &str,
    tips: &[&Queued],
) -> Result<Vec<Result<Sent, Refused>>, sqlx::Error> {
    let Some(tenant) = db::tenants::get(tx, tenant_id).await? else {
        return Ok(tips
            .iter()
            .map(|_| {
                Err(Refused::TenantGone(
                    "This tip's tenant is gone.".to_string(),
                ))
            })
            .collect());
    };
    let asks: Vec<db::tips::Ask<'_>> = tips
        .iter()
        .map(|t| db::tips::Ask {
            key: &t.key,
            creator_id: &t.req.creator_id,
            payer_id: &t.payer,
        })
        .collect();
    let (monetized, facts) = db::tips::facts(tx, (tenant_id, &tenant.plan_id), &asks).await?;
    let mut out: Vec<Option<Result<Sent, Refused>>> = tips.iter().map(|_| None).collect();
    let mut paying = Vec::new();
    let created_ms = db::now_millis();
    for (at, (tip, f)) in tips.iter().zip(&facts).enumerate() {
        let verdict = if monetized {
            judge(tx, &tenant, tip, f).await?
        } else {
            Verdict::Answered(Box::new(Err(Refused::not_monetized(&tenant))))
        };
        match verdict {
            Verdict::Answered(a) => out[at] = Some(*a),
            Verdict::Pays(posting) => {
                let answer = answer_of(&tenant, tip, &posting, created_ms);
                let payer_name = f.payer_name.clone().unwrap_or_else(|| tip.payer.clone());
                paying.push(Paying {
                    at,
                    tip,
                    posting,
                    answer,
                    payer_name,
                    created_ms,
                });
            }
        }
    }
    let paying = claim(tx, tenant_id, paying, &mut out).await?;
    let paid = pay(tx, &tenant, paying, &mut out).await?;
    let sent = tell(tx, &tenant, &paid).await?;
    for (p, s) in paid.iter().zip(sent) {
        out[p.at] = Some(Ok(s));
    }
    if !paid.is_empty() {
        // Last: the day's metering row is a lock the message writer also takes after feeds.
        let n = u64::try_from(paid.len()).unwrap_or(u64::MAX);
        db::realtime_usage::add_transactions(tx, tenant_id, created_ms, n).await?;
    }
    out.into_iter()
        .map(|a| a.ok_or(sqlx::Error::RowNotFound))
        .collect()
}

/// The rules of one tip, in the order a tip alone meets them.
async fn judge(
    tx: &mut Conn,
    tenant: &Tenant,
    tip: &Queued,
    f: &db::tips::Facts,
) -> Result<Verdict, sqlx::Error> {
    let req = &tip.req;
    if let Err(r) = check(&tip.payer, req) {
        return own(r);
    }
    if let Some(stored) = &f.stored {
        return Ok(Verdict::Answered(Box::new(replay(
            &tip.key, stored, &tip.hash,
        ))));
    }
    let Some((is_creator, minimum)) = f.creator else {
        return own(Refused::NotFound(format!(
            "There is no user {:?}.",
            req.creator_id
        )));
    };
    if !is_creator {
        return own(Refused::Invalid(format!(
            "User {:?} is not a creator: only creators can be tipped.",
            req.creator_id
        )));
    }
    if req.amount < minimum {
        return own(Refused::Invalid(format!(
            "amount = {} is under {:?}'s minimum tip of {} minor units.",
            req.amount, req.creator_id, minimum
        )));
    }
    if let Some(stream) = &req.stream_id
        && let Err(r) = in_chat(tx, tenant, (&tip.payer, &req.creator_id), stream).await
    {
        return own(r);
    }
    if f.payer_blocks || f.creator_blocks {
        return own(Refused::Forbidden {
            code: "blocked",
            detail: if f.creator_blocks {
                "This user does not accept tips from you.".to_string()
            } else {
                "You blocked this user: unblock them (unblock-user) to tip them.".to_string()
            },
        });
    }
    match ledger::payment(
        LedgerSource::Tip,
        &tip.payer,
        &req.creator_id,
        req.amount,
        tenant.platform_fee_bps,
    ) {
        Ok(p) => Ok(Verdict::Pays(p)),
        Err(e) => own(Refused::Invalid(e.to_string())),
    }
}

/// The tip as it will be answered (and stored with its key) once written: its transaction's id
/// and time are chosen here.
fn answer_of(tenant: &Tenant, tip: &Queued, posting: &Posting, created_ms: i64) -> Tip {
    let fee = posting
        .entries()
        .iter()
        .find(|(a, _)| *a == Account::Platform)
        .map_or(0, |(_, v)| *v);
    Tip {
        id: crate::secrets::new_time_id("txn", created_ms),
        sender_id: tip.payer.clone(),
        creator_id: tip.req.creator_id.clone(),
        amount: posting.amount,
        fee,
        net: posting.amount - fee,
        currency: tenant.currency.clone(),
        message: tip.req.message.clone(),
        created_at: db::messages::rfc3339_ms(created_ms),
    }
}

/// Claims the keys of the tips about to pay, with their answers; a tip whose key another
/// request took meanwhile answers what that one stored instead of paying.
async fn claim<'a>(
    tx: &mut Conn,
    tenant_id: &str,
    paying: Vec<Paying<'a>>,
    out: &mut [Option<Result<Sent, Refused>>],
) -> Result<Vec<Paying<'a>>, sqlx::Error> {
    let answers: Vec<StoredAnswer> = paying
        .iter()
        .map(|p| {
            Ok(StoredAnswer {
                route: super::ROUTE.to_string(),
                request_hash: p.tip.hash.clone(),
                status: 201,
                body: serde_json::to_string(&p.answer)
                    .map_err(|e| sqlx::Error::Encode(e.into()))?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let pairs: Vec<(&str, &StoredAnswer)> = paying
        .iter()
        .zip(&answers)
        .map(|(p, a)| (p.tip.key.as_str(), a))
        .collect();
    let created_ms = paying.first().map_or(0, |p| p.created_ms);
    let claimed = db::tips::claim(tx, tenant_id, &pairs, created_ms).await?;
    let mut kept = Vec::with_capacity(paying.len());
    for p in paying {
        if claimed.contains(&p.tip.key) {
            kept.push(p);
            continue;
        }
        // A concurrent request with this key committed while we waited: answer what it stored.
        let stored = db::ledger::idempotent_answer(tx, tenant_id, &p.tip.key)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        out[p.at] = Some(replay(&p.tip.key, &stored, &p.tip.hash));
    }
    Ok(kept)
}

/// Writes the payments; a tip whose wallet does not hold its amount is refused and its key
/// given back. Answers the tips paid.
async fn pay<'a>(
    tx: &mut Conn,
    tenant: &Tenant,
    paying: Vec<Paying<'a>>,
    out: &mut [Option<Result<Sent, Refused>>],
) -> Result<Vec<Paying<'a>>, sqlx::Error> {
    let batched: Vec<db::ledger::Batched<'_>> = paying
        .iter()
        .map(|p| db::ledger::Batched {
            posting: &p.posting,
            id: &p.answer.id,
            created_ms: p.created_ms,
        })
        .collect();
    let written = db::ledger::post_payments(tx, tenant, &batched).await?;
    drop(batched);
    let mut paid = Vec::with_capacity(paying.len());
    let mut refused = Vec::new();
    for (p, t) in paying.into_iter().zip(written) {
        if t.is_some() {
            paid.push(p);
        } else {
            out[p.at] = Some(Err(Refused::Insufficient(format!(
                "Your wallet holds less than the {} this tip takes; nothing was moved.",
                p.tip.req.amount
            ))));
            refused.push(p.tip.key.as_str());
        }
    }
    db::tips::release(tx, &tenant.id, &refused).await?;
    let messages: Vec<(&str, &str)> = paid
        .iter()
        .map(|p| (p.answer.id.as_str(), p.tip.req.message.as_str()))
        .collect();
    db::tips::insert_messages(tx, &tenant.id, &messages).await?;
    Ok(paid)
}

/// What the paid tips tell: their chat lines, `tip.created` events, the creators'
/// notifications and earnings, recorded in their feeds (last).
async fn tell(
    tx: &mut Conn,
    tenant: &Tenant,
    paid: &[Paying<'_>],
) -> Result<Vec<Sent>, sqlx::Error> {
    if paid.is_empty() {
        return Ok(Vec::new());
    }
    let mut chats = Vec::with_capacity(paid.len());
    for p in paid {
        let line = match &p.tip.req.stream_id {
            Some(stream_id) => {
                let line = db::stream_chat::NewChatMessage {
                    id: &crate::secrets::new_time_id("chm", p.created_ms),
                    tenant_id: &tenant.id,
                    stream_id,
                    creator_id: &p.answer.creator_id,
                    user_id: &p.tip.payer,
                    kind: ChatMessageKind::Tip,
                    content: &p.tip.req.message,
                    tip: Some((p.answer.amount, &p.answer.id)),
                    created_ms: p.created_ms,
                };
                Some(db::stream_chat::insert(tx, &line).await?)
            }
            None => None,
        };
        chats.push(line);
    }
    // The tenant's endpoints, read once for every event of the batch.
    let outbox = Outbox::load(tx, &tenant.id).await?;
    let answers: Vec<_> = paid.iter().map(|p| &p.answer).collect();
    outbox
        .enqueue_many(tx, WebhookEventType::TipCreated, &answers)
        .await?;
    let contents: Vec<notifications::Content> = paid
        .iter()
        .map(|p| notifications::for_tip(&p.payer_name, &p.answer))
        .collect();
    let items: Vec<(&str, &notifications::Content)> = paid
        .iter()
        .zip(&contents)
        .map(|(p, c)| (p.answer.creator_id.as_str(), c))
        .collect();
    let created_ms = paid[0].created_ms;
    let pushes = notifications::store_many(tx, &outbox, &items, created_ms).await?;
    // Each creator's earnings after each of their tips: the balance now, less what their later
    // tips of the batch added.
    let mut after: BTreeMap<&str, i64> = BTreeMap::new();
    for p in paid {
        if !after.contains_key(p.answer.creator_id.as_str()) {
            let account = Account::Earnings(p.answer.creator_id.clone());
            let now = db::ledger::balance(tx, &tenant.id, &account).await?;
            after.insert(&p.answer.creator_id, now);
        }
    }
    let mut earnings = vec![0; paid.len()];
    for (i, p) in paid.iter().enumerate().rev() {
        let left = after.entry(&p.answer.creator_id).or_default();
        earnings[i] = *left;
        *left -= p.answer.net;
    }
    let mut entries = Vec::with_capacity(2 * paid.len());
    for ((p, push), earnings) in paid.iter().zip(&pushes).zip(&earnings) {
        let creator = &p.answer.creator_id;
        entries.push(Entry::new(creator, NOTIFICATION, json!(push)));
        entries.push(Entry::new(
            creator,
            EARNINGS_EVENT,
            json!({ "currency": p.answer.currency, "earnings": earnings, "tipId": p.answer.id }),
        ));
    }
    let mut recorded = recovery::record(tx, &tenant.id, entries).await?.into_iter();
    Ok(paid
        .iter()
        .zip(chats)
        .map(|(p, chat)| Sent {
            tip: p.answer.clone(),
            replayed: false,
            recorded: recorded.by_ref().take(2).collect(),
            chat,
        })
        .collect())
}
