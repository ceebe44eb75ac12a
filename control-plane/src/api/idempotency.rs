//! `Idempotency-Key` on every request that moves value: the key, the route and a hash of the
//! request are stored with the answer in the same database transaction as the movement, so a
//! retry of a committed request answers the stored result (same status and body) and moves
//! nothing twice, even when the process died between the commit and the answer. The same key
//! with another request is a 422. A refused movement stores nothing (it moved nothing), so it
//! may be retried with the same key.
//!
//! The key's row is inserted at the start of the transaction: a concurrent request with the
//! same key waits on it (PostgreSQL's unique index; SQLite's write lock) and, once the first
//! commits, answers what it stored instead of moving value a second time.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::db::{self, ledger::StoredAnswer};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sqlx::Transaction;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY: usize = crate::ledger::MAX_IDEMPOTENCY_KEY;

/// The request's `Idempotency-Key`: required, 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(HEADER) else {
            return Err(ApiError::BadRequest(
                "This request moves value: send an Idempotency-Key header (a unique string per \
                 operation, reused when retrying it)."
                    .to_string(),
            ));
        };
        match v.to_str() {
            Ok(k) if crate::ledger::idempotency_key_ok(k) => Ok(IdempotencyKey(k.to_string())),
            _ => Err(ApiError::BadRequest(format!(
                "The Idempotency-Key header must be 1 to {MAX_KEY} visible ASCII characters."
            ))),
        }
    }
}

/// A value-moving request in progress: its transaction, holding the key's row.
pub struct Movement {
    pub tx: Transaction<'static, sqlx::Any>,
    tenant_id: String,
    key: String,
    answer: StoredAnswer,
}

/// What [`begin`] found: a fresh movement to carry out, or the answer to give at once.
pub enum Begun {
    Fresh(Movement),
    Replay(Response),
}

/// The hash of a request: the route template, the path (which names the object) and the body
/// as the handler understood it (so whitespace and key order do not matter).
pub fn request_hash(route: &str, path: &str, body: &impl serde::Serialize) -> ApiResult<String> {
    let json = serde_json::to_string(body)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot hash the request: {e}")))?;
    Ok(crate::secrets::sha256_hex(&format!(
        "{route}\n{path}\n{json}"
    )))
}

/// Starts the movement of `key`, or answers a key used before.
pub async fn begin(
    st: &AppState,
    tenant_id: &str,
    IdempotencyKey(key): IdempotencyKey,
    route: &str,
    request_hash: String,
) -> ApiResult<Begun> {
    let mut tx = st.db.begin().await?;
    if let Some(stored) = db::ledger::idempotent_answer(&mut tx, tenant_id, &key).await? {
        return replay(st, &key, &stored, route, &request_hash).map(Begun::Replay);
    }
    let answer = StoredAnswer {
        route: route.to_string(),
        request_hash,
        // 0 until the movement is done; never seen outside the transaction.
        status: 0,
        body: String::new(),
    };
    if let Err(e) = db::ledger::store_answer(&mut tx, tenant_id, &key, &answer).await {
        if !db::is_unique_violation(&e) {
            return Err(e.into());
        }
        // A concurrent request with this key committed while we waited: answer what it stored.
        drop(tx);
        let mut conn = st.db.conn().await?;
        let stored = db::ledger::idempotent_answer(&mut conn, tenant_id, &key)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("idempotency key vanished")))?;
        return replay(st, &key, &stored, route, &answer.request_hash).map(Begun::Replay);
    }
    Ok(Begun::Fresh(Movement {
        tx,
        tenant_id: tenant_id.to_string(),
        key,
        answer,
    }))
}

fn replay(
    st: &AppState,
    key: &str,
    stored: &StoredAnswer,
    route: &str,
    request_hash: &str,
) -> ApiResult<Response> {
    if stored.route != route || stored.request_hash != request_hash {
        st.metrics.ledger.refused("idempotency_conflict");
        return Err(ApiError::Unprocessable(format!(
            "Idempotency-Key {key:?} was already used with a different request ({}); use a new \
             key for a new operation.",
            stored.route
        )));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, stored.body.clone()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(resp)
}

/// How long to hold each answer after its commit (`ONDA_LEDGER_ANSWER_DELAY_MS`, default 0): a
/// test hook that lets a test kill the process between the commit and the answer.
fn answer_delay() -> std::time::Duration {
    static DELAY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    std::time::Duration::from_millis(*DELAY.get_or_init(|| {
        std::env::var("ONDA_LEDGER_ANSWER_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }))
}

/// Holds an answer whose movement is committed for `ONDA_LEDGER_ANSWER_DELAY_MS` (the test hook
/// of [`answer_delay`]); nothing when it is unset.
pub(crate) async fn hold_answer(key: &str) {
    let delay = answer_delay();
    if !delay.is_zero() {
        tracing::info!(key = %key, "committed; holding the answer (test hook)");
        tokio::time::sleep(delay).await;
    }
}

impl Movement {
    /// Stores the answer with the key, commits, and answers.
    pub async fn finish(
        mut self,
        status: StatusCode,
        body: &impl serde::Serialize,
    ) -> ApiResult<Response> {
        let json = serde_json::to_string(body)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot encode the answer: {e}")))?;
        self.answer.status = status.as_u16();
        self.answer.body = json.clone();
        db::ledger::complete_answer(&mut self.tx, &self.tenant_id, &self.key, &self.answer).await?;
        self.tx.commit().await?;
        hold_answer(&self.key).await;
        let mut resp = (status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}
