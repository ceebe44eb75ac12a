//! Calls' records and who is in a call now (migration 0038). Every change of a call is one
//! conditional UPDATE guarded by what the caller read (its state, its units charged), so two
//! replicas acting on one call at once change it once: the other's UPDATE matches no row and
//! it rolls back.
//!
//! `call_parties` holds a row per party of every call that has not ended, keyed by the user, so
//! a second call of either party fails its INSERT on every replica and is recorded as busy.

use super::{Conn, paginate};
use crate::calls::{Party, Record};
use onda_shared::api::{Call, CallBilling, CallEndReason, CallState, Page};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, tenant_id, caller_id, callee_id, state, reason, price_per_minute, \
    unit_secs, currency, created_ms, accepted_ms, ended_ms, units_charged, amount_charged, \
    next_charge_ms, warn_at_ms, warned_ms, caller_gone_ms, callee_gone_ms, setup_ms";

fn from_row(row: &AnyRow) -> Result<Record, sqlx::Error> {
    let unit_secs: i64 = row.try_get("unit_secs")?;
    let billing = match unit_secs {
        60 => CallBilling::Minute,
        1 => CallBilling::Second,
        other => {
            return Err(sqlx::Error::ColumnDecode {
                index: "unit_secs".to_string(),
                source: format!("a call is billed by 60 or 1 seconds, not {other}").into(),
            });
        }
    };
    Ok(Record {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        caller_id: row.try_get("caller_id")?,
        callee_id: row.try_get("callee_id")?,
        state: super::parsed(row, "state")?,
        reason: super::parsed_opt(row, "reason")?,
        price_per_minute: row.try_get("price_per_minute")?,
        billing,
        currency: row.try_get("currency")?,
        created_ms: row.try_get("created_ms")?,
        accepted_ms: row.try_get("accepted_ms")?,
        ended_ms: row.try_get("ended_ms")?,
        units_charged: row.try_get("units_charged")?,
        amount_charged: row.try_get("amount_charged")?,
        next_charge_ms: row.try_get("next_charge_ms")?,
        warn_at_ms: row.try_get("warn_at_ms")?,
        warned_ms: row.try_get("warned_ms")?,
        caller_gone_ms: row.try_get("caller_gone_ms")?,
        callee_gone_ms: row.try_get("callee_gone_ms")?,
        setup_ms: row.try_get("setup_ms")?,
    })
}

/// The call as the API shows it.
pub fn wire(r: &Record) -> Call {
    let duration_ms = match (r.accepted_ms, r.ended_ms) {
        (Some(a), Some(e)) => (e - a).max(0),
        _ => 0,
    };
    Call {
        id: r.id.clone(),
        caller_id: r.caller_id.clone(),
        callee_id: r.callee_id.clone(),
        state: r.state,
        reason: r.reason,
        price_per_minute: r.price_per_minute,
        billing: r.billing,
        currency: r.currency.clone(),
        created_at: super::messages::rfc3339_ms(r.created_ms),
        started_at: r.accepted_ms.map(super::messages::rfc3339_ms),
        ended_at: r.ended_ms.map(super::messages::rfc3339_ms),
        duration_secs: i64::try_from(crate::calls::ceil_div(i128::from(duration_ms), 1000))
            .unwrap_or(i64::MAX),
        units_charged: r.units_charged,
        amount: r.amount_charged,
        setup_ms: r.setup_ms,
    }
}

/// A call about to be made.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub caller_id: &'a str,
    pub callee_id: &'a str,
    pub price_per_minute: i64,
    pub billing: CallBilling,
    pub currency: &'a str,
    pub now_ms: i64,
}

