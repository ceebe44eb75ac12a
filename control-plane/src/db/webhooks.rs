//! Webhook endpoints, the outbox of events and their deliveries (one row per event and
//! endpoint). A delivery is claimed with a conditional UPDATE that sets its lease, so of several
//! replicas only one sends a given attempt; a replica that dies mid-attempt loses the lease when
//! it expires and another retries.

use super::Conn;
use super::messages::rfc3339_ms;
use onda_shared::api::{DeliveryState, Page, Webhook, WebhookDelivery, WebhookEventType};
use sqlx::Row as _;
use sqlx::any::AnyRow;

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, events, secret, created_ms, disabled";

/// The event types an endpoint subscribes to, stored as a JSON list.
fn events(row: &AnyRow) -> Result<Vec<String>, sqlx::Error> {
    let raw: String = row.try_get("events")?;
    serde_json::from_str(&raw).map_err(|e| sqlx::Error::ColumnDecode {
        index: "events".to_string(),
        source: format!("events is not a JSON list of strings ({e}): {raw:.64}").into(),
    })
}

fn endpoint_from_row(row: &AnyRow) -> Result<Webhook, sqlx::Error> {
    Ok(Webhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: events(row)?,
        created_at: rfc3339_ms(row.try_get("created_ms")?),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
    })
}

/// An endpoint to store.
#[derive(Debug, Clone)]
pub struct NewEndpoint<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a str,
    pub created_ms: i64,
}

pub async fn insert_endpoint(conn: &mut Conn, e: &NewEndpoint<'_>) -> Result<Webhook, sqlx::Error> {
    let events = serde_json::to_string(e.events).map_err(|err| sqlx::Error::Encode(err.into()))?;
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, events, secret, created_ms, disabled) \
         VALUES ($1, $2, $3, $4, $5, $6, 0)",
    )
    .bind(e.id)
    .bind(e.tenant_id)
    .bind(e.url)
    .bind(events)
    .bind(e.secret)
    .bind(e.created_ms)
    .execute(&mut *conn)
    .await?;
    get_endpoint(conn, e.tenant_id, e.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn count_endpoints(conn: &mut Conn, tenant_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(conn)
        .await?
        .try_get("n")
}

/// The tenant's endpoints, oldest first.
pub async fn list_endpoints(conn: &mut Conn, tenant_id: &str) -> Result<Vec<Webhook>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 \
         ORDER BY created_ms, id"
    ));
    let rows = sqlx::query(sql).bind(tenant_id).fetch_all(conn).await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub async fn get_endpoint(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Webhook>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    ));
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(endpoint_from_row)
        .transpose()
}

/// Deletes the tenant's endpoint and its deliveries; false when the tenant has no such
/// endpoint. Run it in a transaction.
pub async fn delete_endpoint(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Removes every endpoint, event and delivery of a tenant (the tenant is being deleted).
pub async fn delete_all(conn: &mut Conn, tenant_id: &str) -> Result<(), sqlx::Error> {
    for table in ["webhook_deliveries", "webhook_events", "webhook_endpoints"] {
        let sql = sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant_id = $1"));
        sqlx::query(sql).bind(tenant_id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// One enabled endpoint of a tenant and the event types it takes (`*` for all).
#[derive(Debug, Clone)]
pub struct Subscription {
    pub endpoint_id: String,
    pub events: Vec<String>,
}

impl Subscription {
    pub fn wants(&self, event_type: WebhookEventType) -> bool {
        self.events
            .iter()
            .any(|e| e == "*" || e == event_type.as_str())
    }
}

/// The tenant's enabled endpoints with what each subscribes to.
pub async fn subscriptions(
    conn: &mut Conn,
    tenant_id: &str,
) -> Result<Vec<Subscription>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, events FROM webhook_endpoints WHERE tenant_id = $1 AND disabled = 0",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Subscription {
                endpoint_id: row.try_get("id")?,
                events: events(row)?,
            })
        })
        .collect()
}

/// An event to store in the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub event_type: WebhookEventType,
    pub payload: &'a str,
    pub created_ms: i64,
}

/// Events written per statement: five bound values each.
const EVENTS_PER_STATEMENT: usize = 200;

/// Deliveries written per statement: four bound values each.
const DELIVERIES_PER_STATEMENT: usize = 1000;

