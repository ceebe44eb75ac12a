//! What a delivery carries: the body (`{ id, type, createdAt, tenantId, data }`) and its
//! signature, `v1=` and the hex HMAC-SHA256, keyed with the endpoint's secret, of
//! `"{timestamp}.{event_id}.{body}"` (the `Onda-Timestamp` header, the `Onda-Event-Id` header and
//! the exact body bytes). The body is signed with the id and the time, so a replayed request
//! can carry neither another body nor another time than it was signed with.

use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

/// The body of a delivery, the same bytes on every attempt.
pub fn body(
    event_id: &str,
    event_type: &str,
    created_at: &str,
    tenant_id: &str,
    data: &Value,
) -> String {
    json!({
        "id": event_id,
        "type": event_type,
        "createdAt": created_at,
        "tenantId": tenant_id,
        "data": data,
    })
    .to_string()
}

/// The `Onda-Signature` header's value.
pub fn sign(secret: &str, timestamp: i64, event_id: &str, body: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(format!("{timestamp}.{event_id}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector as the documentation's verification example (docs/webhooks.md), so
    /// the two cannot drift.
    #[test]
    fn signs_timestamp_id_and_body() {
        let body = body(
            "evt_1",
            "webhook.test",
            "2026-01-01T00:00:00.000Z",
            "tnt_1",
            &json!({}),
        );
        assert_eq!(
            body,
            r#"{"createdAt":"2026-01-01T00:00:00.000Z","data":{},"id":"evt_1","tenantId":"tnt_1","type":"webhook.test"}"#
        );
        let sig = sign("whsec_test", 1767225600, "evt_1", &body);
        assert_eq!(
            sig,
            "v1=4ebd821ce424d0c5add81f43802cbcef0d0d5df260a1d57589fd27a47fca050c"
        );
        assert_ne!(sig, sign("whsec_test", 1767225601, "evt_1", &body));
        assert_ne!(sig, sign("whsec_test", 1767225600, "evt_2", &body));
        assert_ne!(sig, sign("whsec_other", 1767225600, "evt_1", &body));
        assert_ne!(sig, sign("whsec_test", 1767225600, "evt_1", "{}"));
    }
}
