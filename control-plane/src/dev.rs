//! `onda dev`: a control plane on SQLite with the in-process coordinator under `./.onda-dev/`,
//! the seed plans, a demo tenant, its API key and a demo station, and N local nodes (`onda agent`
//! child processes, joined automatically, each with its own edge port) so the demo station is on
//! the air on the AutoDJ with a synthesized demo library (a tone if ffmpeg cannot make it).
//! `dev.json` lists the URLs, tokens and nodes. A second run reuses the same database, CA, node identities, admin token and key.

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
/// The database record (`cluster_facts`) of which tenant is the demo tenant.
const DEMO_TENANT_FACT: &str = "dev_demo_tenant";

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
    #[serde(default)]
    pub nodes: Vec<DevNode>,
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
    let (tenant, api_key, station, stream) = ensure_demo(&db, previous.as_ref()).await?;

    let cluster = crate::config::ClusterConfig {
        listen: "127.0.0.1:0".to_string(),
        ca_dir: opts.dir.join("cluster-ca").display().to_string(),
        replica: "dev".to_string(),
        node_ttl_ms: 3_000,
        heartbeat_ms: 500,
        demo_tone: true,
        ..Default::default()
    };
    let cfg = Validated {
        listen: addr,
        max_body_bytes: 64 * 1024,
        database_url: database_url.clone(),
        max_connections: 5,
        admin_token: Some(admin_token.clone()),
        cluster: cluster.validate()?,
        media: crate::config::MediaConfig {
            dir: opts.dir.join("media").display().to_string(),
            ..Default::default()
        }
        .validate()?,
        nowplaying: Default::default(),
    };
    let running = server::start_with(listener, db.clone(), &cfg).await?;
    let cluster = running
        .cluster
        .as_ref()
        .context("dev mode runs with a cluster")?;
    let quic = cluster.quic_addr;
    // The demo station plays its AutoDJ library: made once, uploaded through the panel API.
    if let Err(e) = ensure_demo_library(
        &format!("http://{addr}"),
        &api_key,
        &station.id,
        &opts.dir,
        &db,
    )
    .await
    {
        tracing::warn!("the demo station has no music (it plays a tone instead): {e:#}");
    }
    let mut children = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=opts.nodes.max(1) {
        let name = format!("node-{i}");
        let port = if opts.edge_port == 0 {
            0
        } else {
            opts.edge_port
                .saturating_add(u16::try_from(i - 1).unwrap_or(0))
        };
        // RTMP next to the edge: 1935 for the first node when the edge has a fixed port.
        let rtmp_port = if port == 0 {
            0
        } else {
            1935u16.saturating_add(u16::try_from(i - 1).unwrap_or(0))
        };
        let child = spawn_node(
            &opts.dir,
            &name,
            port,
            rtmp_port,
            quic,
            &db,
            &cluster.cluster.ca.sha256,
        )
        .await?;
        nodes.push(DevNode {
            name,
            edge_url: String::new(),
            pid: child.id().unwrap_or(0),
        });
        children.push(child);
    }
    // Each node reports its edge URL when it connects.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for n in &mut nodes {
        while n.edge_url.is_empty() && tokio::time::Instant::now() < deadline {
            let mut c = db.conn().await?;
            let all = db::nodes::all(&mut c).await?;
            if let Some(found) = all
                .iter()
                .find(|x| x.name == n.name && x.status == onda_shared::api::NodeStatus::Ready)
            {
                n.edge_url = found.public_url.clone();
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        if n.edge_url.is_empty() {
            tracing::warn!(
                "{} did not connect within 30 s; see {}",
                n.name,
                opts.dir
                    .join("nodes")
                    .join(&n.name)
                    .join("agent.log")
                    .display()
            );
        }
    }
    // The demo live stream's ingest, once the leader placed it on a node.
    let mut rtmp_url = String::new();
    while rtmp_url.is_empty() && tokio::time::Instant::now() < deadline {
        let origin = cluster
            .cluster
            .view
            .get()
            .placement
            .stations
            .get(&stream.id)
            .map(|p| p.origin.clone());
        if let Some(origin) = origin {
            let mut c = db.conn().await?;
            if let Some(n) = db::nodes::get(&mut c, &origin).await?
                && !n.rtmp_url.is_empty()
            {
                rtmp_url = format!("{}/live", n.rtmp_url);
            }
        }
        if rtmp_url.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let mount = station
        .mounts
        .first()
        .map_or("/radio.mp3", |m| m.path.as_str());
    let info = DevInfo {
        api_url: format!("http://{addr}"),
        admin_token,
        tenant_id: tenant.id,
        tenant_api_key: api_key,
        listen_url: format!("http://{addr}/listen/{}{mount}", station.slug),
        nowplaying_url: format!("http://{addr}/api/nowplaying/{}", station.slug),
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
        watch_url: format!("http://{addr}/watch/{}.m3u8", stream.slug),
        nodes,
    };
    write_json(&json_path, &info)?;
    println!(
        "Onda dev is running.\n\
         \n  panel API      {api}/v1  (OpenAPI: {api}/openapi.json)\
         \n  admin token    {admin}\
         \n  tenant API key {key}  (tenant {tenant:?})\
         \n  demo station   {station}\
         \n  listen         {listen}\
         \n  live video     publish to {rtmp}/{stream_key}, watch {watch}\
         \n  nodes          {nodes}\
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
        rtmp = info.rtmp_url,
        stream_key = info.stream_key,
        watch = info.watch_url,
        nodes = info
            .nodes
            .iter()
            .map(|n| format!("{} {} (pid {})", n.name, n.edge_url, n.pid))
            .collect::<Vec<_>>()
            .join(", "),
        json = json_path.display(),
        dir = opts.dir.display(),
    );
    onda_shared::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    for child in &children {
        if let Some(pid) = child.id() {
            // SIGTERM lets each node stop its edge and tones cleanly.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for mut child in children {
        if tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    running.shutdown().await
}

/// Starts one local node as `onda agent` (this same binary), joining it on first use.
async fn spawn_node(
    dir: &Path,
    name: &str,
    edge_port: u16,
    rtmp_port: u16,
    quic: SocketAddr,
    db: &Db,
    ca_sha256: &str,
) -> anyhow::Result<tokio::process::Child> {
    let node_dir = std::path::absolute(dir.join("nodes").join(name))?;
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("cannot create {}", node_dir.display()))?;
    let state = node_dir.join("state");
    let config = format!(
        "[node]\nname = \"{name}\"\nregion = \"local\"\nstate_dir = \"{state}\"\n\n\
         [control_plane]\naddresses = [\"{quic}\"]\nmax_backoff_ms = 1000\n\n\
         [http]\nlisten = \"127.0.0.1:{edge_port}\"\n\n[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n",
        state = state.display(),
    );
    let config_path = node_dir.join("agent.toml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    // The node ends with this process, even when it is killed. Its parent-death signal is tied to
    // the thread that forks it: dev mode's own task, on a thread that lives as long as it does.
    let mut args = vec![
        "agent".to_string(),
        "--config".to_string(),
        config_path.display().to_string(),
        "--exit-with-parent".to_string(),
        std::process::id().to_string(),
    ];
    if !state.join("identity.json").exists() {
        let mut c = db.conn().await?;
        let token =
            crate::api::nodes::issue_join_token(&mut c, ca_sha256, &[quic.to_string()], name, 600)
                .await
                .map_err(|e| anyhow::anyhow!("cannot issue a join token: {e}"))?;
        args.push("--join".to_string());
        args.push(token.token.unwrap_or_default());
    }
    let log = std::fs::File::create(node_dir.join("agent.log"))?;
    let exe = std::env::current_exe().context("cannot find the onda binary")?;
    let child = tokio::process::Command::new(exe)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    tracing::info!(
        "started {name} (pid {:?}), log in {}",
        child.id(),
        node_dir.join("agent.log").display()
    );
    Ok(child)
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
) -> anyhow::Result<(
    Tenant,
    String,
    onda_shared::api::Station,
    onda_shared::api::LiveStream,
)> {
    let mut tx = db.begin().await?;
    // The demo tenant is the one a previous run recorded, by id (in the database, or in dev.json
    // for a directory from before that record): a name is no identity, since any tenant may be
    // called "Demo Radio", and neither is being the first tenant.
    let mut remembered = None;
    let recorded = db::cluster::fact(&mut tx, DEMO_TENANT_FACT).await?;
    for id in recorded
        .iter()
        .map(String::as_str)
        .chain(previous.map(|p| p.tenant_id.as_str()))
    {
        if remembered.is_none() && !id.is_empty() {
            remembered = db::tenants::get(&mut tx, id).await?;
        }
    }
    let tenant = match remembered {
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
    if recorded.as_deref() != Some(tenant.id.as_str()) {
        db::cluster::put_fact(&mut tx, DEMO_TENANT_FACT, &tenant.id).await?;
    }
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
                access: onda_shared::api::StreamAccess::Public,
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
async fn ensure_demo_library(
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
    let client = reqwest::Client::new();
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