/// Stores each event and one pending delivery per endpoint of its own, due at once: one
/// statement for the events and one for their deliveries (per few hundred), whatever the count.
pub async fn insert_events(
    conn: &mut Conn,
    events: &[(NewEvent<'_>, &[String])],
) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_events (id, tenant_id, event_type, payload, created_ms) \
             VALUES {}",
            super::value_rows(chunk.len(), 5, |m| format!("({})", m.join(", ")))
        ));
        let mut q = sqlx::query(sql);
        for (e, _) in chunk {
            q = q
                .bind(e.id)
                .bind(e.tenant_id)
                .bind(e.event_type.as_str())
                .bind(e.payload)
                .bind(e.created_ms);
        }
        q.execute(&mut *conn).await?;
    }
    let deliveries: Vec<(&str, &NewEvent<'_>)> = events
        .iter()
        .flat_map(|(e, endpoints)| endpoints.iter().map(move |p| (p.as_str(), e)))
        .collect();
    for chunk in deliveries.chunks(DELIVERIES_PER_STATEMENT) {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, tenant_id, state, attempts, \
             next_attempt_ms, lease_until_ms, last_status, last_error, delivered_ms) VALUES {}",
            super::value_rows(chunk.len(), 4, |m| format!(
                "({}, {}, {}, 'pending', 0, {}, 0, NULL, NULL, NULL)",
                m[0], m[1], m[2], m[3]
            ))
        ));
        let mut q = sqlx::query(sql);
        for (endpoint, e) in chunk {
            q = q
                .bind(*endpoint)
                .bind(e.id)
                .bind(e.tenant_id)
                .bind(e.created_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A delivery whose attempt is due and that no replica holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub endpoint_id: String,
    pub event_id: String,
    pub tenant_id: String,
}

/// Up to `limit` tenants with due, unleased deliveries (a tenant at its in-flight limit is
/// then skipped without its deliveries standing in front of another tenant's).
pub async fn due_tenants(
    conn: &mut Conn,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant_id, MIN(next_attempt_ms) AS oldest FROM webhook_deliveries \
         WHERE state = 'pending' AND next_attempt_ms <= $1 AND lease_until_ms <= $1 \
         GROUP BY tenant_id ORDER BY oldest LIMIT $2",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| r.try_get("tenant_id")).collect()
}

/// Up to `limit` of the tenant's due, unleased deliveries, the longest waiting first.
pub async fn due(
    conn: &mut Conn,
    tenant_id: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Due>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT endpoint_id, event_id, tenant_id FROM webhook_deliveries \
         WHERE tenant_id = $1 AND state = 'pending' AND next_attempt_ms <= $2 \
         AND lease_until_ms <= $2 ORDER BY next_attempt_ms, event_id LIMIT $3",
    )
    .bind(tenant_id)
    .bind(now_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Due {
                endpoint_id: r.try_get("endpoint_id")?,
                event_id: r.try_get("event_id")?,
                tenant_id: r.try_get("tenant_id")?,
            })
        })
        .collect()
}

/// Takes the delivery for one attempt until `lease_until_ms`; false when it is no longer due
/// or another replica took it first (the condition and the write are one statement).
pub async fn claim(
    conn: &mut Conn,
    d: &Due,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET lease_until_ms = $1 \
         WHERE endpoint_id = $2 AND event_id = $3 AND state = 'pending' \
         AND next_attempt_ms <= $4 AND lease_until_ms <= $4",
    )
    .bind(lease_until_ms)
    .bind(&d.endpoint_id)
    .bind(&d.event_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What one attempt sends, and where.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub url: String,
    pub secret: String,
    pub event_type: WebhookEventType,
    pub payload: String,
    pub created_ms: i64,
    pub tenant_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// The claimed delivery's event and endpoint; None when the endpoint was deleted meanwhile.
pub async fn attempt(conn: &mut Conn, d: &Due) -> Result<Option<Attempt>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT w.url, w.secret, e.event_type, e.payload, e.created_ms, e.tenant_id, \
         d.attempts FROM webhook_deliveries d \
         JOIN webhook_events e ON e.id = d.event_id \
         JOIN webhook_endpoints w ON w.id = d.endpoint_id \
         WHERE d.endpoint_id = $1 AND d.event_id = $2",
    )
    .bind(&d.endpoint_id)
    .bind(&d.event_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Attempt {
            url: r.try_get("url")?,
            secret: r.try_get("secret")?,
            event_type: super::parsed(&r, "event_type")?,
            payload: r.try_get("payload")?,
            created_ms: r.try_get("created_ms")?,
            tenant_id: r.try_get("tenant_id")?,
            attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        })
    })
    .transpose()
}

