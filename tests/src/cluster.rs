//! Real clusters for tests: `onda control-plane` processes (SQLite or PostgreSQL, in-memory or
//! etcd coordinator, short node leases) and `onda agent` processes joined with tokens from the
//! API, each on free loopback ports in its own temp dir, killed on drop.

use crate::process::{Proc, free_port};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

pub struct CpOptions<'a> {
    pub database_url: String,
    /// etcd client URL; None: the in-process coordinator.
    pub etcd: Option<&'a str>,
    /// Shared by replicas of one cluster.
    pub ca_dir: &'a Path,
    pub replica: &'a str,
    pub admin_token: &'a str,
    pub node_ttl_ms: u64,
    pub relay_threshold: u64,
}

pub struct ControlPlane {
    pub proc: Proc,
    pub api: String,
    pub quic: String,
    pub admin: String,
    pub http: reqwest::Client,
}

fn cp_toml(o: &CpOptions<'_>, http_port: u16, quic_port: u16) -> String {
    let coordinator = match o.etcd {
        Some(url) => format!("coordinator = \"etcd\"\netcd_endpoints = [\"{url}\"]\n"),
        None => "coordinator = \"memory\"\n".to_string(),
    };
    format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\napp_dir = \"{app}\"\n\n[database]\nurl = \"{db}\"\n\n\
         [cluster]\nlisten = \"127.0.0.1:{quic_port}\"\nca_dir = \"{ca}\"\n{coordinator}\
         replica = \"{replica}\"\nnode_ttl_ms = {ttl}\nheartbeat_ms = {hb}\ndemo_tone = true\n\
         relay_threshold_listeners = {relay}\nreserve_listeners = 1\n",
        db = o.database_url,
        app = crate::web_app_dir().display(),
        ca = o.ca_dir.display(),
        replica = o.replica,
        ttl = o.node_ttl_ms,
        hb = (o.node_ttl_ms / 5).max(100),
        relay = o.relay_threshold,
    )
}

/// A tone for [`ControlPlane::upload_rotation`]: file name (its extension picks the format),
/// frequency in Hz, seconds, artist, title.
pub type Tone<'a> = (&'a str, u32, u32, &'a str, &'a str);

