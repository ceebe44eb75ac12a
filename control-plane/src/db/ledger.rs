//! The ledger's tables: accounts with their kept balances, immutable transactions and their
//! entries, and the idempotency keys of the requests that moved value. [`post`] and, for tips
//! written together, `post_payments` are the only writers of transactions and entries, and
//! they write only balanced [`Posting`]s; there is no UPDATE or DELETE of a transaction or an
//! entry anywhere (corrections are new transactions). An account's kept balance is its
//! `ledger_accounts` row plus its rows in `ledger_account_credits` (a credit lands on one of 16
//! at random, so payments to one account do not queue on one row lock); a debit folds the
//! credit rows into the balance row before its conditional UPDATE, and `check` recomputes
//! every balance from the entries (`GET /v1/ledger/check`).
//!
//! Why a wallet never goes below zero, under any concurrency: every debit of a floored account
//! (a wallet or earnings) is one conditional statement, `UPDATE ledger_accounts SET balance =
//! balance + $amount WHERE … AND balance + $amount >= 0`, inside the posting's transaction; no
//! balance is read by the application and written back. On PostgreSQL the UPDATE takes the
//! row's lock and, when another transaction changed the row first, waits for it and evaluates
//! the condition again on the committed balance (READ COMMITTED re-check), so two spends can
//! never both pass on the same money. On SQLite every write transaction holds the database's
//! write lock from its start (`BEGIN IMMEDIATE`, see [`super::Db::begin`]), so postings run one
//! after the other. When the condition fails nothing is changed and the caller rolls back the
//! whole transaction. Accounts are updated in the order of their keys, so two postings never
//! wait on each other's rows in a cycle (no deadlock).

