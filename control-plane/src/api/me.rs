//! `/v1/me`: who the bearer token belongs to, with the tenant's plan and its storage.

use super::AppState;
use super::auth::{AnyCaller, Caller};
use super::error::ApiResult;
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{Me, Problem, StorageUsage};

/// The caller: "admin"; "tenant" with its tenant, plan and storage (the media files, the
/// estimated renditions the edges make of them and the end users' message attachments, against
/// the plan's `storage_bytes`); or "user"
/// with the end user's profile only.
#[utoipa::path(get, path = "/v1/me", tag = "tenants",
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn get(State(st): State<AppState>, caller: AnyCaller) -> ApiResult<Json<Me>> {
    Ok(Json(match caller {
        AnyCaller::User(p) => Me {
            role: "user".to_string(),
            tenant: None,
            plan: None,
            storage: None,
            user: Some(p.user),
        },
        AnyCaller::Panel(Caller::Admin) => Me {
            role: "admin".to_string(),
            tenant: None,
            plan: None,
            storage: None,
            user: None,
        },
        AnyCaller::Panel(Caller::Tenant(t)) => {
            let mut conn = st.db.conn().await?;
            let plan = db::plans::get(&mut conn, &t.plan_id).await?;
            let used = db::media::tenant_usage(&mut conn, &t.id).await?;
            let storage = StorageUsage {
                media_bytes: used.media_bytes,
                rendition_bytes: used.rendition_bytes,
                attachment_bytes: used.attachment_bytes,
                used_bytes: used.total(),
                limit_bytes: plan.as_ref().map_or(0, |p| p.limits.storage_bytes),
            };
            Me {
                role: "tenant".to_string(),
                tenant: Some(t),
                plan,
                storage: Some(storage),
                user: None,
            }
        }
    }))
}
