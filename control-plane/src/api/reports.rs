//! `/v1/reports`: abuse reports of messages by the tenant's end users, each with the message as
//! the reporter saw it (tenant API key).

use super::AppState;
use super::auth::{Caller, users_tenant};
use super::error::ApiResult;
use super::extract::{ApiQuery, Paging};
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{Page, PageParams, Problem, Report};

/// The tenant's reports, oldest first.
#[utoipa::path(get, path = "/v1/reports", tag = "messaging", params(PageParams),
    responses((status = 200, body = Page<Report>), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Report>>> {
    let tenant = users_tenant(&caller)?;
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(
        db::moderation::reports(&mut conn, &tenant.id, p.limit, &p.cursor).await?,
    ))
}