use super::{Conn, now_millis, paginate};
use crate::ledger::{Account, Original, Posting};
use onda_shared::api::{
    BalanceMismatch, LedgerCheck, LedgerEntry, LedgerSource, LedgerTransaction, Page, Tenant,
};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// Why a posting was not written.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The account (a wallet or earnings) does not hold what the posting takes from it.
    #[error("{account} holds less than the {needed} this takes from it")]
    Insufficient { account: String, needed: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Writes `p` as a new transaction of `tenant` in its currency, updating the kept balance of
/// each account in the same transaction. On [`PostError::Insufficient`] some balances may have
/// been changed already: the caller must roll back (drop the transaction), which every caller
/// does by returning the error.
pub async fn post(
    conn: &mut Conn,
    tenant: &Tenant,
    p: &Posting,
) -> Result<LedgerTransaction, PostError> {
    let created_ms = now_millis();
    let id = crate::secrets::new_time_id("txn", created_ms);
    // Every transaction takes its accounts' rows in one order (by key), so two transactions
    // never wait for each other's rows in a cycle.
    let mut moves: Vec<&(Account, i64)> = p.entries().iter().collect();
    moves.sort_by_key(|(account, _)| account.key());
    for (account, amount) in moves {
        if *amount >= 0 {
            credit(conn, &tenant.id, &account.key(), *amount).await?;
        } else {
            debit(conn, &tenant.id, account, *amount).await?;
        }
    }
    sqlx::query(
        "INSERT INTO ledger_transactions (id, tenant_id, source, user_id, counterparty_id, \
         amount, currency, reference, reason, refund_of, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&tenant.id)
    .bind(p.source.as_str())
    .bind(&p.user_id)
    .bind(&p.counterparty_id)
    .bind(p.amount)
    .bind(&tenant.currency)
    .bind(&p.reference)
    .bind(&p.reason)
    .bind(&p.refund_of)
    .bind(created_ms)
    .execute(&mut *conn)
    .await?;
    if p.source.is_payment() {
        // The tenant's plan prices its users' payments; counted with the payment, once.
        super::realtime_usage::add_transaction(conn, &tenant.id, created_ms).await?;
    }
    for (account, amount) in p.entries() {
        sqlx::query(
            "INSERT INTO ledger_entries (transaction_id, tenant_id, account, amount) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(&tenant.id)
        .bind(account.key())
        .bind(amount)
        .execute(&mut *conn)
        .await?;
    }
    Ok(as_written(
        tenant,
        &Batched {
            posting: p,
            id: &id,
            created_ms,
        },
    ))
}

const COLUMNS: &str = "id, source, user_id, counterparty_id, amount, currency, reference, \
                       reason, refund_of, created_ms";

fn from_row(row: &AnyRow) -> Result<LedgerTransaction, sqlx::Error> {
    Ok(LedgerTransaction {
        id: row.try_get("id")?,
        source: super::parsed(row, "source")?,
        user_id: row.try_get("user_id")?,
        counterparty_id: row.try_get("counterparty_id")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        reference: row.try_get("reference")?,
        reason: row.try_get("reason")?,
        refund_of: row.try_get("refund_of")?,
        entries: Vec::new(),
        created_at: super::messages::rfc3339_ms(row.try_get("created_ms")?),
    })
}

/// Fills in the entries of `txs` (one query for the page).
async fn with_entries(
    conn: &mut Conn,
    mut txs: Vec<LedgerTransaction>,
) -> Result<Vec<LedgerTransaction>, sqlx::Error> {
    if txs.is_empty() {
        return Ok(txs);
    }
    let params: Vec<String> = (1..=txs.len()).map(|i| format!("${i}")).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT transaction_id, account, amount FROM ledger_entries \
         WHERE transaction_id IN ({}) ORDER BY transaction_id, account",
        params.join(", ")
    ));
    let mut q = sqlx::query(sql);
    for t in &txs {
        q = q.bind(t.id.clone());
    }
    let mut by_tx: BTreeMap<String, Vec<LedgerEntry>> = BTreeMap::new();
    for row in q.fetch_all(conn).await? {
        by_tx
            .entry(row.try_get("transaction_id")?)
            .or_default()
            .push(LedgerEntry {
                account: row.try_get("account")?,
                amount: row.try_get("amount")?,
            });
    }
    for t in &mut txs {
        t.entries = by_tx.remove(&t.id).unwrap_or_default();
    }
    Ok(txs)
}

/// One transaction of the tenant, with its entries.
pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<LedgerTransaction>, sqlx::Error> {
    let Some(t) = transaction_row(conn, tenant_id, id, "").await? else {
        return Ok(None);
    };
    Ok(with_entries(conn, vec![t]).await?.pop())
}

/// The tenant's transaction `id` without its entries; `suffix` ends the query (a lock clause).
async fn transaction_row(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    suffix: &str,
) -> Result<Option<LedgerTransaction>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger_transactions WHERE tenant_id = $1 AND id = $2{suffix}"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The transaction a refund reverses, with what has been refunded of it already. On PostgreSQL
/// its row is locked (`FOR UPDATE`) for the rest of the transaction, so two refunds of it run one
/// after the other and cannot both take what remains; SQLite's write lock does the same.
pub async fn refundable(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<(Original, i64)>, sqlx::Error> {
    let lock = if conn.backend_name() == "PostgreSQL" {
        " FOR UPDATE"
    } else {
        ""
    };
    let Some(t) = transaction_row(conn, tenant_id, id, lock).await? else {
        return Ok(None);
    };
    let fee: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS fee FROM ledger_entries \
         WHERE transaction_id = $1 AND account = 'platform'",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?
    .try_get("fee")?;
    let refunded: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS refunded FROM ledger_transactions \
         WHERE tenant_id = $1 AND refund_of = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_one(&mut *conn)
    .await?
    .try_get("refunded")?;
    Ok(Some((
        Original {
            id: t.id,
            source: t.source,
            user_id: t.user_id,
            counterparty_id: t.counterparty_id,
            amount: t.amount,
            fee,
        },
        refunded,
    )))
}

/// Credit rows per account (see migration 0035).
const CREDIT_SHARDS: u8 = 16;

/// Adds `amount` to one of the account's credit rows, at random: payments to one account at
/// once lock different rows.
async fn credit(
    conn: &mut Conn,
    tenant_id: &str,
    account: &str,
    amount: i64,
) -> Result<(), sqlx::Error> {
    if amount == 0 {
        return Ok(());
    }
    let shard = i64::from(rand::random::<u8>() % CREDIT_SHARDS);
    sqlx::query(
        "INSERT INTO ledger_account_credits (tenant_id, account, shard, amount) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, account, shard) \
         DO UPDATE SET amount = ledger_account_credits.amount + excluded.amount",
    )
    .bind(tenant_id)
    .bind(account)
    .bind(shard)
    .bind(amount)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes `-amount` from the account: its credit rows move into its balance row first (the rows
/// deleted are exactly the ones summed), then one conditional UPDATE keeps a floored account
/// at zero or above.
async fn debit(
    conn: &mut Conn,
    tenant_id: &str,
    account: &Account,
    amount: i64,
) -> Result<(), PostError> {
    let key = account.key();
    sqlx::query(
        "INSERT INTO ledger_accounts (tenant_id, account, balance) VALUES ($1, $2, 0) \
         ON CONFLICT (tenant_id, account) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&key)
    .execute(&mut *conn)
    .await?;
    let moved: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM ledger_account_credits WHERE tenant_id = $1 AND account = $2 \
         RETURNING amount",
    )
    .bind(tenant_id)
    .bind(&key)
    .fetch_all(&mut *conn)
    .await?;
    let change = moved.iter().sum::<i64>() + amount;
    let floor = if account.floored() {
        " AND balance + $1 >= 0"
    } else {
        ""
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE ledger_accounts SET balance = balance + $1 \
         WHERE tenant_id = $2 AND account = $3{floor}"
    ));
    let done = sqlx::query(sql)
        .bind(change)
        .bind(tenant_id)
        .bind(&key)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        // The caller's transaction rolls back: the credit rows deleted above come back.
        return Err(PostError::Insufficient {
            account: key,
            needed: -amount,
        });
    }
    Ok(())
}

/// The kept balance of an account: its balance row and its credit rows (0 for one never used).
pub async fn balance(
    conn: &mut Conn,
    tenant_id: &str,
    account: &Account,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(b), 0) AS BIGINT) FROM (\
         SELECT balance AS b FROM ledger_accounts WHERE tenant_id = $1 AND account = $2 \
         UNION ALL \
         SELECT amount AS b FROM ledger_account_credits WHERE tenant_id = $1 AND account = $2\
         ) AS kept",
    )
    .bind(tenant_id)
    .bind(account.key())
    .fetch_one(conn)
    .await
}