/// Records a new call: `calling`, with both parties in `call_parties`; or, when either party is
/// in a call already, ended as busy (and nobody's row). Run it in a transaction: on a race with
/// another call of a party, the second INSERT fails and the caller rolls back and tries again.
pub async fn open(conn: &mut Conn, new: &NewCall<'_>) -> Result<Record, sqlx::Error> {
    let busy: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM call_parties WHERE tenant_id = $1 AND user_id IN ($2, $3) LIMIT 1",
    )
    .bind(new.tenant_id)
    .bind(new.caller_id)
    .bind(new.callee_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (state, reason, ended) = match busy {
        Some(_) => (
            CallState::Ended,
            Some(CallEndReason::Busy.as_str()),
            Some(new.now_ms),
        ),
        None => (CallState::Calling, None, None),
    };
    sqlx::query(
        "INSERT INTO calls (id, tenant_id, caller_id, callee_id, state, reason, \
         price_per_minute, unit_secs, currency, created_ms, ended_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(new.id)
    .bind(new.tenant_id)
    .bind(new.caller_id)
    .bind(new.callee_id)
    .bind(state.as_str())
    .bind(reason)
    .bind(new.price_per_minute)
    .bind(new.billing.unit_secs())
    .bind(new.currency)
    .bind(new.now_ms)
    .bind(ended)
    .execute(&mut *conn)
    .await?;
    if state == CallState::Calling {
        for user in [new.caller_id, new.callee_id] {
            sqlx::query(
                "INSERT INTO call_parties (tenant_id, user_id, call_id) VALUES ($1, $2, $3)",
            )
            .bind(new.tenant_id)
            .bind(user)
            .bind(new.id)
            .execute(&mut *conn)
            .await?;
        }
    }
    get(conn, new.tenant_id, new.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// One call of the tenant.
pub async fn get(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Record>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calls WHERE tenant_id = $1 AND id = $2"
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

/// The call `user` is in now, if any.
pub async fn current(
    conn: &mut Conn,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<Record>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calls WHERE id = (SELECT call_id FROM call_parties \
         WHERE tenant_id = $1 AND user_id = $2) AND state <> 'ended'"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Moves a call from `from` to `to` (calling → ringing); false when it was not in `from`.
pub async fn advance(
    conn: &mut Conn,
    id: &str,
    from: CallState,
    to: CallState,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE calls SET state = $1 WHERE id = $2 AND state = $3")
        .bind(to.as_str())
        .bind(id)
        .bind(from.as_str())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The callee answered at `now_ms`: in progress, billing from now (the first unit is charged by
/// [`charge`] in the same transaction). False when it was no longer ringing.
pub async fn answer(conn: &mut Conn, id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE calls SET state = 'in_progress', accepted_ms = $1, next_charge_ms = $1 \
         WHERE id = $2 AND state IN ('calling', 'ringing')",
    )
    .bind(now_ms)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Units `[from, to)` were charged (`amount` in all) — only if `from` units were charged
/// before: false when another replica charged them first. `next_charge_ms` is the start of
/// unit `to`; `warn_at_ms`/`warned` as the balance after the charge says.
pub struct Charged {
    pub from: i64,
    pub to: i64,
    pub amount: i64,
    pub next_charge_ms: i64,
    pub warn_at_ms: i64,
    /// The warning goes (or went) now; None leaves `warned_ms` as it is, Some(None) clears it
    /// (the balance was topped up: warn again when it runs low again).
    pub warned_ms: Option<Option<i64>>,
}

pub async fn charge(conn: &mut Conn, id: &str, c: &Charged) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE calls SET units_charged = $1, amount_charged = amount_charged + $2, \
         next_charge_ms = $3, warn_at_ms = $4, \
         warned_ms = CASE WHEN $5 = 1 THEN $6 ELSE warned_ms END \
         WHERE id = $7 AND state = 'in_progress' AND units_charged = $8",
    )
    .bind(c.to)
    .bind(c.amount)
    .bind(c.next_charge_ms)
    .bind(c.warn_at_ms)
    .bind(i64::from(c.warned_ms.is_some()))
    .bind(c.warned_ms.flatten())
    .bind(id)
    .bind(c.from)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The warning went out at `now_ms` (or, with `warn_at_ms`, the balance was topped up and it
/// is due later); false when another replica did it first.
pub async fn warned(
    conn: &mut Conn,
    id: &str,
    now_ms: i64,
    later: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = match later {
        None => {
            sqlx::query(
                "UPDATE calls SET warned_ms = $1 WHERE id = $2 AND warned_ms IS NULL \
                 AND state = 'in_progress'",
            )
            .bind(now_ms)
            .bind(id)
            .execute(conn)
            .await?
        }
        Some(at) => {
            sqlx::query("UPDATE calls SET warn_at_ms = $1 WHERE id = $2 AND warned_ms IS NULL")
                .bind(at)
                .bind(id)
                .execute(conn)
                .await?
        }
    };
    Ok(done.rows_affected() > 0)
}

/// Ends an open call at `ended_ms` for `reason` and frees both parties; false when it had ended
/// already (another replica or party ended it first).
pub async fn end(
    conn: &mut Conn,
    id: &str,
    reason: CallEndReason,
    ended_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE calls SET state = 'ended', reason = $1, ended_ms = $2, next_charge_ms = NULL, \
         warn_at_ms = NULL WHERE id = $3 AND state <> 'ended'",
    )
    .bind(reason.as_str())
    .bind(ended_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM call_parties WHERE call_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Records that a party left the gateway at `since` (Some) or came back (None).
pub async fn set_gone(
    conn: &mut Conn,
    id: &str,
    party: Party,
    since: Option<i64>,
) -> Result<(), sqlx::Error> {
    let sql = match party {
        Party::Caller => "UPDATE calls SET caller_gone_ms = $1 WHERE id = $2",
        Party::Callee => "UPDATE calls SET callee_gone_ms = $1 WHERE id = $2",
    };
    sqlx::query(sql).bind(since).bind(id).execute(conn).await?;
    Ok(())
}

/// The first report of media flowing: `setup_ms` after the call was made. False when a report
/// came first.
pub async fn set_setup(conn: &mut Conn, id: &str, setup_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE calls SET setup_ms = $1 WHERE id = $2 AND setup_ms IS NULL")
        .bind(setup_ms)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every open call with whether each party is on a replica that heartbeat at or after
/// `alive_since_ms`: what the clock looks at, in one query.
pub async fn open_calls(
    conn: &mut Conn,
    alive_since_ms: i64,
) -> Result<Vec<crate::calls::Open>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, {} AS caller_here, {} AS callee_here FROM calls c \
         WHERE state <> 'ended' ORDER BY id",
        super::presence::live_presence_count("c.tenant_id", "c.caller_id", "$1"),
        super::presence::live_presence_count("c.tenant_id", "c.callee_id", "$1"),
    ));
    let rows = sqlx::query(sql)
        .bind(alive_since_ms)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(crate::calls::Open {
                call: from_row(row)?,
                caller_online: row.try_get::<i64, _>("caller_here")? > 0,
                callee_online: row.try_get::<i64, _>("callee_here")? > 0,
            })
        })
        .collect()
}

/// Calls in progress now, over the cluster.
pub async fn in_progress(conn: &mut Conn) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE state = 'in_progress'")
        .fetch_one(conn)
        .await
}

/// A page of the tenant's calls, newest first; only `user`'s (made or received) when given.
pub async fn list(
    conn: &mut Conn,
    tenant_id: &str,
    user: Option<&str>,
    limit: u32,
    cursor: &str,
) -> Result<Page<Call>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calls WHERE tenant_id = $1 AND ($2 = '' OR id < $2) \
         AND ($3 = '' OR caller_id = $3 OR callee_id = $3) ORDER BY id DESC LIMIT $4"
    ));
    let rows = sqlx::query(sql)
        .bind(tenant_id)
        .bind(cursor)
        .bind(user.unwrap_or_default())
        .bind(i64::from(limit) + 1)
        .fetch_all(conn)
        .await?;
    let items = rows
        .iter()
        .map(|r| from_row(r).map(|c| wire(&c)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(items, limit, |c| &c.id))
}

/// A deleted tenant's calls and parties go.
pub async fn delete_tenant(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM call_parties WHERE tenant_id = $1",
        "DELETE FROM calls WHERE tenant_id = $1",
    ] {
        sqlx::query(sql).bind(tenant_id).execute(&mut *conn).await?;
    }
    Ok(())
}
