//! The demo data of `onda dev`: the demo tenant, its API key, station and live stream, the
//! station's AutoDJ library (tones made with ffmpeg, uploaded through the panel API), and the
//! money demo: the demo creator sells a subscription, the demo stream is for their
//! subscribers, and the demo fan starts with a balance and no subscription, so the watch page
//! shows its paywall first.
//!
//! The tenant's objects are made through the panel API's own functions
//! (`api::stations::create_for_tenant`, `api::streams::create_for_tenant`), so the demo obeys
//! the plan's limits like any tenant.

use super::DevInfo;
use crate::api::keys::issue;
use crate::api::stations::create_for_tenant;
use crate::db::{self, Db};
use crate::secrets;
use anyhow::Context as _;
use onda_shared::api::{AudioFormat, CreateStation, Mount, RequestSettings, Tenant, TenantStatus};
use std::path::Path;

pub const DEMO_TENANT: &str = "Demo Radio";
/// The database record (`cluster_facts`) of which tenant is the demo tenant.
const DEMO_TENANT_FACT: &str = "dev_demo_tenant";

/// The demo tenant, made on the first run and recorded (`DEMO_TENANT_FACT`).
async fn demo_tenant(tx: &mut db::Conn, previous: Option<&DevInfo>) -> anyhow::Result<Tenant> {
    // The demo tenant is the one a previous run recorded, by id (in the database, or in dev.json
    // for a directory from before that record): a name is no identity, since any tenant may be
    // called "Demo Radio", and neither is being the first tenant.
    let mut remembered = None;
    let recorded = db::cluster::fact(&mut *tx, DEMO_TENANT_FACT).await?;
    for id in recorded
        .iter()
        .map(String::as_str)
        .chain(previous.map(|p| p.tenant_id.as_str()))
    {
        if remembered.is_none() && !id.is_empty() {
            remembered = db::tenants::get(&mut *tx, id).await?;
        }
    }
    let tenant = match remembered {
        Some(t) => t,
        None => {
            let plan = db::plans::get(&mut *tx, "plan_premium")
                .await?
                .context("the seed plan plan_premium is missing from the dev database")?;
            let t = Tenant {
                id: secrets::new_id("tnt"),
                name: DEMO_TENANT.to_string(),
                email: "demo@example.com".to_string(),
                plan_id: plan.id,
                status: TenantStatus::Active,
                currency: onda_shared::api::DEFAULT_CURRENCY.to_string(),
                platform_fee_bps: onda_shared::api::DEFAULT_PLATFORM_FEE_BPS,
                created_at: String::new(),
                updated_at: String::new(),
            };
            db::tenants::insert(&mut *tx, &t).await?
        }
    };
    if recorded.as_deref() != Some(tenant.id.as_str()) {
        db::cluster::put_fact(&mut *tx, DEMO_TENANT_FACT, &tenant.id).await?;
    }
    Ok(tenant)
}

