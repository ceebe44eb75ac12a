//! `send-tip`: a tip over the gateway, done by [`crate::tips::send`] exactly as `POST /v1/me/tips`
//! does it (same rules, same idempotency keys). Acknowledged after the commit with the tip; a
//! retry with the same `idempotencyKey` gets the same ack and moves nothing. The creator's
//! devices then hear `notification` and `earnings`. A tip the server has no room for now is
//! refused with `busy` (send it again, same key).

use super::protocol::{self, Refusal, SendTip};
use super::{Hub, Session, recovery};
use crate::metrics::NotificationSource;
use crate::tips::{self, Refused};
use onda_shared::api::CreateTip;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::sync::Arc;

fn refusal(r: Refused) -> Refusal {
    match r {
        Refused::Invalid(m) => Refusal::invalid(m),
        Refused::NotFound(m) => Refusal::new("not_found", m),
        Refused::Forbidden { code, detail } => Refusal::new(code, detail),
        Refused::Insufficient(m) => Refusal::new("insufficient_funds", m),
        Refused::KeyConflict(m) => Refusal::new("idempotency_conflict", m),
        Refused::TenantGone(_) => Refusal::new("unauthorized", "This connection's tenant is gone."),
        Refused::Busy(m) => Refusal::busy(m),
        Refused::Database(e) => protocol::stored(&e),
    }
}

pub(super) async fn send_tip<A: Adapter>(
    hub: Arc<Hub>,
    s: SocketRef<A>,
    session: Session,
    data: Option<Value>,
) -> Result<Value, Refusal> {
    let req: SendTip = protocol::parse("send-tip", data)?;
    if !crate::ledger::idempotency_key_ok(&req.idempotency_key) {
        return Err(Refusal::invalid(format!(
            "idempotencyKey must be 1 to {} visible ASCII characters, unique per tip and sent \
             again when retrying it.",
            crate::ledger::MAX_IDEMPOTENCY_KEY
        )));
    }
    let tip = CreateTip {
        creator_id: req.creator_id,
        amount: req.amount,
        message: req.message,
        stream_id: req.stream_id,
    };
    let sent = tips::send(
        &hub.tips,
        &hub.ledger,
        &session.tenant_id,
        &session.user_id,
        (&req.idempotency_key, &tip),
    )
    .await
    .map_err(refusal)?;
    if !sent.replayed {
        hub.metrics.notification(NotificationSource::Money);
        recovery::send(&hub, &s, &session.tenant_id, &sent.recorded).await;
    }
    if let Some(line) = &sent.chat {
        let body = json!({ "streamId": line.stream_id, "message": line });
        let room = super::stream_room(&session.tenant_id, &line.stream_id);
        let _ = hub.scoped(s.within(room)).emit("chat-message", &body).await;
    }
    Ok(protocol::ok(json!({ "tip": sent.tip })))
}
