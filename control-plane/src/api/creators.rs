//! `/v1/me/creators/{creator_id}`: a creator's profile as a signed-in user of the tenant sees it,
//! for the web app's creator page and its call button: the public fields, presence, and what
//! `initiate-call` will check (taking calls, the price, subscribers only, blocks), so an app can
//! say why a creator cannot be called before trying. The gateway still decides at the call.

use super::AppState;
use super::auth::UserCaller;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use crate::db;
use crate::memberships::{self, Access};
use axum::Json;
use axum::extract::State;
use onda_shared::api::{CreatorCalls, CreatorProfile, Problem};

/// A creator of your tenant (user token): name, avatar, prices, whether they are online, and
/// whether and at what price they take calls now. A user who is not a creator is a 404.
#[utoipa::path(get, path = "/v1/me/creators/{creator_id}", tag = "users",
    params(("creator_id" = String, Path, description = "The creator's user id")),
    responses((status = 200, body = CreatorProfile), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    UserCaller(me): UserCaller,
    ApiPath(creator_id): ApiPath<String>,
) -> ApiResult<Json<CreatorProfile>> {
    let tenant = &me.tenant.id;
    let id = crate::users::user_id(&creator_id)?;
    let mut conn = st.db.conn().await?;
    let u = db::users::get(&mut conn, tenant, id)
        .await?
        .filter(|u| u.creator)
        .ok_or_else(|| ApiError::NotFound(format!("There is no creator {creator_id:?}.")))?;
    let now = db::now_millis();
    let subscribed = matches!(
        memberships::entitled(&mut conn, tenant, &me.user.id, (Some(&u.id), None), now).await?,
        Access::Granted(_)
    );
    let (i_blocked, blocked_me) =
        db::moderation::between(&mut conn, tenant, &me.user.id, &u.id).await?;
    let online = db::presence::online(&mut conn, tenant, &u.id, st.realtime.alive_since()).await?;
    Ok(Json(CreatorProfile {
        calls: CreatorCalls {
            available: u.available_for_calls && u.call_price_per_minute.is_some(),
            price_per_minute: u.call_price_per_minute,
            billing: u.call_billing,
            subscribers_only: u.calls_subscribers_only,
        },
        id: u.id,
        display_name: u.display_name,
        avatar_url: u.avatar_url,
        subscription_price: u.subscription_price,
        tip_minimum: u.tip_minimum,
        currency: me.tenant.currency.clone(),
        online,
        subscribed,
        blocked: i_blocked || blocked_me,
    }))
}