/// A payment to write with others by [`post_payments`]: its posting, and the id and time chosen
/// for its transaction (the caller tells them before the write, in the answer it stores).
#[derive(Debug, Clone, Copy)]
pub struct Batched<'a> {
    pub posting: &'a Posting,
    pub id: &'a str,
    pub created_ms: i64,
}

/// Writes fans' payments (`LedgerSource::is_payment`: a wallet pays earnings and the platform)
/// many at once, in the caller's transaction and a few statements whatever their count: each is
/// written, or refused because its wallet does not hold what it takes (None in its place;
/// nothing of it stays). The rules are [`post`]'s, in bulk:
///
/// - Locks in key order, as [`post`] takes them: first the credits of every earnings and the
///   platform account (one upsert, each account's sum on one of its credit rows, at random),
///   then the wallets' balance rows (`FOR UPDATE` on PostgreSQL, in key order, made first when
///   missing; SQLite's write lock already holds everything).
/// - With the wallets locked, their kept balances (balance row plus credit rows) can only grow
///   until the commit (a credit row is folded only under its balance row's lock), so
///   [`ledger::affordable`] decides on them which payments pass, in order. A refused one's
///   credits are taken back from the rows they went to (already locked by this transaction).
/// - Each wallet's total is then taken by one conditional statement, as in [`debit`]
///   (`balance + change >= 0`, the credit rows folded in): a floor that fails there fails the
///   whole batch, which the caller then writes payment by payment.
/// - The transactions and their entries are one statement each.
///
/// Unlike [`post`], it does not meter the payments: the caller counts them
/// (`realtime_usage::add_transactions`) in the same transaction, last, after the feeds, the
/// order the message writer takes those locks in.
pub async fn post_payments(
    conn: &mut Conn,
    tenant: &Tenant,
    batch: &[Batched<'_>],
) -> Result<Vec<Option<LedgerTransaction>>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(b) = batch.iter().find(|b| !b.posting.source.is_payment()) {
        return Err(sqlx::Error::Protocol(format!(
            "post_payments writes payments only, not {}",
            b.posting.source
        )));
    }
    let credits = sums(batch.iter().map(|b| b.posting), |v| v > 0);
    let shards = credit_all(conn, &tenant.id, &credits, None).await?;
    let wallets = sums(batch.iter().map(|b| b.posting), |v| v < 0);
    let accounts: Vec<&str> = wallets.keys().map(String::as_str).collect();
    let held = lock_kept(conn, &tenant.id, &accounts).await?;
    let postings: Vec<&Posting> = batch.iter().map(|b| b.posting).collect();
    let pass = crate::ledger::affordable(&held, &postings);
    if pass.contains(&false) {
        let refused = postings
            .iter()
            .zip(&pass)
            .filter(|(_, ok)| !**ok)
            .map(|(p, _)| *p);
        let back: BTreeMap<String, i64> = sums(refused, |v| v > 0)
            .into_iter()
            .map(|(account, v)| (account, -v))
            .collect();
        credit_all(conn, &tenant.id, &back, Some(&shards)).await?;
    }
    let taken = sums(
        postings
            .iter()
            .zip(&pass)
            .filter(|(_, ok)| **ok)
            .map(|(p, _)| *p),
        |v| v < 0,
    );
    debit_all(conn, &tenant.id, &taken).await?;
    let written: Vec<&Batched<'_>> = batch
        .iter()
        .zip(&pass)
        .filter(|(_, ok)| **ok)
        .map(|(b, _)| b)
        .collect();
    insert_transactions(conn, tenant, &written).await?;
    Ok(batch
        .iter()
        .zip(pass)
        .map(|(b, ok)| ok.then(|| as_written(tenant, b)))
        .collect())
}

