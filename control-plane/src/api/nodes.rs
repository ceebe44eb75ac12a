//! `/v1/nodes` and `/v1/join-tokens`: the admin lists, drains and revokes nodes, and issues the
//! one-time tokens new nodes join with.

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Paging};
use crate::db;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use onda_shared::api::{CreateJoinToken, JoinTokenInfo, Node, Page, PageParams, Problem};

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

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no node {id:?}."))
}

/// Tells the replica holding the node's connection to re-check it (revocation).
async fn poke(st: &AppState, key: String) -> ApiResult<()> {
    if let Some(c) = &st.cluster {
        c.coord
            .put(&key, crate::db::now().to_string().as_bytes(), None)
            .await
            .map_err(ApiError::Internal)?;
    }
    Ok(())
}

/// Drain a node: its stations move to other nodes (each keeps playing on this node until its
/// new node is on the air), and it gets no new ones.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", params(("id" = String, Path, description = "Object id")), tag = "nodes",
    responses((status = 200, body = Node), (status = 404, body = Problem)))]
pub async fn drain(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Node>> {
    set_draining(st, id, true).await
}

/// Undo a drain: the node takes stations again.
#[utoipa::path(post, path = "/v1/nodes/{id}/resume", params(("id" = String, Path, description = "Object id")), tag = "nodes",
    responses((status = 200, body = Node), (status = 404, body = Problem)))]
pub async fn resume(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Node>> {
    set_draining(st, id, false).await
}

async fn set_draining(st: AppState, id: String, draining: bool) -> ApiResult<Json<Node>> {
    let mut conn = st.db.conn().await?;
    if !db::nodes::set_draining(&mut conn, &id, draining).await? {
        return Err(not_found(&id));
    }
    // The leader watches /nodes/: a touch there makes it reconcile now rather than at its tick.
    poke(&st, crate::cluster::store::revoked_key(&id)).await?;
    db::nodes::get(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// Revoke a node: its certificate is refused from now on, its connection is cut, and its
/// stations move. A revoked node must join again with a new token.
#[utoipa::path(post, path = "/v1/nodes/{id}/revoke", params(("id" = String, Path, description = "Object id")), tag = "nodes",
    responses((status = 200, body = Node), (status = 404, body = Problem)))]
pub async fn revoke(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Node>> {
    let mut conn = st.db.conn().await?;
    if !db::nodes::revoke(&mut conn, &id).await? {
        return Err(not_found(&id));
    }
    if let Some(c) = &st.cluster {
        // Its liveness goes with it, so the leader re-places its stations now.
        let _ = c.store.delete_alive(&id).await;
    }
    poke(&st, crate::cluster::store::revoked_key(&id)).await?;
    db::nodes::get(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// Issues a join token (also used by dev mode).
pub async fn issue_join_token(
    conn: &mut db::Conn,
    ca_sha256: &str,
    control_planes: &[String],
    description: &str,
    ttl_seconds: u64,
) -> ApiResult<JoinTokenInfo> {
    let id = crate::secrets::new_id("jt");
    let secret = crate::secrets::new_password();
    let mut info = db::cluster::insert_token(
        conn,
        &id,
        &crate::secrets::sha256_hex(&secret),
        description,
        i64::try_from(ttl_seconds).unwrap_or(i64::MAX),
    )
    .await?;
    let token = onda_shared::cluster::token::JoinToken {
        id,
        secret,
        ca_sha256: ca_sha256.to_string(),
    }
    .to_string();
    let addresses = control_planes
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(",");
    info.command = Some(format!(
        "ONDA_CONTROL_PLANE_ADDRESSES='[{addresses}]' onda agent --config agent.toml --join {token}"
    ));
    info.token = Some(token);
    Ok(info)
}

/// List join tokens (never their secrets).
#[utoipa::path(get, path = "/v1/join-tokens", tag = "nodes",
    responses((status = 200, body = Vec<JoinTokenInfo>), (status = 403, body = Problem)))]
pub async fn list_tokens(
    State(st): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<JoinTokenInfo>>> {
    let mut conn = st.db.conn().await?;
    Ok(Json(db::cluster::list_tokens(&mut conn).await?))
}

/// Create a one-time join token for a new node. The answer holds the token (with the cluster
/// CA's fingerprint) and the command to run on the node; neither is shown again.
#[utoipa::path(post, path = "/v1/join-tokens", tag = "nodes", request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenInfo), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_token(
    State(st): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateJoinToken>,
) -> ApiResult<(StatusCode, Json<JoinTokenInfo>)> {
    let Some(cluster) = &st.cluster else {
        return Err(ApiError::Conflict(
            "This control plane runs without a cluster (cluster.listen is empty).".to_string(),
        ));
    };
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if !(1..=7 * 24 * 3600).contains(&ttl) {
        return Err(ApiError::Unprocessable(
            "ttl_seconds must be between 1 and 604800 (7 days).".to_string(),
        ));
    }
    let description = crate::validate::text("description", &req.description)?;
    let mut conn = st.db.conn().await?;
    let info = issue_join_token(
        &mut conn,
        &cluster.ca.sha256,
        &cluster.advertised(),
        &description,
        ttl,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Delete a join token (used or not).
#[utoipa::path(delete, path = "/v1/join-tokens/{id}", params(("id" = String, Path, description = "Object id")), tag = "nodes",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_token(
    State(st): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut conn = st.db.conn().await?;
    if db::cluster::delete_token(&mut conn, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "There is no join token {id:?}."
        )))
    }
}
