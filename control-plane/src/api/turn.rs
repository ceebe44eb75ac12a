//! `GET /v1/me/ice-servers`: TURN relays with time-limited credentials for a signed-in user's
//! own WebRTC peer connections (apps that do not take them from the gateway's call events).
//! See [`crate::turn`].

use super::AppState;
use super::auth::UserCaller;
use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{IceServers, IceServersParams, Problem};

/// ICE servers for your peer connections (user token): the TURN URLs of up to two ready nodes
/// (of `region` when one there runs TURN, else any), least loaded first, with a credential
/// valid until `expiresAt`. Empty when no node runs TURN. Only with the plan feature `calls`.
#[utoipa::path(get, path = "/v1/me/ice-servers", tag = "calls", params(IceServersParams),
    responses((status = 200, body = IceServers), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem)))]
pub async fn ice_servers(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiQuery(q): ApiQuery<IceServersParams>,
) -> ApiResult<Json<IceServers>> {
    let region = q.region.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = region
        && r.len() > 64
    {
        return Err(ApiError::BadRequest(format!(
            "region {r:.70?} is longer than 64 characters: name a node region such as \"eu\"."
        )));
    }
    let mut conn = st.db.conn().await?;
    // Relays cost the hosting company bandwidth: they come with calls, a plan feature.
    let plan = super::stations::plan_of(&mut conn, &me.tenant.plan_id).await?;
    if !plan.features.calls {
        return Err(ApiError::PlanLimit {
            limit: "features.calls",
            detail: format!(
                "Plan {:?} does not include calls, so its users get no TURN relays.",
                plan.name
            ),
        });
    }
    let (ice_servers, expires) = crate::turn::ice_servers_with(
        &mut conn,
        &st.turn,
        (&me.tenant.id, &me.user.id),
        region,
        db::now_millis(),
    )
    .await?;
    Ok(Json(IceServers {
        ice_servers,
        expires_at: db::rfc3339(expires),
    }))
}