/// The sum of each account's entries that `keep` (by sign), over `postings`.
fn sums<'a>(
    postings: impl Iterator<Item = &'a Posting>,
    keep: impl Fn(i64) -> bool,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in postings {
        for (account, v) in p.entries() {
            if keep(*v) {
                *out.entry(account.key()).or_insert(0) += v;
            }
        }
    }
    out
}

/// Adds each amount to one credit row of its account (`shards` names the rows, else one at
/// random each) in one statement; answers the rows used.
async fn credit_all(
    conn: &mut Conn,
    tenant_id: &str,
    amounts: &BTreeMap<String, i64>,
    shards: Option<&BTreeMap<String, i64>>,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let amounts: Vec<(&String, i64)> = amounts
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(a, v)| (a, *v))
        .collect();
    let mut used = BTreeMap::new();
    if amounts.is_empty() {
        return Ok(used);
    }
    let rows: Vec<String> = (0..amounts.len())
        .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger_account_credits (tenant_id, account, shard, amount) VALUES {} \
         ON CONFLICT (tenant_id, account, shard) \
         DO UPDATE SET amount = ledger_account_credits.amount + excluded.amount",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for (account, v) in amounts {
        let shard = shards
            .and_then(|s| s.get(account).copied())
            .unwrap_or_else(|| i64::from(rand::random::<u8>() % CREDIT_SHARDS));
        used.insert(account.clone(), shard);
        q = q.bind(account.as_str()).bind(shard).bind(v);
    }
    q.execute(conn).await?;
    Ok(used)
}

