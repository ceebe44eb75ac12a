//! The real `onda` binary as users run it: dev mode, the control plane from a config file with
//! environment overrides, configuration errors, busy ports and graceful shutdown.

use onda_tests::db::{Backend, TestDb};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use serde_json::Value;
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

async fn get(url: &str, token: &str) -> (u16, Value) {
    let r = onda_shared::http::client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, token: &str) -> (u16, Value) {
    let r = onda_shared::http::client()
        .post(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The money demo of dev mode as the demo fan sees it: the demo stream is for the demo
/// creator's subscribers at 499, the fan is not one, and their wallet holds the starting
/// balance (credited once, however many runs). Answers the demo users' tokens by id.
async fn assert_money_demo(info: &Value) -> std::collections::HashMap<String, String> {
    let api = info["api_url"].as_str().expect("api_url");
    let tokens: std::collections::HashMap<String, String> = info["demo_users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            let id = u["id"].as_str().expect("id").to_string();
            (id, u["token"].as_str().expect("token").to_string())
        })
        .collect();
    let fan = &tokens["demo-fan"];
    let slug = info["watch_url"]
        .as_str()
        .and_then(|w| w.rsplit('/').next())
        .and_then(|f| f.strip_suffix(".m3u8"))
        .expect("slug");
    assert_eq!(
        info["watch_page_url"].as_str(),
        Some(format!("{api}/app/watch/{slug}").as_str()),
        "{info}"
    );
    let (status, wallet) = get(&format!("{api}/v1/me/wallet"), fan).await;
    assert_eq!(
        (status, &wallet["balance"]),
        (200, &Value::from(2000)),
        "{wallet}"
    );
    let (status, view) = get(&format!("{api}/v1/me/streams/{slug}"), fan).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["access"], "subscribers", "{view}");
    assert_eq!(view["creator"]["id"], "demo-creator", "{view}");
    assert_eq!(
        view["entitled"], false,
        "the demo fan is not subscribed: {view}"
    );
    assert_eq!(view["grant"]["action"], "subscribe", "{view}");
    assert_eq!(view["grant"]["price"], 499, "{view}");
    for u in info["demo_users"].as_array().into_iter().flatten() {
        let link = u["watch_link"].as_str().expect("watch_link");
        assert!(
            link.starts_with(&format!("{api}/app/watch/{slug}#token=")),
            "{link}"
        );
    }
    tokens
}

/// The base URL a control plane logged as its panel API address.
async fn logged_address(p: &mut Proc) -> String {
    p.wait_log_word("panel API listening on ", START).await
}