/// How an attempt ended, and what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    Retry {
        at_ms: i64,
        status: Option<u16>,
        error: String,
    },
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// Records an attempt and releases the lease.
pub async fn record(
    conn: &mut Conn,
    d: &Due,
    now_ms: i64,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    let (state, next, status, error, delivered) = match outcome {
        Outcome::Delivered { status } => (
            DeliveryState::Delivered,
            now_ms,
            Some(*status),
            None,
            Some(now_ms),
        ),
        Outcome::Retry {
            at_ms,
            status,
            error,
        } => (
            DeliveryState::Pending,
            *at_ms,
            *status,
            Some(error.as_str()),
            None,
        ),
        Outcome::Failed { status, error } => (
            DeliveryState::Failed,
            now_ms,
            *status,
            Some(error.as_str()),
            None,
        ),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_ms = $2, \
         lease_until_ms = 0, last_status = $3, last_error = $4, delivered_ms = $5 \
         WHERE endpoint_id = $6 AND event_id = $7",
    )
    .bind(state.as_str())
    .bind(next)
    .bind(status.map(i64::from))
    .bind(error)
    .bind(delivered)
    .bind(&d.endpoint_id)
    .bind(&d.event_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// When the longest-waiting due delivery became due (pending, leased or not); None when none
/// is due.
pub async fn oldest_due_ms(conn: &mut Conn, now_ms: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query(
        "SELECT MIN(next_attempt_ms) AS oldest FROM webhook_deliveries \
         WHERE state = 'pending' AND next_attempt_ms <= $1",
    )
    .bind(now_ms)
    .fetch_one(conn)
    .await?
    .try_get("oldest")
}

/// An endpoint's deliveries, newest event first (event ids sort by time), a page at a time.
pub async fn deliveries(
    conn: &mut Conn,
    endpoint_id: &str,
    limit: u32,
    cursor: &str,
) -> Result<Page<WebhookDelivery>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.event_id, e.event_type, d.state, d.attempts, d.last_status, d.last_error, \
         d.next_attempt_ms, d.delivered_ms, e.created_ms FROM webhook_deliveries d \
         JOIN webhook_events e ON e.id = d.event_id \
         WHERE d.endpoint_id = $1 AND ($2 = '' OR d.event_id < $2) \
         ORDER BY d.event_id DESC LIMIT $3",
    )
    .bind(endpoint_id)
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            let state: DeliveryState = super::parsed(r, "state")?;
            Ok(WebhookDelivery {
                event_id: r.try_get("event_id")?,
                event_type: super::parsed(r, "event_type")?,
                state,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                last_status: r
                    .try_get::<Option<i64>, _>("last_status")?
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: r.try_get("last_error")?,
                next_attempt_at: (state == DeliveryState::Pending)
                    .then(|| r.try_get("next_attempt_ms").map(rfc3339_ms))
                    .transpose()?,
                delivered_at: r.try_get::<Option<i64>, _>("delivered_ms")?.map(rfc3339_ms),
                created_at: rfc3339_ms(r.try_get("created_ms")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(super::paginate(items, limit, |d| &d.event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_every_row_on() {
        let sql = super::super::value_rows(2, 3, |m| format!("({}, 'x', {})", m[0], m[2]));
        assert_eq!(sql, "($1, 'x', $3), ($4, 'x', $6)");
    }

    /// Events of a batch, each with its own endpoints, past one statement's worth: every event
    /// once, one pending delivery per (event, endpoint), none for an event without endpoints.
    #[tokio::test]
    async fn events_and_their_deliveries_are_stored_in_batches() {
        let (_dir, db) = crate::db::scratch(1).await;
        let mut c = db.conn().await.expect("conn");
        let two = vec!["whk_a".to_string(), "whk_b".to_string()];
        let none: Vec<String> = Vec::new();
        let count = EVENTS_PER_STATEMENT + 3;
        let ids: Vec<String> = (0..count).map(|i| format!("evt_{i:04}")).collect();
        let events: Vec<(NewEvent<'_>, &[String])> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let event = NewEvent {
                    id,
                    tenant_id: "ten_x",
                    event_type: WebhookEventType::TipCreated,
                    payload: "{}",
                    created_ms: 7,
                };
                (
                    event,
                    if i == 5 {
                        none.as_slice()
                    } else {
                        two.as_slice()
                    },
                )
            })
            .collect();
        insert_events(&mut c, &events).await.expect("insert");
        let n = async |c: &mut Conn, sql: &'static str| {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(c)
                .await
                .expect("count")
        };
        assert_eq!(
            n(&mut c, "SELECT COUNT(*) FROM webhook_events").await,
            count as i64
        );
        assert_eq!(
            n(
                &mut c,
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending' \
               AND next_attempt_ms = 7 AND tenant_id = 'ten_x'"
            )
            .await,
            2 * (count as i64 - 1)
        );
        assert_eq!(
            n(
                &mut c,
                "SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = 'evt_0005'"
            )
            .await,
            0
        );
        assert_eq!(
            n(&mut c, "SELECT COUNT(DISTINCT event_id) FROM webhook_deliveries WHERE endpoint_id = 'whk_b'")
                .await,
            count as i64 - 1
        );
    }
}