/// Makes sure the demo tenant, a working API key and the demo station exist, reusing what a
/// previous run made.
pub(super) async fn ensure_demo(
    db: &Db,
    previous: Option<&DevInfo>,
) -> anyhow::Result<(
    Tenant,
    String,
    onda_shared::api::Station,
    onda_shared::api::LiveStream,
)> {
    let mut tx = db.begin().await?;
    let tenant = demo_tenant(&mut tx, previous).await?;
    let reusable_key = match previous {
        Some(p) => db::keys::tenant_for_secret(&mut tx, &secrets::sha256_hex(&p.tenant_api_key))
            .await?
            .filter(|owner| *owner == tenant.id)
            .map(|_| p.tenant_api_key.clone()),
        None => None,
    };
    let api_key = match reusable_key {
        Some(k) => k,
        None => {
            issue(&mut tx, &tenant.id, "dev")
                .await
                .map_err(|e| anyhow::anyhow!("cannot issue the demo API key: {e}"))?
                .secret
        }
    };
    // The demo station: the one the previous run named if it is still the tenant's, else the
    // tenant's first (only ever the demo tenant's own).
    let remembered = match previous.map(|p| p.station_id.as_str()) {
        Some(id) if !id.is_empty() => db::stations::get(&mut tx, id, Some(&tenant.id)).await?,
        _ => None,
    };
    let existing = match remembered {
        Some(s) => Some(s),
        None => db::stations::list(&mut tx, Some(&tenant.id), 1, "")
            .await?
            .items
            .into_iter()
            .next(),
    };
    let station = match existing {
        Some(s) => s,
        None => create_for_tenant(
            &mut tx,
            &tenant.id,
            CreateStation {
                name: "Demo Station".to_string(),
                slug: None,
                description: "Onda's demo station".to_string(),
                genre: "Various".to_string(),
                autodj_enabled: true,
                max_listeners: None,
                mounts: vec![Mount {
                    path: "/radio.mp3".to_string(),
                    format: AudioFormat::Mp3,
                    bitrate_kbps: 128,
                }],
                region: String::new(),
                node_labels: Default::default(),
                // Its three tracks rotate every 4.5 minutes: a gap shorter than that.
                requests: RequestSettings {
                    enabled: true,
                    track_gap_minutes: 2,
                    artist_gap_minutes: 0,
                    per_ip_limit: 5,
                    per_ip_minutes: 10,
                },
                hls_preferred: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the demo station: {e}"))?,
    };
    let streams = db::live_streams::list(&mut tx, Some(&tenant.id), 1, "").await?;
    let stream = match streams.items.into_iter().next() {
        Some(s) => s,
        None => crate::api::streams::create_for_tenant(
            &mut tx,
            &tenant.id,
            onda_shared::api::CreateLiveStream {
                name: "Demo Live".to_string(),
                slug: None,
                // Public at first: the demo creator is made through the panel API once the
                // server runs, then the stream becomes theirs (`ensure_demo_money`).
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the demo live stream: {e}"))?,
    };
    tx.commit().await?;
    Ok((tenant, api_key, station, stream))
}

/// The demo library: (file, artist, title, ffmpeg lavfi source). Each is 90 s of a slowly
/// changing chord, so a listener can tell them apart and now-playing changes.
const DEMO_TRACKS: [(&str, &str, &str, &str); 3] = [
    (
        "first-light.mp3",
        "Onda Demo Band",
        "First Light",
        "aevalsrc=0.15*sin(2*PI*220*t)+0.1*sin(2*PI*277.18*t)+0.1*sin(2*PI*329.63*t)*(0.6+0.4*sin(2*PI*0.25*t)):s=44100:d=90",
    ),
    (
        "harbour-lights.mp3",
        "Onda Demo Band",
        "Harbour Lights",
        "aevalsrc=0.15*sin(2*PI*196*t)+0.1*sin(2*PI*246.94*t)+0.1*sin(2*PI*293.66*t)*(0.6+0.4*sin(2*PI*0.5*t)):s=44100:d=90",
    ),
    (
        "night-drive.mp3",
        "The Sample Rates",
        "Night Drive",
        "aevalsrc=0.15*sin(2*PI*174.61*t)+0.1*sin(2*PI*220*t)+0.1*sin(2*PI*261.63*t)*(0.6+0.4*sin(2*PI*1*t)):s=44100:d=90",
    ),
];

/// Gives the demo station its library unless it has one: tracks synthesized by ffmpeg (kept in
/// `demo-tracks/`), tagged, and uploaded through the panel API like a tenant would.
pub(super) async fn ensure_demo_library(
    api: &str,
    key: &str,
    station_id: &str,
    dir: &Path,
    db: &Db,
) -> anyhow::Result<()> {
    {
        let mut c = db.conn().await?;
        if !db::media::list(&mut c, station_id, "", 1, "")
            .await?
            .items
            .is_empty()
        {
            return Ok(());
        }
    }
    let tracks = dir.join("demo-tracks");
    std::fs::create_dir_all(&tracks)
        .with_context(|| format!("cannot create {}", tracks.display()))?;
    let client = onda_shared::http::client();
    for (file, artist, title, source) in DEMO_TRACKS {
        let path = tracks.join(file);
        if !path.is_file() {
            let out = tokio::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
                .args(["-f", "lavfi", "-i", source, "-ac", "2", "-b:a", "128k"])
                .args(["-metadata", &format!("artist={artist}")])
                .args(["-metadata", &format!("title={title}")])
                .args(["-metadata", "album=Onda Demo Tracks"])
                .arg(&path)
                .output()
                .await
                .context("cannot run ffmpeg (install it with `make dev`)")?;
            if !out.status.success() {
                let _ = std::fs::remove_file(&path);
                anyhow::bail!(
                    "ffmpeg could not make {file}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let body = tokio::fs::read(&path).await?;
        let resp = client
            .post(format!(
                "{api}/v1/stations/{station_id}/media?filename={file}"
            ))
            .bearer_auth(key)
            .body(body)
            .send()
            .await?;
        if !resp.status().is_success() {
            anyhow::bail!(
                "uploading {file} answered {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
    }
    tracing::info!(
        "the demo station's library has {} tracks",
        DEMO_TRACKS.len()
    );
    Ok(())
}

/// A demo end user with a sign-in link for the web app.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DemoUser {
    pub id: String,
    /// `creator` or `fan`.
    pub role: String,
    pub token: String,
    pub app_link: String,
    /// The demo stream's watch page, signed in as this user.
    #[serde(default)]
    pub watch_link: String,
}

/// The demo creator's subscription price (minor units of the demo tenant's currency).
pub const DEMO_SUBSCRIPTION_PRICE: i64 = 499;
/// What a minute of a call with the demo creator costs (they take calls from the start).
pub const DEMO_CALL_PRICE: i64 = 100;
/// The demo fan's starting balance.
pub const DEMO_FAN_BALANCE: i64 = 2000;
/// The idempotency key and reference of the demo fan's starting credit: fixed, so a second run
/// answers the first credit again instead of crediting twice.
const DEMO_CREDIT_KEY: &str = "onda-dev-demo-fan-starting-balance";

/// The demo creator and fan, made (or refreshed) through the panel API like a tenant's backend
/// would, each with a day-long user token and a sign-in link into the web app.
pub(super) async fn ensure_demo_users(
    api: &str,
    key: &str,
    stream_slug: &str,
) -> anyhow::Result<Vec<DemoUser>> {
    let client = onda_shared::http::client();
    let mut users = Vec::new();
    for (id, name, creator) in [
        ("demo-creator", "Demo Creator", true),
        ("demo-fan", "Demo Fan", false),
    ] {
        let mut profile = serde_json::json!({ "display_name": name, "creator": creator });
        if creator {
            profile["subscription_price"] = DEMO_SUBSCRIPTION_PRICE.into();
            profile["available_for_calls"] = true.into();
            profile["call_price_per_minute"] = DEMO_CALL_PRICE.into();
        }
        let put = client
            .put(format!("{api}/v1/users/{id}"))
            .bearer_auth(key)
            .json(&profile)
            .send()
            .await?;
        anyhow::ensure!(
            put.status().is_success(),
            "PUT /v1/users/{id}: {}",
            put.status()
        );
        let minted: onda_shared::api::UserToken = client
            .post(format!("{api}/v1/users/{id}/tokens"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "ttl_seconds": 86_400 }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        users.push(DemoUser {
            id: id.to_string(),
            role: if creator { "creator" } else { "fan" }.to_string(),
            app_link: format!("{api}/app/#token={}", minted.token),
            watch_link: format!("{api}/app/watch/{stream_slug}#token={}", minted.token),
            token: minted.token,
        });
    }
    Ok(users)
}

/// The money demo, through the panel API like a tenant's backend: the demo stream becomes the
/// demo creator's, for their subscribers (only while it has no creator, so a later change by
/// the creator or the tenant stays), and the demo fan's wallet is credited once with a fixed
/// key and reference (a second run credits nothing). The fan is not subscribed: the watch page
/// shows the paywall, and subscribing takes the price from that balance.
pub(super) async fn ensure_demo_money(
    api: &str,
    key: &str,
    stream: &onda_shared::api::LiveStream,
) -> anyhow::Result<()> {
    let client = onda_shared::http::client();
    if stream.creator_id.is_none() {
        let patch = client
            .patch(format!("{api}/v1/streams/{}", stream.id))
            .bearer_auth(key)
            .json(&serde_json::json!({ "access": "subscribers", "creator_id": "demo-creator" }))
            .send()
            .await?;
        anyhow::ensure!(
            patch.status().is_success(),
            "PATCH /v1/streams/{}: {}: {}",
            stream.id,
            patch.status(),
            patch.text().await.unwrap_or_default()
        );
    }
    let credit = client
        .post(format!("{api}/v1/users/demo-fan/wallet/credits"))
        .bearer_auth(key)
        .header("Idempotency-Key", DEMO_CREDIT_KEY)
        .json(&serde_json::json!({ "amount": DEMO_FAN_BALANCE, "reference": DEMO_CREDIT_KEY }))
        .send()
        .await?;
    anyhow::ensure!(
        credit.status().is_success(),
        "POST /v1/users/demo-fan/wallet/credits: {}: {}",
        credit.status(),
        credit.text().await.unwrap_or_default()
    );
    Ok(())
}
