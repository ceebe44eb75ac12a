//! `/v1/me`: who the bearer token belongs to, with the tenant's plan.

use super::AppState;
use super::auth::Caller;
use super::error::ApiResult;
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{Me, Problem};

/// The caller: "admin", or "tenant" with its tenant and plan.
#[utoipa::path(get, path = "/v1/me", tag = "tenants",
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn get(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Me>> {
    Ok(Json(match caller {
        Caller::Admin => Me {
            role: "admin".to_string(),
            tenant: None,
            plan: None,
        },
        Caller::Tenant(t) => {
            let mut conn = st.db.conn().await?;
            let plan = db::plans::get(&mut conn, &t.plan_id).await?;
            Me {
                role: "tenant".to_string(),
                tenant: Some(t),
                plan,
            }
        }
    }))
}
