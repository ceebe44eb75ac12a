//! `/v1/nodes`: the admin's view of edge nodes (registration arrives with the cluster issue).

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery, Paging};
use crate::db;
use axum::Json;
use axum::extract::State;
use onda_shared::api::{Node, Page, PageParams, Problem};

/// List nodes.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", params(PageParams),
    responses((status = 200, body = Page<Node>), (status = 403, body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Node>>> {
    let p = Paging::try_from(q)?;
    let mut conn = st.db.conn().await?;
    Ok(Json(db::nodes::list(&mut conn, p.limit, &p.cursor).await?))
}

/// Get a node.
#[utoipa::path(get, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "Object id")), tag = "nodes",
    responses((status = 200, body = Node), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Node>> {
    let mut conn = st.db.conn().await?;
    db::nodes::get(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("There is no node {id:?}.")))
}
