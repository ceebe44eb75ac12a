//! The tips' own queries, for tips written many at once (`crate::tips`): what a batch needs to
//! know before it writes (the plan's monetization, stored answers, creators, blocks, the payers'
//! names) in one statement,
//! its idempotency keys claimed in one, and the tips' messages stored in one.

use super::Conn;
use super::ledger::StoredAnswer;
use sqlx::Row as _;
use std::collections::HashSet;

/// A tip to look up: its idempotency key, the creator it names and its payer.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub key: &'a str,
    pub creator_id: &'a str,
    pub payer_id: &'a str,
}

/// What the database says of one [`Ask`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The answer stored under the key (a tip done before, or another request's).
    pub stored: Option<StoredAnswer>,
    /// The creator named: (whether they are a creator, their minimum tip); None when there is
    /// no such user.
    pub creator: Option<(bool, i64)>,
    /// The payer's display name, when the payer has a profile.
    pub payer_name: Option<String>,
    /// The payer blocked the creator.
    pub payer_blocks: bool,
    /// The creator blocked the payer.
    pub creator_blocks: bool,
}

/// Whether the plan `plan_id` includes monetization, and the facts of each of `asks`, in their
/// order: one statement whatever the count.
pub async fn facts(
    conn: &mut Conn,
    (tenant_id, plan_id): (&str, &str),
    asks: &[Ask<'_>],
) -> Result<(bool, Vec<Facts>), sqlx::Error> {
    if asks.is_empty() {
        return Ok((false, Vec::new()));
    }
    let rows: Vec<String> = (0..asks.len())
        .map(|i| {
            let p = 4 * i + 3;
            format!("(${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "WITH v (i, idem_key, creator_id, payer_id) AS (VALUES {}) \
         SELECT v.i AS i, k.route AS route, k.request_hash AS request_hash, k.status AS status, \
         k.response AS response, c.id AS creator_found, c.creator AS creator, \
         c.tip_minimum AS tip_minimum, p.display_name AS payer_name, \
         (SELECT COUNT(*) FROM user_blocks b WHERE b.tenant_id = $1 \
          AND b.blocker_id = v.payer_id AND b.blocked_id = v.creator_id) AS payer_blocks, \
         (SELECT COUNT(*) FROM user_blocks b WHERE b.tenant_id = $1 \
          AND b.blocker_id = v.creator_id AND b.blocked_id = v.payer_id) AS creator_blocks, \
         (SELECT COUNT(*) FROM plans WHERE id = $2 AND feature_monetization <> 0) AS monetized \
         FROM v \
         LEFT JOIN idempotency_keys k ON k.tenant_id = $1 AND k.idem_key = v.idem_key \
         LEFT JOIN end_users c ON c.tenant_id = $1 AND c.id = v.creator_id \
         LEFT JOIN end_users p ON p.tenant_id = $1 AND p.id = v.payer_id",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id).bind(plan_id);
    for (i, a) in asks.iter().enumerate() {
        q = q
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(a.key)
            .bind(a.creator_id)
            .bind(a.payer_id);
    }
    let mut out = vec![Facts::default(); asks.len()];
    let mut monetized = false;
    for r in q.fetch_all(conn).await? {
        monetized = r.try_get::<i64, _>("monetized")? > 0;
        let i: i64 = r.try_get("i")?;
        let slot = usize::try_from(i)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or(sqlx::Error::RowNotFound)?;
        // The key's row is joined: no route, no stored answer.
        if r.try_get::<Option<String>, _>("route")?.is_some() {
            slot.stored = Some(super::ledger::stored_answer(&r)?);
        }
        if r.try_get::<Option<String>, _>("creator_found")?.is_some() {
            slot.creator = Some((
                r.try_get::<i64, _>("creator")? != 0,
                r.try_get("tip_minimum")?,
            ));
        }
        slot.payer_name = r.try_get("payer_name")?;
        slot.payer_blocks = r.try_get::<i64, _>("payer_blocks")? > 0;
        slot.creator_blocks = r.try_get::<i64, _>("creator_blocks")? > 0;
    }
    Ok((monetized, out))
}

/// Stores each (key, answer) unless its key is taken, in one statement; answers the keys stored
/// here. A key taken by a request in flight is waited for (PostgreSQL) and then taken; the
/// caller reads what that request stored. Keys go in their order, so two batches never wait
/// on each other's keys in a cycle.
pub async fn claim(
    conn: &mut Conn,
    tenant_id: &str,
    answers: &[(&str, &StoredAnswer)],
    created_ms: i64,
) -> Result<HashSet<String>, sqlx::Error> {
    if answers.is_empty() {
        return Ok(HashSet::new());
    }
    let mut sorted: Vec<&(&str, &StoredAnswer)> = answers.iter().collect();
    sorted.sort_by_key(|(key, _)| *key);
    let rows: Vec<String> = (0..sorted.len())
        .map(|i| {
            let p = 5 * i + 3;
            format!(
                "($1, ${p}, ${}, ${}, ${}, ${}, $2)",
                p + 1,
                p + 2,
                p + 3,
                p + 4
            )
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO idempotency_keys (tenant_id, idem_key, route, request_hash, status, \
         response, created_ms) VALUES {} ON CONFLICT (tenant_id, idem_key) DO NOTHING \
         RETURNING idem_key",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id).bind(created_ms);
    for (key, a) in sorted {
        q = q
            .bind(*key)
            .bind(&a.route)
            .bind(&a.request_hash)
            .bind(i64::from(a.status))
            .bind(&a.body);
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|r| r.try_get("idem_key"))
        .collect()
}

/// Removes keys this transaction claimed for tips it then refused: a refused tip stores nothing.
pub async fn release(conn: &mut Conn, tenant_id: &str, keys: &[&str]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let params: Vec<String> = (2..keys.len() + 2).map(|i| format!("${i}")).collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idem_key IN ({})",
        params.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for k in keys {
        q = q.bind(*k);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Keeps each tip's message beside its transaction: (transaction id, message), one statement.
pub async fn insert_messages(
    conn: &mut Conn,
    tenant_id: &str,
    tips: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    if tips.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..tips.len())
        .map(|i| format!("(${}, $1, ${})", 2 * i + 2, 2 * i + 3))
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger_tips (transaction_id, tenant_id, message) VALUES {}",
        rows.join(", ")
    ));
    let mut q = sqlx::query(sql).bind(tenant_id);
    for (id, message) in tips {
        q = q.bind(*id).bind(*message);
    }
    q.execute(conn).await?;
    Ok(())
}
