//! `onda dev`: a control plane on SQLite under `./.onda-dev/` with the seed plans, a demo tenant,
//! its API key and a demo station, and `dev.json` listing the URLs and tokens. A second run
//! reuses the same database, admin token and key.

use crate::api::keys::issue;
use crate::api::stations::create_for_tenant;
use crate::config::Validated;
use crate::db::{self, Db};
use crate::secrets;
use crate::server;
use anyhow::Context as _;
use onda_shared::api::{AudioFormat, CreateStation, Mount, Tenant, TenantStatus};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEMO_TENANT: &str = "Demo Radio";

/// What `dev.json` holds; later issues add the edge, listen and RTMP URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevInfo {
    pub api_url: String,
    pub admin_token: String,
    pub tenant_id: String,
    pub tenant_api_key: String,
    pub station_id: String,
    pub station_slug: String,
    pub database_url: String,
}

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub dir: PathBuf,
    pub listen: SocketAddr,
}

fn read_previous(path: &Path) -> Option<DevInfo> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs dev mode until SIGINT/SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    // dev.json and the database hold the admin token and keys: only the user may read them.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&opts.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", opts.dir.display()))?;
    }
    let json_path = opts.dir.join("dev.json");
    let previous = read_previous(&json_path);

    // Bind before touching anything, so a busy port is the first and only error.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "cannot listen on {}: port {} is already in use; pick another with \
                     `onda dev --listen 127.0.0.1:PORT` or ONDA_DEV_LISTEN",
                    opts.listen,
                    opts.listen.port()
                )
            } else {
                server::bind_error(opts.listen, &e)
            }
        })?;
    let addr = listener.local_addr()?;

    let db_path = opts.dir.join("onda.db");
    let database_url = format!("sqlite://{}", db_path.display());
    let db = Db::connect(&database_url, 5).await?;
    let admin_token = previous
        .as_ref()
        .map(|p| p.admin_token.clone())
        .filter(|t| t.len() >= 16)
        .unwrap_or_else(secrets::new_admin_token);
    let (tenant, api_key, station) = ensure_demo(&db, previous.as_ref()).await?;

    let cfg = Validated {
        listen: addr,
        max_body_bytes: 64 * 1024,
        database_url: database_url.clone(),
        max_connections: 5,
        admin_token: Some(admin_token.clone()),
        cluster: None,
    };
    let running = server::start_with(listener, db, &cfg).await?;
    let info = DevInfo {
        api_url: format!("http://{addr}"),
        admin_token,
        tenant_id: tenant.id,
        tenant_api_key: api_key,
        station_id: station.id,
        station_slug: station.slug,
        database_url,
    };
    write_json(&json_path, &info)?;
    println!(
        "Onda dev is running.\n\
         \n  panel API      {api}/v1  (OpenAPI: {api}/openapi.json)\
         \n  admin token    {admin}\
         \n  tenant API key {key}  (tenant {tenant:?})\
         \n  demo station   {station}\
         \n  metrics        {api}/metrics\
         \n\nThe same values are in {json}. Try:\
         \n  curl -H 'Authorization: Bearer {key}' {api}/v1/stations\
         \n\nCtrl-C stops it; the next `onda dev` reuses {dir}.",
        api = info.api_url,
        admin = info.admin_token,
        key = info.tenant_api_key,
        tenant = DEMO_TENANT,
        station = info.station_id,
        json = json_path.display(),
        dir = opts.dir.display(),
    );
    onda_shared::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}

fn write_json(path: &Path, info: &DevInfo) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(info)?;
    std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Makes sure the demo tenant, a working API key and the demo station exist, reusing what a
/// previous run made.
async fn ensure_demo(
    db: &Db,
    previous: Option<&DevInfo>,
) -> anyhow::Result<(Tenant, String, onda_shared::api::Station)> {
    let mut tx = db.begin().await?;
    let tenant = match db::tenants::find_by_name(&mut tx, DEMO_TENANT).await? {
        Some(t) => t,
        None => {
            let plan = db::plans::get(&mut tx, "plan_premium")
                .await?
                .context("the seed plan plan_premium is missing from the dev database")?;
            let t = Tenant {
                id: secrets::new_id("tnt"),
                name: DEMO_TENANT.to_string(),
                email: "demo@example.com".to_string(),
                plan_id: plan.id,
                status: TenantStatus::Active,
                created_at: String::new(),
                updated_at: String::new(),
            };
            db::tenants::insert(&mut tx, &t).await?
        }
    };
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
    let existing = db::stations::list(&mut tx, Some(&tenant.id), 1, "").await?;
    let station = match existing.items.into_iter().next() {
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
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the demo station: {e}"))?,
    };
    tx.commit().await?;
    Ok((tenant, api_key, station))
}
