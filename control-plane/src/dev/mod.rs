//! `onda dev`: a control plane on SQLite with the in-process coordinator under `./.onda-dev/`,
//! the seed plans, a demo tenant, its API key and a demo station, and N local nodes (`onda agent`
//! child processes, joined automatically, each with its own edge port) so the demo station is on
//! the air on the AutoDJ with a synthesized demo library (a tone if ffmpeg cannot make it).
//! `dev.json` lists the URLs, tokens and nodes. A second run reuses the same database, CA, node identities, admin token and key.

mod demo;
mod nodes;

pub use demo::DEMO_TENANT;

use crate::config::Validated;
use crate::db::{self, Db};
use crate::secrets;
use crate::server;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What `dev.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevInfo {
    pub api_url: String,
    pub admin_token: String,
    pub tenant_id: String,
    pub tenant_api_key: String,
    pub station_id: String,
    pub station_slug: String,
    pub database_url: String,
    /// The demo station's public URL through the redirector.
    #[serde(default)]
    pub listen_url: String,
    /// The demo station's public now-playing JSON (its SSE feed: this URL + `/events`).
    #[serde(default)]
    pub nowplaying_url: String,
    /// The demo station's public page (player, now playing, history, requests).
    #[serde(default)]
    pub station_page_url: String,
    /// The demo station's embeddable player (put it in an `<iframe>`; the panel's
    /// `GET /v1/stations/{id}/embed` writes the snippet).
    #[serde(default)]
    pub embed_url: String,
    /// The first node's edge.
    #[serde(default)]
    pub edge_url: String,
    #[serde(default)]
    pub control_channel: String,
    /// Where the demo live stream is published: the RTMP ingest of the node carrying it (OBS
    /// "Server"); publish to `{rtmp_url}/{stream_key}`.
    #[serde(default)]
    pub rtmp_url: String,
    #[serde(default)]
    pub stream_key: String,
    /// The demo live stream's HLS playlist through the redirector.
    #[serde(default)]
    pub watch_url: String,
    /// The demo live stream's watch page in the web app (sign in first: each demo user's
    /// `watch_link` opens it signed in).
    #[serde(default)]
    pub watch_page_url: String,
    #[serde(default)]
    pub nodes: Vec<DevNode>,
    /// The web app for fans and creators.
    #[serde(default)]
    pub app_url: String,
    /// Where Socket.io clients connect (`io(socketio_url, { auth: { token } })`; the path is
    /// `/socket.io/`).
    #[serde(default)]
    pub socketio_url: String,
    /// A demo creator and a demo fan with their user tokens and web app sign-in links.
    #[serde(default)]
    pub demo_users: Vec<demo::DemoUser>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevNode {
    pub name: String,
    pub edge_url: String,
    pub pid: u32,
}

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// How many local nodes (agent processes) to run.
    pub nodes: usize,
    /// Edge port of the first node (the next ones count up); 0: any free port.
    pub edge_port: u16,
    /// The built web app (`web/dist`).
    pub app_dir: PathBuf,
}

fn read_previous(path: &Path) -> Option<DevInfo> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs dev mode until SIGINT/SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    prepare_dir(&opts.dir)?;
    let json_path = opts.dir.join("dev.json");
    let previous = read_previous(&json_path);
    // Bind before touching anything, so a busy port is the first and only error.
    let listener = bind(opts.listen).await?;
    let addr = listener.local_addr()?;

    let database_url = format!("sqlite://{}", opts.dir.join("onda.db").display());
    let db = Db::connect(&database_url, 5).await?;
    let admin_token = previous
        .as_ref()
        .map(|p| p.admin_token.clone())
        .filter(|t| t.len() >= 16)
        .unwrap_or_else(secrets::new_admin_token);
    let (tenant, api_key, station, stream) = demo::ensure_demo(&db, previous.as_ref()).await?;
    let mut cfg = config(&opts.dir, addr, &database_url, &admin_token)?;
    cfg.app_dir.clone_from(&opts.app_dir);
    let running = server::start_with(listener, db.clone(), &cfg).await?;
    let cluster = running
        .cluster
        .as_ref()
        .context("dev mode runs with a cluster")?;
    let quic = cluster.quic_addr;
    // The demo station plays its AutoDJ library: made once, uploaded through the panel API.
    let api_url = format!("http://{addr}");
    if let Err(e) = demo::ensure_demo_library(&api_url, &api_key, &station.id, &opts.dir, &db).await
    {
        tracing::warn!("the demo station has no music (it plays a tone instead): {e:#}");
    }
    let demo_users = demo::ensure_demo_users(&api_url, &api_key, &stream.slug).await?;
    demo::ensure_demo_money(&api_url, &api_key, &stream).await?;
    let ca = &cluster.cluster.ca.sha256;
    let (children, mut nodes) =
        nodes::spawn_all(&opts.dir, opts.nodes, opts.edge_port, quic, &db, ca).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    nodes::wait_edges(&mut nodes, &db, &opts.dir, deadline).await?;
    let rtmp_url = ingest_url(&cluster.cluster, &db, &stream.id, deadline).await?;
    let mount = station
        .mounts
        .first()
        .map_or("/radio.mp3", |m| m.path.as_str());
    let info = DevInfo {
        listen_url: format!("{api_url}/listen/{}{mount}", station.slug),
        nowplaying_url: format!("{api_url}/api/nowplaying/{}", station.slug),
        station_page_url: format!("{api_url}/stations/{}", station.slug),
        embed_url: format!("{api_url}/embed/{}", station.slug),
        watch_url: format!("{api_url}/watch/{}.m3u8", stream.slug),
        watch_page_url: format!("{api_url}/app/watch/{}", stream.slug),
        app_url: format!("{api_url}/app/"),
        socketio_url: api_url.clone(),
        demo_users,
        api_url,
        admin_token,
        tenant_id: tenant.id,
        tenant_api_key: api_key,
        station_id: station.id,
        station_slug: station.slug,
        database_url,
        edge_url: nodes
            .first()
            .map(|n| n.edge_url.clone())
            .unwrap_or_default(),
        control_channel: quic.to_string(),
        rtmp_url,
        stream_key: stream.stream_key.clone(),
        nodes,
    };
    write_json(&json_path, &info)?;
    print_banner(&info, &json_path, &opts.dir);
    onda_shared::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    nodes::stop_all(children).await;
    running.shutdown().await
}

/// Creates dev mode's directory, readable by the user only: `dev.json` and the database hold
/// the admin token and keys.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen on {listen}: port {} is already in use; pick another with \
                 `onda dev --listen 127.0.0.1:PORT` or ONDA_DEV_LISTEN",
                listen.port()
            )
        } else {
            server::bind_error(listen, &e)
        }
    })
}

/// The control plane's configuration in dev mode: SQLite and the media under `dir`, a cluster
/// with short leases and the demo tone.
fn config(
    dir: &Path,
    addr: SocketAddr,
    database_url: &str,
    admin_token: &str,
) -> anyhow::Result<Validated> {
    let cluster = crate::config::ClusterConfig {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ca_dir: dir.join("cluster-ca"),
        replica: "dev".to_string(),
        node_ttl_ms: 3_000,
        heartbeat_ms: 500,
        demo_tone: true,
        ..Default::default()
    };
    Ok(Validated {
        listen: addr,
        max_body_bytes: 64 * 1024,
        app_dir: crate::config::HttpConfig::default().app_dir,
        public_url: None,
        database_url: database_url.to_string(),
        max_connections: 5,
        admin_token: Some(admin_token.to_string()),
        cluster: cluster.validate()?,
        media: crate::config::MediaConfig {
            dir: dir.join("media"),
            ..Default::default()
        }
        .validate()?,
        nowplaying: Default::default(),
        // A developer's webhook receiver runs on their own machine.
        webhooks: crate::config::WebhookSettings {
            allow_private: true,
            ..Default::default()
        },
        realtime: Default::default(),
        turn: Default::default(),
    })
}

/// The demo live stream's ingest (`rtmp://…/live`), once the leader placed it on a node; empty
/// if that did not happen by `deadline`.
async fn ingest_url(
    cluster: &crate::cluster::Cluster,
    db: &Db,
    stream_id: &str,
    deadline: tokio::time::Instant,
) -> anyhow::Result<String> {
    while tokio::time::Instant::now() < deadline {
        let origin = cluster
            .view
            .get()
            .placement
            .stations
            .get(stream_id)
            .map(|p| p.origin.clone());
        if let Some(origin) = origin {
            let mut c = db.conn().await?;
            if let Some(n) = db::nodes::get(&mut c, &origin).await?
                && !n.rtmp_url.is_empty()
            {
                return Ok(format!("{}/live", n.rtmp_url));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(String::new())
}

fn print_banner(info: &DevInfo, json_path: &Path, dir: &Path) {
    println!(
        "Onda dev is running.\n\
         \n  panel API      {api}/v1  (OpenAPI: {api}/openapi.json)\
         \n  admin token    {admin}\
         \n  tenant API key {key}  (tenant {tenant:?})\
         \n  demo station   {station}\
         \n  listen         {listen}\
         \n  station page   {page} (embed: {embed})\
         \n  live video     publish to {rtmp}/{stream_key}, watch {watch}\
         \n  watch page     {watch_page} (subscribers of the demo creator; the demo fan has {balance})\
         \n  nodes          {nodes}\
         \n  web app        {app}{users}\
         \n  metrics        {api}/metrics\
         \n\nThe same values are in {json}. Try:\
         \n  curl -H 'Authorization: Bearer {key}' {api}/v1/stations\
         \n\nCtrl-C stops it; the next `onda dev` reuses {dir}.",
        api = info.api_url,
        admin = info.admin_token,
        key = info.tenant_api_key,
        tenant = DEMO_TENANT,
        station = info.station_id,
        listen = info.listen_url,
        page = info.station_page_url,
        embed = info.embed_url,
        rtmp = info.rtmp_url,
        stream_key = info.stream_key,
        watch = info.watch_url,
        watch_page = info.watch_page_url,
        balance = demo::DEMO_FAN_BALANCE,
        nodes = info
            .nodes
            .iter()
            .map(|n| format!("{} {} (pid {})", n.name, n.edge_url, n.pid))
            .collect::<Vec<_>>()
            .join(", "),
        json = json_path.display(),
        dir = dir.display(),
        app = info.app_url,
        users = info
            .demo_users
            .iter()
            .map(|u| {
                format!(
                    "\n    sign in as the demo {}: {}\n      (its watch page: {})",
                    u.role, u.app_link, u.watch_link
                )
            })
            .collect::<String>(),
    );
}

fn write_json(path: &Path, info: &DevInfo) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(info)?;
    std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