#[tokio::test]
async fn dev_mode_serves_demo_data_and_reuses_it() {
    let mut dev = Proc::start(
        "onda dev",
        &["dev", "--listen", "127.0.0.1:0", "--edge-port", "0"],
        &[],
    );
    let info = dev.wait_json(".onda-dev/dev.json", START).await;
    for key in [
        "api_url",
        "admin_token",
        "tenant_api_key",
        "station_id",
        "listen_url",
        "nowplaying_url",
        "edge_url",
        "rtmp_url",
        "stream_key",
        "watch_url",
        "app_url",
        "socketio_url",
    ] {
        assert!(
            info[key].as_str().is_some_and(|v| !v.is_empty()),
            "dev.json lacks {key}: {info}"
        );
    }
    let api = info["api_url"].as_str().expect("api_url").to_string();
    let key = info["tenant_api_key"].as_str().expect("key").to_string();
    let (status, stations) = get(&format!("{api}/v1/stations"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(stations["items"][0]["id"], info["station_id"]);
    let (status, me) = get(&format!("{api}/v1/me"), &key).await;
    assert_eq!(
        (status, me["tenant"]["name"].as_str()),
        (200, Some("Demo Radio"))
    );
    let (status, _) = get(
        &format!("{api}/v1/tenants"),
        info["admin_token"].as_str().expect("t"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        dev.stdout().contains(&key),
        "the key is printed for the user"
    );
    // A demo creator and fan: their tokens act as them, their links open the web app.
    let users = info["demo_users"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = users.iter().filter_map(|u| u["role"].as_str()).collect();
    assert_eq!(roles, ["creator", "fan"], "{info}");
    for u in &users {
        let token = u["token"].as_str().expect("token");
        let (status, me) = get(&format!("{api}/v1/me"), token).await;
        assert_eq!((status, &me["user"]["id"]), (200, &u["id"]), "{me}");
        let link = u["app_link"].as_str().expect("app_link");
        assert!(link.starts_with(&format!("{api}/app/#token=")), "{link}");
    }
    // The demo station is on the air through the redirector, from the local node.
    assert_eq!(info["nodes"].as_array().map(Vec::len), Some(1), "{info}");
    let listen = info["listen_url"].as_str().expect("listen_url");
    assert_eq!(probe_codec(listen).await, "mp3");
    // It plays the demo library on the AutoDJ: now-playing names a demo track.
    let np_url = info["nowplaying_url"].as_str().expect("nowplaying_url");
    let np = wait_for("a demo track in now-playing", START, || async {
        let np: Value = onda_shared::http::get(np_url)
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        np["now_playing"]["song"]["text"]
            .as_str()
            .filter(|t| t.starts_with("Onda Demo Band - ") || t.starts_with("The Sample Rates - "))
            .map(str::to_string)
    })
    .await;
    let sid = info["station_id"].as_str().expect("station id");
    let (status, library) = get(&format!("{api}/v1/stations/{sid}/media"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(
        library["items"].as_array().map(Vec::len),
        Some(3),
        "{np}: {library}"
    );
    // The demo station takes song requests: its three tracks are requestable.
    let slug = info["station_slug"].as_str().expect("station slug");
    let (status, requestable) = get(&format!("{api}/api/station/{slug}/requests"), "").await;
    assert_eq!(status, 200, "{requestable}");
    assert_eq!(requestable["total"], 3, "{requestable}");
    // The money demo; the demo stream is for subscribers, so the creator's playback token
    // opens it (the bare watch_url is refused by the edge).
    let tokens = assert_money_demo(&info).await;
    let slug = info["watch_page_url"]
        .as_str()
        .and_then(|w| w.rsplit('/').next())
        .expect("slug");
    let (_, view) = get(
        &format!("{api}/v1/me/streams/{slug}"),
        &tokens["demo-creator"],
    )
    .await;
    let (status, played) = post(
        &format!(
            "{api}/v1/me/streams/{}/playback",
            view["id"].as_str().expect("id")
        ),
        &tokens["demo-creator"],
    )
    .await;
    assert_eq!(status, 201, "{played}");
    // The demo live stream: ffmpeg publishes to dev.json's rtmp_url and stream_key, and
    // ffprobe finds video and audio at its watch_url with the creator's token.
    let publish = format!(
        "{}/{}",
        info["rtmp_url"].as_str().expect("rtmp_url"),
        info["stream_key"].as_str().expect("stream_key")
    );
    let _publisher = onda_tests::edge::ffmpeg_rtmp(&publish, 25);
    let watch = format!(
        "{api}{}",
        played["watch_path"].as_str().expect("watch_path")
    );
    let probed = wait_for("the demo live stream watchable", START, || async {
        let text = onda_shared::http::get(&watch)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        if !text.contains("#EXTINF") {
            return None;
        }
        let out = tokio::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_type",
                "-of",
                "csv",
                &watch,
            ])
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.contains("video") && text.contains("audio")).then_some(text)
    })
    .await;
    assert!(probed.contains("video"), "{probed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = dev.path().join(".onda-dev");
        let mode = std::fs::metadata(dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the dev directory holds secrets: {mode:o}");
    }

    dev.terminate();
    let exit = dev.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exit.success(),
        "SIGTERM ends dev mode cleanly: {exit}\n{}",
        dev.logs()
    );

    // A second run in the same directory finds the same data and credentials, also when another
    // tenant of the same name, with a station and a stream, sorts before the demo tenant.
    let dir = dev.into_dir();
    other_demo_radio(&dir.path().join(".onda-dev/onda.db")).await;
    let mut again = Proc::start_in(
        "onda dev (2nd)",
        dir,
        &["dev", "--listen", "127.0.0.1:0", "--edge-port", "0"],
        &[],
    );
    let info2 = wait_for("dev.json rewritten with a new address", START, || {
        let p = again.path().join(".onda-dev/dev.json");
        let api = api.clone();
        async move {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            (v["api_url"].as_str() != Some(api.as_str())).then_some(v)
        }
    })
    .await;
    for k in [
        "admin_token",
        "tenant_api_key",
        "station_id",
        "station_slug",
        "tenant_id",
        "stream_key",
    ] {
        assert_eq!(info2[k], info[k], "{k} changed across runs");
    }
    // The fan was credited once over both runs; the stream is still the creator's.
    assert_money_demo(&info2).await;
    let api2 = info2["api_url"].as_str().expect("api_url");
    let (_, stations) = get(&format!("{api2}/v1/stations"), &key).await;
    assert_eq!(
        stations["items"].as_array().map(Vec::len),
        Some(1),
        "no duplicate demo station"
    );
    let (_, tenants) = get(
        &format!("{api2}/v1/tenants"),
        info["admin_token"].as_str().expect("t"),
    )
    .await;
    assert_eq!(
        tenants["items"].as_array().map(Vec::len),
        Some(2),
        "no duplicate demo tenant (the other one is the tenant made between the runs)"
    );
    assert!(again.try_exit().is_none());
}

/// Another tenant called "Demo Radio", whose id sorts first, with a station and a live stream,
/// written into a stopped dev mode's database.
async fn other_demo_radio(db_path: &std::path::Path) {
    use onda_control_plane::{api, db};
    use onda_shared::api::{AudioFormat, CreateLiveStream, CreateStation, Mount, StreamAccess};
    use sqlx::Connection as _;
    // A plain connection: the database stays as the binary migrated it.
    sqlx::any::install_default_drivers();
    let mut tx = sqlx::AnyConnection::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .expect("the dev database");
    let t = onda_shared::api::Tenant {
        id: "tnt_0".to_string(),
        name: onda_control_plane::dev::DEMO_TENANT.to_string(),
        email: "other@example.com".to_string(),
        plan_id: "plan_premium".to_string(),
        status: onda_shared::api::TenantStatus::Active,
        currency: onda_shared::api::DEFAULT_CURRENCY.to_string(),
        platform_fee_bps: onda_shared::api::DEFAULT_PLATFORM_FEE_BPS,
        created_at: String::new(),
        updated_at: String::new(),
    };
    db::tenants::insert(&mut tx, &t).await.expect("tenant");
    let station = CreateStation {
        name: "Not The Demo".to_string(),
        slug: Some("not-the-demo".to_string()),
        description: String::new(),
        genre: String::new(),
        autodj_enabled: false,
        max_listeners: None,
        mounts: vec![Mount {
            path: "/radio.mp3".to_string(),
            format: AudioFormat::Mp3,
            bitrate_kbps: 64,
        }],
        region: String::new(),
        node_labels: Default::default(),
        requests: Default::default(),
        hls_preferred: false,
    };
    api::stations::create_for_tenant(&mut tx, &t.id, station)
        .await
        .expect("station");
    let stream = CreateLiveStream {
        name: "Not The Demo".to_string(),
        slug: Some("not-the-demo".to_string()),
        access: StreamAccess::Public,
        creator_id: None,
        price: None,
    };
    api::streams::create_for_tenant(&mut tx, &t.id, stream)
        .await
        .expect("stream");
    tx.close().await.expect("close");
}

/// ffprobe's codec of a URL (following redirects), retried while the station comes on the air.
async fn probe_codec(url: &str) -> String {
    wait_for("ffprobe to find audio", START, || async {
        let codec = onda_tests::cluster::ffprobe_codec(url).await;
        (!codec.is_empty()).then_some(codec)
    })
    .await
}

#[tokio::test]
async fn dev_mode_with_several_nodes_survives_killing_one() {
    let mut dev = Proc::dev(3, &[]);
    let info = dev.wait_json(".onda-dev/dev.json", START).await;
    let nodes = info["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3, "{info}");
    let listen = info["listen_url"].as_str().expect("listen_url").to_string();
    assert_eq!(probe_codec(&listen).await, "mp3");
    // Which node plays it: the redirector's target.
    let client = onda_shared::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let location = |client: reqwest::Client, listen: String| async move {
        let r = client.get(&listen).send().await.ok()?;
        (r.status().as_u16() == 302).then(|| {
            r.headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_string)
        })?
    };
    let before = location(client.clone(), listen.clone())
        .await
        .expect("a redirect");
    let carrier = nodes
        .iter()
        .find(|n| before.starts_with(n["edge_url"].as_str().unwrap_or("-")))
        .expect("the redirect names a dev node");
    let pid = carrier["pid"].as_u64().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let after = wait_for("the station on another node", START, || {
        let (client, listen, before) = (client.clone(), listen.clone(), before.clone());
        async move {
            let l = location(client, listen).await?;
            (l != before).then_some(l)
        }
    })
    .await;
    assert_ne!(after, before);
    assert_eq!(probe_codec(&listen).await, "mp3");
    dev.terminate();
    let exit = dev.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "{}", dev.logs());
}

/// Whether a process runs (a zombie waiting to be reaped has ended).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[tokio::test]
async fn dev_mode_nodes_end_when_dev_is_killed() {
    let mut dev = Proc::start(
        "onda dev",
        &["dev", "--listen", "127.0.0.1:0", "--edge-port", "0"],
        &[],
    );
    let info = dev.wait_json(".onda-dev/dev.json", START).await;
    let pids: Vec<String> = info["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["pid"].as_u64().expect("pid").to_string())
        .collect();
    assert!(!pids.is_empty(), "{info}");
    assert!(pids.iter().all(|p| running(p)), "{info}");
    // SIGKILL to dev alone (not its process group): nothing of dev mode runs to stop the nodes.
    dev.signal("KILL");
    dev.wait_exit(START).await;
    wait_for("every node of a killed dev mode to end", START, || {
        let alive: Vec<&String> = pids.iter().filter(|p| running(p)).collect();
        std::future::ready(alive.is_empty().then_some(()))
    })
    .await;
}

#[tokio::test]
async fn busy_port_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let port = addr.rsplit(':').next().expect("port").to_string();

    let mut dev = Proc::start("onda dev", &["dev", "--listen", &addr], &[]);
    let exit = dev.wait_exit(START).await;
    assert!(!exit.success());
    let err = dev.stderr();
    assert!(
        err.contains("already in use") && err.contains(&port) && err.contains("--listen"),
        "{err}"
    );
    assert!(!dev.path().join(".onda-dev/dev.json").exists());

    let mut cp = Proc::start(
        "control plane",
        &["control-plane"],
        &[
            ("ONDA_HTTP_LISTEN", &addr),
            ("ONDA_DATABASE_URL", "sqlite://cp.db"),
        ],
    );
    let exit = cp.wait_exit(START).await;
    assert!(!exit.success());
    let err = cp.stderr();
    assert!(
        err.contains("already in use") && err.contains(&port) && err.contains("ONDA_HTTP_LISTEN"),
        "{err}"
    );
    drop(holder);
}

#[tokio::test]
async fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[http]\nlisten = \"127.0.0.1:0\"\nlistne = \"oops\"\n",
    )
    .expect("write");
    let bad = bad.display().to_string();
    let mut p = Proc::start("control plane", &["control-plane", "--config", &bad], &[]);
    assert!(!p.wait_exit(START).await.success());
    assert!(p.stderr().contains("listne"), "{}", p.stderr());

    let mut p = Proc::start(
        "control plane",
        &["control-plane"],
        &[("ONDA_DATABASE_UR", "sqlite://x.db")],
    );
    assert!(!p.wait_exit(START).await.success());
    assert!(
        p.stderr().contains("ONDA_DATABASE_UR") && p.stderr().contains("ONDA_DATABASE_URL"),
        "{}",
        p.stderr()
    );

    // A misspelt section is a typo to report, not a variable to ignore.
    let mut p = Proc::start(
        "control plane",
        &["control-plane"],
        &[("ONDA_DATABSE_URL", "postgres://x/y")],
    );
    assert!(!p.wait_exit(START).await.success());
    assert!(p.stderr().contains("ONDA_DATABSE_URL"), "{}", p.stderr());
    assert!(!p.path().join("onda.db").exists(), "nothing was created");

    let mut p = Proc::start(
        "control plane",
        &["control-plane"],
        &[
            ("ONDA_HTTP_LISTEN", "127.0.0.1:0"),
            ("ONDA_DATABASE_URL", "sqlite::memory:"),
        ],
    );
    assert!(!p.wait_exit(START).await.success());
    assert!(
        p.stderr().contains("in-memory SQLite is not supported"),
        "{}",
        p.stderr()
    );

    let mut p = Proc::start(
        "control plane",
        &["control-plane"],
        &[("ONDA_HTTP_LISTEN", "not-an-address")],
    );
    assert!(!p.wait_exit(START).await.success());
    assert!(p.stderr().contains("http.listen"), "{}", p.stderr());

    let mut p = Proc::start(
        "control plane",
        &["control-plane", "--config", "/nonexistent/cp.toml"],
        &[],
    );
    assert!(!p.wait_exit(START).await.success());
    assert!(
        p.stderr().contains("/nonexistent/cp.toml"),
        "{}",
        p.stderr()
    );

    let mut p = Proc::start(
        "control plane",
        &["control-plane"],
        &[
            ("ONDA_HTTP_LISTEN", "127.0.0.1:0"),
            ("ONDA_DATABASE_URL", "mysql://nope"),
        ],
    );
    assert!(!p.wait_exit(START).await.success());
    assert!(p.stderr().contains("mysql://nope"), "{}", p.stderr());
}