/// The kept balances of `list` (balance row plus credit rows), their balance rows locked until
/// the caller's transaction ends (on PostgreSQL; rows that are missing, a wallet never debited,
/// are made and then locked, so there is a row to lock).
async fn lock_kept(
    conn: &mut Conn,
    tenant_id: &str,
    list: &[&str],
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    if list.is_empty() {
        return Ok(BTreeMap::new());
    }
    let postgres = conn.backend_name() == "PostgreSQL";
    let mut kept = balance_rows(conn, tenant_id, list, postgres).await?;
    if postgres && kept.len() < list.len() {
        let missing: Vec<&str> = list
            .iter()
            .copied()
            .filter(|a| !kept.contains_key(*a))
            .collect();
        let rows: Vec<String> = (0..missing.len())
            .map(|i| format!("($1, ${}, 0)", i + 2))
            .collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO ledger_accounts (tenant_id, account, balance) VALUES {} \
             ON CONFLICT (tenant_id, account) DO NOTHING",
            rows.join(", ")
        ));
        let mut q = sqlx::query(sql).bind(tenant_id);
        for a in &missing {
            q = q.bind(*a);
        }
        q.execute(&mut *conn).await?;
        kept = balance_rows(conn, tenant_id, list, postgres).await?;
    }
    // Read after the lock: what was credited before it is here.
    let params: Vec<String> = (2..list.len() + 2).map(|i| format!("${i}")).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT account, CAST(SUM(amount) AS BIGINT) AS credits FROM ledger_account_credits \
         WHERE tenant_id = $1 AND account IN ({}) GROUP BY account",
        params.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for a in list {
        q = q.bind(*a);
    }
    for r in q.fetch_all(&mut *conn).await? {
        *kept.entry(r.try_get::<String, _>("account")?).or_insert(0) +=
            r.try_get::<i64, _>("credits")?;
    }
    Ok(kept)
}

/// The balance rows of `list` that exist, locked in key order when `lock`.
async fn balance_rows(
    conn: &mut Conn,
    tenant_id: &str,
    list: &[&str],
    lock: bool,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let params: Vec<String> = (2..list.len() + 2).map(|i| format!("${i}")).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT account, balance FROM ledger_accounts WHERE tenant_id = $1 AND account IN ({}) \
         ORDER BY account{}",
        params.join(", "),
        if lock { " FOR UPDATE" } else { "" }
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for a in list {
        q = q.bind(*a);
    }
    let mut rows = BTreeMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        rows.insert(
            r.try_get::<String, _>("account")?,
            r.try_get::<i64, _>("balance")?,
        );
    }
    Ok(rows)
}

/// Takes each (negative) amount from its account, its credit rows folded in, under the floor of
/// [`debit`]: one statement on PostgreSQL, [`debit`] per account on SQLite. A floor that fails
/// is an error: the caller decided on locked balances, so the batch is not what it was decided
/// on and is written again payment by payment.
async fn debit_all(
    conn: &mut Conn,
    tenant_id: &str,
    amounts: &BTreeMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let amounts: Vec<(Account, i64)> = amounts
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(key, v)| {
            Account::parse(key)
                .map(|a| (a, *v))
                .ok_or_else(|| sqlx::Error::Protocol(format!("ledger: no such account {key:?}")))
        })
        .collect::<Result<_, _>>()?;
    if amounts.is_empty() {
        return Ok(());
    }
    let floor_failed = |account: &str| {
        sqlx::Error::Protocol(format!(
            "ledger: {account} held less than the batch was decided on; write it payment by payment"
        ))
    };
    if conn.backend_name() != "PostgreSQL" {
        for (account, v) in &amounts {
            debit(conn, tenant_id, account, *v)
                .await
                .map_err(|e| match e {
                    PostError::Insufficient { account, .. } => floor_failed(&account),
                    PostError::Database(e) => e,
                })?;
        }
        return Ok(());
    }
    let rows: Vec<String> = (0..amounts.len())
        .map(|i| {
            format!(
                "(${}, CAST(${} AS BIGINT), ${})",
                3 * i + 2,
                3 * i + 3,
                3 * i + 4
            )
        })
        .collect();
    // The credit rows deleted are exactly the ones summed into the balance (RETURNING).
    let sql = sqlx::AssertSqlSafe(format!(
        "WITH d (account, amount, floored) AS (VALUES {}), \
         moved AS (DELETE FROM ledger_account_credits c USING d \
         WHERE c.tenant_id = $1 AND c.account = d.account RETURNING c.account, c.amount), \
         change AS (SELECT d.account, d.floored, d.amount + CAST(COALESCE((SELECT SUM(m.amount) \
         FROM moved m WHERE m.account = d.account), 0) AS BIGINT) AS amount FROM d) \
         UPDATE ledger_accounts a SET balance = a.balance + change.amount FROM change \
         WHERE a.tenant_id = $1 AND a.account = change.account \
         AND (change.floored = 0 OR a.balance + change.amount >= 0) RETURNING a.account",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for (account, v) in &amounts {
        q = q
            .bind(account.key())
            .bind(*v)
            .bind(i64::from(account.floored()));
    }
    let done: Vec<String> = q
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get("account"))
        .collect::<Result<_, _>>()?;
    if let Some((account, _)) = amounts.iter().find(|(a, _)| !done.contains(&a.key())) {
        return Err(floor_failed(&account.key()));
    }
    Ok(())
}