impl ControlPlane {
    /// Makes each tone with ffmpeg in `dir`, uploads it to the station (201 each) and puts them,
    /// in order, in one sequential rotation playlist named `playlist`; returns the media files
    /// as the API answered them.
    pub async fn upload_rotation(
        &self,
        key: &str,
        station_id: &str,
        dir: &Path,
        playlist: &str,
        tones: &[Tone<'_>],
    ) -> Vec<Value> {
        let mut paths = Vec::new();
        for &(file, freq, secs, artist, title) in tones {
            paths.push(crate::edge::make_track(dir, file, freq, secs, artist, title).await);
        }
        let files = self.upload_files(key, station_id, &paths).await;
        let ids: Vec<&str> = files
            .iter()
            .map(|m| m["id"].as_str().expect("media id"))
            .collect();
        self.rotation(key, station_id, playlist, &ids).await;
        files
    }

    /// Uploads each file to the station (201 each); the media files as the API answered them.
    pub async fn upload_files(
        &self,
        key: &str,
        station_id: &str,
        paths: &[std::path::PathBuf],
    ) -> Vec<Value> {
        let mut files = Vec::new();
        for path in paths {
            let file = path.file_name().expect("a file name").to_string_lossy();
            let resp = self
                .http
                .post(format!(
                    "{}/v1/stations/{station_id}/media?filename={file}",
                    self.api
                ))
                .bearer_auth(key)
                .body(std::fs::read(path).expect("read"))
                .send()
                .await
                .expect("upload");
            assert_eq!(resp.status().as_u16(), 201, "{file}");
            files.push(resp.json::<Value>().await.expect("json"));
        }
        files
    }

    /// Puts the media files, in order, in one sequential rotation playlist named `playlist`.
    pub async fn rotation(&self, key: &str, station_id: &str, playlist: &str, ids: &[&str]) {
        let (s, pl) = self
            .tenant_call(
                key,
                reqwest::Method::POST,
                &format!("/v1/stations/{station_id}/playlists"),
                Some(
                    json!({"name": playlist, "kind": "rotation", "order": "sequential",
                            "media_ids": ids}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{pl}");
    }

    pub async fn start(o: &CpOptions<'_>) -> ControlPlane {
        Self::start_with_env(o, &[]).await
    }

    /// Like [`ControlPlane::start`], with more settings as `ONDA_*` environment variables.
    pub async fn start_with_env(o: &CpOptions<'_>, env: &[(&str, &str)]) -> ControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        // Port 0: the control plane binds what is free and logs it (no race with other tests
        // for a port picked in advance); a restart reuses the logged ports.
        Self::start_in_with_env(o, dir, 0, 0, env).await
    }

    /// Starts in a given dir on given ports (a restart on the same data and addresses).
    pub async fn start_in(
        o: &CpOptions<'_>,
        dir: tempfile::TempDir,
        http_port: u16,
        quic_port: u16,
    ) -> ControlPlane {
        Self::start_in_with_env(o, dir, http_port, quic_port, &[]).await
    }

    /// [`ControlPlane::start_in`] with more settings as `ONDA_*` environment variables.
    pub async fn start_in_with_env(
        o: &CpOptions<'_>,
        dir: tempfile::TempDir,
        http_port: u16,
        quic_port: u16,
        env: &[(&str, &str)],
    ) -> ControlPlane {
        std::fs::write(dir.path().join("cp.toml"), cp_toml(o, http_port, quic_port))
            .expect("write cp.toml");
        let mut vars = vec![("ONDA_AUTH_ADMIN_TOKEN", o.admin_token)];
        vars.extend_from_slice(env);
        let mut proc = Proc::start_in(
            o.replica,
            dir,
            &["control-plane", "--config", "cp.toml"],
            &vars,
        );
        let quic = proc
            .wait_log_word(
                "control channel listening on quic://",
                Duration::from_secs(30),
            )
            .await;
        let api = proc
            .wait_log_word("panel API listening on ", Duration::from_secs(30))
            .await;
        ControlPlane {
            proc,
            api,
            quic,
            admin: o.admin_token.to_string(),
            http: onda_shared::http::client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    pub fn http_port(&self) -> u16 {
        self.api
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    pub fn quic_port(&self) -> u16 {
        self.quic
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// A request as the admin (JSON body or none): status and JSON (or the text as a string).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.tenant_call(&self.admin, method, path, body).await
    }

    pub async fn join_token(&self, ttl_seconds: u64) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/join-tokens",
                Some(json!({"description": "test", "ttl_seconds": ttl_seconds})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// A new tenant on the premium plan; returns its API key.
    pub async fn tenant_key(&self, name: &str) -> String {
        let (s, tenant) = self
            .call(
                reqwest::Method::POST,
                "/v1/tenants",
                Some(json!({"name": name, "email": "t@example.com", "plan_id": "plan_premium"})),
            )
            .await;
        assert_eq!(s, 201, "{tenant}");
        let tid = tenant["id"].as_str().expect("id");
        let (s, key) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/tenants/{tid}/api-keys"),
                Some(json!({"name": "k"})),
            )
            .await;
        assert_eq!(s, 201, "{key}");
        key["secret"].as_str().expect("secret").to_string()
    }

    /// The id of the tenant whose API key this is.
    pub async fn tenant_id(&self, key: &str) -> String {
        let (s, me) = self
            .tenant_call(key, reqwest::Method::GET, "/v1/me", None)
            .await;
        assert_eq!(s, 200, "{me}");
        me["tenant"]["id"]
            .as_str()
            .or(me["tenant_id"].as_str())
            .unwrap_or_else(|| panic!("the tenant's id in {me}"))
            .to_string()
    }

    /// Makes (or updates) the tenant's user `id` and mints a user token for them.
    pub async fn user_token(&self, key: &str, id: &str, display_name: &str) -> String {
        let path = format!("/v1/users/{id}");
        let body = json!({ "display_name": display_name });
        let (s, user) = self
            .tenant_call(key, reqwest::Method::PUT, &path, Some(body))
            .await;
        assert!(s == 200 || s == 201, "{s} {user}");
        let (s, body) = self
            .tenant_call(
                key,
                reqwest::Method::POST,
                &format!("{path}/tokens"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// Credits `amount` to `user`'s wallet as the tenant's backend does once its payment
    /// provider confirmed a top-up (a fresh idempotency key); panics unless it is 201.
    pub async fn credit(&self, key: &str, user: &str, amount: i64) {
        let r = self
            .http
            .post(format!("{}/v1/users/{user}/wallet/credits", self.api))
            .bearer_auth(key)
            .header(
                "idempotency-key",
                format!("credit-{user}-{}", rand::random::<u64>()),
            )
            .json(&json!({"amount": amount, "reference": format!("psp-{user}")}))
            .send()
            .await
            .expect("credit");
        assert_eq!(r.status().as_u16(), 201, "credit of {user}");
    }

    /// A request as a tenant (JSON body or none): status and JSON (or the text as a string).
    pub async fn tenant_call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request as a tenant with a raw body of `content_type`: status and JSON (or the text as
    /// a string).
    pub async fn raw_call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A tenant on the premium plan with one station of one MP3 mount; returns the station.
    pub async fn station(&self, name: &str) -> Value {
        let secret = self.tenant_key(name).await;
        let secret = secret.as_str();
        let resp = self
            .http
            .post(format!("{}/v1/stations", self.api))
            .bearer_auth(secret)
            .json(&json!({"name": name, "mounts": [{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]}))
            .send()
            .await
            .expect("create station");
        assert_eq!(resp.status().as_u16(), 201);
        resp.json().await.expect("station json")
    }

    /// Creates a station of tenant `key` with the AutoDJ on and `mounts` (a JSON list);
    /// answers its id and slug.
    pub async fn autodj_station(&self, key: &str, name: &str, mounts: Value) -> (String, String) {
        let body = json!({"name": name, "autodj_enabled": true, "mounts": mounts});
        let (s, station) = self
            .tenant_call(key, reqwest::Method::POST, "/v1/stations", Some(body))
            .await;
        assert_eq!(s, 201, "{station}");
        let id = station["id"].as_str().expect("id").to_string();
        let slug = station["slug"].as_str().expect("slug").to_string();
        (id, slug)
    }

    /// Creates a live stream of tenant `key` (`body` as the API takes it) and waits until it
    /// is placed: (stream, ingest).
    pub async fn placed_stream(&self, key: &str, body: Value) -> (Value, Value) {
        let (s, stream) = self
            .tenant_call(key, reqwest::Method::POST, "/v1/streams", Some(body))
            .await;
        assert_eq!(s, 201, "{stream}");
        let id = stream["id"].as_str().expect("id");
        let ingest = self.placed_ingest(key, id).await;
        (stream, ingest)
    }

    /// Live stream `id`'s ingest (`GET /v1/streams/{id}/ingest`) once it is placed on a node
    /// and has a publish URL.
    pub async fn placed_ingest(&self, key: &str, id: &str) -> Value {
        crate::wait_for("the stream placed", Duration::from_secs(30), || async {
            let (s, i) = self
                .tenant_call(
                    key,
                    reqwest::Method::GET,
                    &format!("/v1/streams/{id}/ingest"),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{i}");
            i["publish_url"].is_string().then_some(i)
        })
        .await
    }

    /// Where the redirector sends a listener of `slug`'s `/radio.mp3` right now (None: 503).
    pub async fn redirect(&self, slug: &str) -> Option<String> {
        let listen = format!("{}/listen/{slug}/radio.mp3", self.api);
        location(&self.http, &listen).await
    }

    pub async fn placement(&self, station_id: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/stations/{station_id}/placement"),
            None,
        )
        .await
        .1
    }
}

pub struct Agent {
    pub proc: Proc,
    pub name: String,
    pub edge_url: String,
    /// `ONDA_*` settings it runs with (kept for a restart).
    pub env: Vec<(String, String)>,
}

/// A test node's agent.toml. Test nodes run no TURN relay (the TURN tests turn it on, on
/// ports of their own, with `ONDA_TURN_*`: see `turn::agent_env`).
pub fn agent_toml(name: &str, cps: &[String], edge_port: u16) -> String {
    let addrs = cps
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[node]\nname = \"{name}\"\nregion = \"test\"\ncapacity_listeners = 1000\n\
         capacity_mbps = 1000\nstate_dir = \"state\"\n\n[control_plane]\naddresses = [{addrs}]\n\
         max_backoff_ms = 1000\n\n[http]\nlisten = \"127.0.0.1:{edge_port}\"\n\n\
         [usage]\ncheckpoint_ms = 200\ninterval_ms = 1000\n\n\
         [rtmp]\nlisten = \"127.0.0.1:0\"\n\n[hls]\nsegment_ms = 1000\nviewer_timeout_ms = 2000\n\n\
         [turn]\nenabled = \"off\"\n"
    )
}

impl Agent {
    /// Starts `onda agent` joined with `token` (None: it already joined, in `dir`).
    pub async fn start(name: &str, cps: &[String], token: Option<&str>) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("agent.toml"),
            agent_toml(name, cps, free_port()),
        )
        .expect("write agent.toml");
        Self::start_in(name, dir, token).await
    }

    pub async fn start_in(name: &str, dir: tempfile::TempDir, token: Option<&str>) -> Agent {
        Self::start_in_with_env(name, dir, token, Vec::new()).await
    }

    /// [`Agent::start_in`] with `ONDA_*` settings over its agent.toml.
    pub async fn start_in_with_env(
        name: &str,
        dir: tempfile::TempDir,
        token: Option<&str>,
        env: Vec<(String, String)>,
    ) -> Agent {
        let mut args = vec!["agent", "--config", "agent.toml"];
        if let Some(t) = token {
            args.extend(["--join", t]);
        }
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut proc = Proc::start_in(name, dir, &args, &pairs);
        let edge_url = proc
            .wait_log_word(") edge on ", Duration::from_secs(30))
            .await;
        Agent {
            proc,
            name: name.to_string(),
            edge_url,
            env,
        }
    }

    /// The node id this agent joined as.
    pub fn node_id(&self) -> String {
        let text = std::fs::read_to_string(self.proc.path().join("state/identity.json"))
            .expect("identity.json");
        let v: Value = serde_json::from_str(&text).expect("identity json");
        v["node_id"].as_str().expect("node_id").to_string()
    }
}

/// Starts `onda agent --join TOKEN` expecting it to fail; returns its stderr.
pub async fn failed_join(cps: &[String], token: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("agent.toml"),
        agent_toml("bad", cps, free_port()),
    )
    .expect("write agent.toml");
    let mut p = Proc::start_in(
        "bad-agent",
        dir,
        &["agent", "--config", "agent.toml", "--join", token],
        &[],
    );
    let status = p.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "the join should fail\n{}", p.logs());
    p.stderr()
}

/// Where the redirector at `url` sends a listener: its 302's Location (`http` must not follow
/// redirects), None for any other answer.
pub async fn location(http: &reqwest::Client, url: &str) -> Option<String> {
    let resp = http.get(url).send().await.ok()?;
    if resp.status().as_u16() != 302 {
        return None;
    }
    let location = resp.headers().get("location")?.to_str().ok()?;
    Some(location.to_string())
}

/// Reads audio from `url` until `n` bytes arrived (None: not served or too slow).
pub async fn audio_bytes(url: &str, n: usize) -> Option<usize> {
    // One client for every call: building one reads the system's TLS roots, which in a debug
    // build took longer than the failovers it was timing.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        onda_shared::http::client_builder()
            .timeout(Duration::from_secs(5))
            // Tests run on runtimes of their own: a pooled connection would outlive its runtime.
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    });
    let mut resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut got = 0;
    while got < n {
        let chunk = resp.chunk().await.ok()??;
        got += chunk.len();
    }
    Some(got)
}

/// Kills (SIGKILL) the node carrying `slug` and measures the time until a listener gets audio
/// through the redirector from another node. Returns the elapsed time and the agent's index.
pub async fn kill_carrier_and_time_failover(
    cp: &ControlPlane,
    agents: &mut Vec<Agent>,
    slug: &str,
    timeout: Duration,
) -> (Duration, usize) {
    let f = kill_carrier(cp, agents, slug, timeout).await;
    (f.audio, f.killed)
}

/// One failover, from the SIGKILL of the carrying node.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// Until the redirector first named another node.
    pub redirected: Duration,
    /// Until a listener sent there got audio.
    pub audio: Duration,
    /// The killed agent's index in the list it was removed from ([`kill_carrier`]).
    pub killed: usize,
}

/// [`kill_carrier_and_time_failover`] with the time the redirector turned as well.
pub async fn kill_carrier(
    cp: &ControlPlane,
    agents: &mut Vec<Agent>,
    slug: &str,
    timeout: Duration,
) -> Failover {
    let listen = format!("{}/listen/{slug}/radio.mp3", cp.api);
    let mut killed = 0;
    let mut f = kill_and_time(&listen, timeout, |carrier| {
        killed = agents
            .iter()
            .position(|a| carrier.starts_with(&a.edge_url))
            .expect("the redirect names one of the agents");
        drop(agents.remove(killed));
    })
    .await;
    f.killed = killed;
    f
}

/// Waits until the redirector at `listen` (a `/listen/…` URL) names a node, has `kill` kill
/// that node (given the URL it was named by), and times the failover from then: until the
/// redirector names another node, and until audio comes from there.
pub async fn kill_and_time(listen: &str, timeout: Duration, kill: impl FnOnce(&str)) -> Failover {
    let client = onda_shared::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let redirect = || location(&client, listen);
    let current = crate::wait_for("the station on the air", timeout, redirect).await;
    let carrier = current.split('/').take(3).collect::<Vec<_>>().join("/");
    let t0 = std::time::Instant::now();
    kill(&current);
    let redirected = std::sync::OnceLock::new();
    crate::wait_for("audio from another node", timeout, || {
        let (carrier, redirected) = (&carrier, &redirected);
        async move {
            let url = redirect().await?;
            if url.starts_with(carrier.as_str()) {
                return None;
            }
            redirected.get_or_init(|| t0.elapsed());
            audio_bytes(&url, 4096).await
        }
    })
    .await;
    let audio = t0.elapsed();
    let redirected = redirected.into_inner().unwrap_or(audio);
    Failover {
        redirected,
        audio,
        killed: 0,
    }
}

/// ffprobe's codec for a URL (following redirects), or empty when it found no audio in 20 s.
pub async fn ffprobe_codec(url: &str) -> String {
    let out = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            url,
        ])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(20), out).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => String::new(),
    }
}
