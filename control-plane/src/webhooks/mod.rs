//! Webhooks to tenants' backends. A change that a tenant may want to hear about writes its
//! event with [`enqueue`] in the same transaction as the change itself (the outbox): the event
//! exists exactly when the change was committed. The [`Worker`] of every replica then delivers
//! each event to each endpoint that subscribes to it, at least once, signed, and retried with
//! backoff until it is delivered or a day (`webhooks.retry_for_secs`) has passed.
//!
//! Layers: `target` (which URLs and addresses are allowed) and `signature` (the body and its
//! HMAC) and `retry` (the schedule) are pure; `worker` sends; this module writes the outbox.

mod retry;
mod signature;
pub mod target;
mod worker;

pub use worker::Worker;

use crate::db::{self, Conn};
use onda_shared::api::WebhookEventType;
use serde::Serialize;

/// Endpoints one tenant may register.
pub const MAX_ENDPOINTS: i64 = 10;

fn encode(data: &impl Serialize) -> Result<String, sqlx::Error> {
    serde_json::to_string(data).map_err(|e| sqlx::Error::Encode(e.into()))
}

/// Writes an event of the tenant to the outbox, with a delivery for each of its endpoints that
/// subscribes to `event_type`. Call it inside the transaction that makes the change, so the
/// event is committed (and delivered) exactly when the change is. Returns the event id, or None
/// when no endpoint wants the event (then nothing is written).
pub async fn enqueue(
    conn: &mut Conn,
    tenant_id: &str,
    event_type: WebhookEventType,
    data: &impl Serialize,
) -> Result<Option<String>, sqlx::Error> {
    Outbox::load(conn, tenant_id)
        .await?
        .enqueue(conn, event_type, data)
        .await
}

/// A tenant's endpoints, read once for a transaction that writes several events (a message
/// writes `message.created` and `notification.created`), so each event costs no read.
#[derive(Debug, Clone)]
pub struct Outbox {
    tenant_id: String,
    subscriptions: Vec<db::webhooks::Subscription>,
}

impl Outbox {
    /// Reads the tenant's endpoints; call it inside the transaction the events go into.
    pub async fn load(conn: &mut Conn, tenant_id: &str) -> Result<Outbox, sqlx::Error> {
        Ok(Outbox {
            tenant_id: tenant_id.to_string(),
            subscriptions: db::webhooks::subscriptions(conn, tenant_id).await?,
        })
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// As [`enqueue`], for this tenant.
    pub async fn enqueue(
        &self,
        conn: &mut Conn,
        event_type: WebhookEventType,
        data: &impl Serialize,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut ids = self
            .enqueue_many(conn, event_type, std::slice::from_ref(data))
            .await?;
        Ok(ids.pop().flatten())
    }

    /// As [`enqueue`] for each of `data`, all of one type: one statement for the events and one
    /// for their deliveries per few hundred (a batch of tips writes its `tip.created` events so).
    /// Returns their ids in order; the ids sort in that order too.
    pub async fn enqueue_many<T: Serialize>(
        &self,
        conn: &mut Conn,
        event_type: WebhookEventType,
        data: &[T],
    ) -> Result<Vec<Option<String>>, sqlx::Error> {
        let endpoints: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|s| s.wants(event_type))
            .map(|s| s.endpoint_id.clone())
            .collect();
        if endpoints.is_empty() {
            return Ok(vec![None; data.len()]);
        }
        let payloads = data.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let created_ms = db::now_millis();
        // Deliveries go out in event-id order; ids of one millisecond differ by a random
        // suffix, so sorted they keep the events in the order given.
        let mut ids: Vec<String> = data
            .iter()
            .map(|_| crate::secrets::new_time_id("evt", created_ms))
            .collect();
        ids.sort();
        let events: Vec<(db::webhooks::NewEvent<'_>, &[String])> = ids
            .iter()
            .zip(&payloads)
            .map(|(id, payload)| {
                let event = db::webhooks::NewEvent {
                    id,
                    tenant_id: &self.tenant_id,
                    event_type,
                    payload,
                    created_ms,
                };
                (event, endpoints.as_slice())
            })
            .collect();
        db::webhooks::insert_events(conn, &events).await?;
        Ok(ids.into_iter().map(Some).collect())
    }
}

/// Writes a `webhook.test` event for one endpoint only, whatever it subscribes to.
pub async fn enqueue_test(
    conn: &mut Conn,
    tenant_id: &str,
    endpoint_id: &str,
) -> Result<String, sqlx::Error> {
    let data = serde_json::json!({ "webhookId": endpoint_id });
    store(
        conn,
        tenant_id,
        WebhookEventType::WebhookTest,
        &encode(&data)?,
        &[endpoint_id.to_string()],
    )
    .await
}

async fn store(
    conn: &mut Conn,
    tenant_id: &str,
    event_type: WebhookEventType,
    payload: &str,
    endpoints: &[String],
) -> Result<String, sqlx::Error> {
    let created_ms = db::now_millis();
    let id = crate::secrets::new_time_id("evt", created_ms);
    let event = db::webhooks::NewEvent {
        id: &id,
        tenant_id,
        event_type,
        payload,
        created_ms,
    };
    db::webhooks::insert_events(conn, &[(event, endpoints)]).await?;
    Ok(id)
}

/// The event types of a registration, checked: `["*"]` alone, or known types without
/// repeats.
pub fn event_filter(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err("events is empty: list event types, or [\"*\"] for all of them.".to_string());
    }
    if events.iter().any(|e| e == "*") {
        if events.len() > 1 {
            return Err("events: \"*\" already means every type; list it alone.".to_string());
        }
        return Ok(events.to_vec());
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let t: WebhookEventType = e.parse().map_err(|m| format!("events: {m}."))?;
        if out.iter().any(|o| o == t.as_str()) {
            return Err(format!("events lists {t} twice."));
        }
        out.push(t.as_str().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(event_filter(&v(&["*"])), Ok(v(&["*"])));
        assert_eq!(
            event_filter(&v(&["message.created", "user.online"])),
            Ok(v(&["message.created", "user.online"]))
        );
        for bad in [
            v(&[]),
            v(&["*", "user.online"]),
            v(&["message.deleted"]),
            v(&["user.online", "user.online"]),
        ] {
            assert!(event_filter(&bad).is_err(), "{bad:?}");
        }
    }
}