/// The rows of `written`'s transactions and entries: one statement each.
async fn insert_transactions(
    conn: &mut Conn,
    tenant: &Tenant,
    written: &[&Batched<'_>],
) -> Result<(), sqlx::Error> {
    if written.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..written.len())
        .map(|i| {
            let ps: Vec<String> = (0..9).map(|k| format!("${}", 9 * i + k + 3)).collect();
            format!(
                "({}, $1, {}, $2, {})",
                ps[0],
                ps[1..5].join(", "),
                ps[5..].join(", ")
            )
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger_transactions (id, tenant_id, source, user_id, counterparty_id, \
         amount, currency, reference, reason, refund_of, created_ms) VALUES {}",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(&tenant.id).bind(&tenant.currency);
    for b in written {
        let p = b.posting;
        q = q
            .bind(b.id)
            .bind(p.source.as_str())
            .bind(&p.user_id)
            .bind(&p.counterparty_id)
            .bind(p.amount)
            .bind(&p.reference)
            .bind(&p.reason)
            .bind(&p.refund_of)
            .bind(b.created_ms);
    }
    q.execute(&mut *conn).await?;
    let entries: Vec<(&str, String, i64)> = written
        .iter()
        .flat_map(|b| b.posting.entries().iter().map(|(a, v)| (b.id, a.key(), *v)))
        .collect();
    let rows: Vec<String> = (0..entries.len())
        .map(|i| format!("(${}, $1, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger_entries (transaction_id, tenant_id, account, amount) VALUES {}",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(&tenant.id);
    for (id, account, v) in entries {
        q = q.bind(id).bind(account).bind(v);
    }
    q.execute(conn).await?;
    Ok(())
}

/// The transaction `b` of `tenant` as written (by [`post`] or [`post_payments`]).
fn as_written(tenant: &Tenant, b: &Batched<'_>) -> LedgerTransaction {
    let p = b.posting;
    LedgerTransaction {
        id: b.id.to_string(),
        source: p.source,
        user_id: p.user_id.clone(),
        counterparty_id: p.counterparty_id.clone(),
        amount: p.amount,
        currency: tenant.currency.clone(),
        reference: p.reference.clone(),
        reason: p.reason.clone(),
        refund_of: p.refund_of.clone(),
        entries: p
            .entries()
            .iter()
            .map(|(a, v)| LedgerEntry {
                account: a.key(),
                amount: *v,
            })
            .collect(),
        created_at: super::messages::rfc3339_ms(b.created_ms),
    }
}

/// Whether the tenant's ledger has any transaction (its currency is then fixed).
pub async fn has_transactions(conn: &mut Conn, tenant_id: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT id FROM ledger_transactions WHERE tenant_id = $1 LIMIT 1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Which transactions a list selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// As the paying/credited user or as the creator paid.
    pub user_id: Option<String>,
    pub source: Option<LedgerSource>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
}

/// A page of the tenant's transactions, newest first, after `cursor` (an id; "" for the first).
pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    filter: &Filter,
    limit: u32,
    cursor: &str,
) -> Result<Page<LedgerTransaction>, sqlx::Error> {
    let mut clauses = vec!["tenant_id = $1".to_string()];
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if filter.user_id.is_some() {
        let p = next();
        clauses.push(format!("(user_id = {p} OR counterparty_id = {p})"));
    }
    if filter.source.is_some() {
        clauses.push(format!("source = {}", next()));
    }
    if filter.since_ms.is_some() {
        clauses.push(format!("created_ms >= {}", next()));
    }
    if filter.until_ms.is_some() {
        clauses.push(format!("created_ms < {}", next()));
    }
    if !cursor.is_empty() {
        clauses.push(format!("id < {}", next()));
    }
    let limit_param = next();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger_transactions WHERE {} ORDER BY id DESC LIMIT {limit_param}",
        clauses.join(" AND ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id.to_string());
    if let Some(u) = &filter.user_id {
        q = q.bind(u.clone());
    }
    if let Some(s) = filter.source {
        q = q.bind(s.as_str());
    }
    if let Some(ms) = filter.since_ms {
        q = q.bind(ms);
    }
    if let Some(ms) = filter.until_ms {
        q = q.bind(ms);
    }
    if !cursor.is_empty() {
        q = q.bind(cursor.to_string());
    }
    let rows = q.bind(i64::from(limit) + 1).fetch_all(&mut *conn).await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let page = paginate(items, limit, |t| &t.id);
    Ok(Page {
        items: with_entries(conn, page.items).await?,
        next_cursor: page.next_cursor,
    })
}

/// Recomputes the tenant's balances from its entries and compares them with the kept ones;
/// checks that every transaction sums to zero and no floored account is negative.
pub async fn check(conn: &mut Conn, tenant_id: &str) -> Result<LedgerCheck, sqlx::Error> {
    let entries = sqlx::query(
        "SELECT account, CAST(SUM(amount) AS BIGINT) AS total FROM ledger_entries \
         WHERE tenant_id = $1 GROUP BY account",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut derived = BTreeMap::new();
    for r in &entries {
        derived.insert(
            r.try_get::<String, _>("account")?,
            r.try_get::<i64, _>("total")?,
        );
    }
    let kept = sqlx::query(
        "SELECT account, CAST(SUM(b) AS BIGINT) AS balance FROM (\
         SELECT account, balance AS b FROM ledger_accounts WHERE tenant_id = $1 \
         UNION ALL \
         SELECT account, amount AS b FROM ledger_account_credits WHERE tenant_id = $1\
         ) AS kept GROUP BY account",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = LedgerCheck {
        ok: false,
        transactions: 0,
        balance_mismatches: Vec::new(),
        unbalanced_transactions: Vec::new(),
        negative_accounts: Vec::new(),
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in &kept {
        let account: String = r.try_get("account")?;
        let balance: i64 = r.try_get("balance")?;
        let d = derived.get(&account).copied().unwrap_or(0);
        if d != balance {
            out.balance_mismatches.push(BalanceMismatch {
                account: account.clone(),
                kept: balance,
                derived: d,
            });
        }
        if balance < 0 && Account::parse(&account).is_some_and(|a| a.floored()) {
            out.negative_accounts.push(account.clone());
        }
        seen.insert(account);
    }
    for (account, d) in derived {
        if !seen.contains(&account) {
            out.balance_mismatches.push(BalanceMismatch {
                account,
                kept: 0,
                derived: d,
            });
        }
    }
    let unbalanced = sqlx::query(
        "SELECT transaction_id FROM ledger_entries WHERE tenant_id = $1 \
         GROUP BY transaction_id HAVING SUM(amount) <> 0",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    for r in &unbalanced {
        out.unbalanced_transactions
            .push(r.try_get("transaction_id")?);
    }
    let count: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM ledger_transactions WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
    out.transactions = u64::try_from(count).unwrap_or(0);
    out.ok = out.balance_mismatches.is_empty()
        && out.unbalanced_transactions.is_empty()
        && out.negative_accounts.is_empty();
    Ok(out)
}

/// The payments to `creator` made in `[start_ms, end_ms)` and the refunds of such payments made
/// then, each with what its entries gave the creator's earnings and the platform.
pub async fn earnings_rows(
    conn: &mut Conn,
    tenant_id: &str,
    creator: &str,
    (start_ms, end_ms): (i64, i64),
) -> Result<Vec<crate::ledger::earnings::Row>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT t.created_ms AS created_ms, t.source AS source, o.source AS original_source, \
         CAST(COALESCE(SUM(CASE WHEN e.account = $3 THEN e.amount ELSE 0 END), 0) AS BIGINT) \
         AS net, \
         CAST(COALESCE(SUM(CASE WHEN e.account = 'platform' THEN e.amount ELSE 0 END), 0) \
         AS BIGINT) AS fee \
         FROM ledger_transactions t \
         LEFT JOIN ledger_transactions o ON o.id = t.refund_of \
         JOIN ledger_entries e ON e.transaction_id = t.id \
         WHERE t.tenant_id = $1 AND t.counterparty_id = $2 \
         AND t.created_ms >= $4 AND t.created_ms < $5 \
         AND t.source IN ('tip', 'purchase', 'subscription', 'call', 'refund') \
         GROUP BY t.id, t.created_ms, t.source, o.source ORDER BY t.id",
    )
    .bind(tenant_id)
    .bind(creator)
    .bind(Account::Earnings(creator.to_string()).key())
    .bind(start_ms)
    .bind(end_ms)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let source: LedgerSource = super::parsed(r, "source")?;
        let source = if source == LedgerSource::Refund {
            match super::parsed_opt::<LedgerSource>(r, "original_source")? {
                Some(s) if s.is_payment() => s,
                _ => continue,
            }
        } else {
            source
        };
        out.push(crate::ledger::earnings::Row {
            created_ms: r.try_get("created_ms")?,
            source,
            net: r.try_get("net")?,
            fee: r.try_get("fee")?,
        });
    }
    Ok(out)
}

/// The answer stored with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub route: String,
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

pub async fn idempotent_answer(
    conn: &mut Conn,
    tenant_id: &str,
    key: &str,
) -> Result<Option<StoredAnswer>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT route, request_hash, status, response FROM idempotency_keys \
         WHERE tenant_id = $1 AND idem_key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.map(|r| stored_answer(&r)).transpose()
}

/// The stored answer in a row of `idempotency_keys` (`route`, `request_hash`, `status`,
/// `response`).
pub(super) fn stored_answer(r: &AnyRow) -> Result<StoredAnswer, sqlx::Error> {
    Ok(StoredAnswer {
        route: r.try_get("route")?,
        request_hash: r.try_get("request_hash")?,
        status: u16::try_from(r.try_get::<i64, _>("status")?).map_err(|e| {
            sqlx::Error::ColumnDecode {
                index: "status".to_string(),
                source: Box::new(e),
            }
        })?,
        body: r.try_get("response")?,
    })
}

/// Stores the answer of a key's first use; a unique violation means a concurrent request with
/// the same key committed first (the caller answers what that one stored).
pub async fn store_answer(
    conn: &mut Conn,
    tenant_id: &str,
    key: &str,
    answer: &StoredAnswer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, idem_key, route, request_hash, status, \
         response, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(&answer.route)
    .bind(&answer.request_hash)
    .bind(i64::from(answer.status))
    .bind(&answer.body)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Fills in the answer of a key stored by [`store_answer`] earlier in the same transaction.
pub async fn complete_answer(
    conn: &mut Conn,
    tenant_id: &str,
    key: &str,
    answer: &StoredAnswer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $1, response = $2 \
         WHERE tenant_id = $3 AND idem_key = $4",
    )
    .bind(i64::from(answer.status))
    .bind(&answer.body)
    .bind(tenant_id)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}