async fn serve_from_config_file(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("cp.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\nlisten = \"127.0.0.1:9\"\n\n[database]\nurl = \"{}\"\nmax_connections = 4\n",
            db.url
        ),
    )
    .expect("write");
    let token = "an-admin-token-for-this-test";
    let cfg = cfg.display().to_string();
    // The environment overrides the file's (unusable) port.
    let mut p = Proc::start(
        "control plane",
        &["control-plane", "--config", &cfg],
        &[
            ("ONDA_HTTP_LISTEN", "127.0.0.1:0"),
            ("ONDA_CLUSTER_LISTEN", "127.0.0.1:0"),
            ("ONDA_AUTH_ADMIN_TOKEN", token),
        ],
    );
    let addr = logged_address(&mut p).await;
    let base = addr;
    wait_for("readiness", START, || {
        let url = format!("{base}/readyz");
        async move { (get(&url, "").await.0 == 200).then_some(()) }
    })
    .await;
    let (status, plans) = get(&format!("{base}/v1/plans"), token).await;
    assert_eq!(status, 200);
    assert_eq!(
        plans["items"].as_array().map(Vec::len),
        Some(3),
        "seed plans: {plans}"
    );
    assert_eq!(get(&format!("{base}/v1/plans"), "wrong-token").await.0, 401);
    p.terminate();
    let exit = p.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exit.success(),
        "graceful stop on SIGTERM: {exit}\n{}",
        p.logs()
    );
    assert!(p.stderr().contains("stopped"), "{}", p.stderr());
}

#[tokio::test]
async fn control_plane_serves_from_config_file_on_sqlite() {
    serve_from_config_file(Backend::Sqlite).await;
}

#[tokio::test]
async fn control_plane_serves_from_config_file_on_postgres() {
    serve_from_config_file(Backend::Postgres).await;
}

#[tokio::test]
async fn an_agent_that_never_joined_says_how_to_join() {
    let mut p = Proc::start("agent", &["agent"], &[("ONDA_HTTP_LISTEN", "127.0.0.1:0")]);
    assert!(!p.wait_exit(START).await.success());
    let err = p.stderr();
    assert!(
        err.contains("has not joined a cluster yet") && err.contains("--join"),
        "{err}"
    );
}
