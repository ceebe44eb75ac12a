//! An in-process control plane on `127.0.0.1:0` over a test database, and a small JSON client
//! for its API.

use crate::db::{Backend, TestDb};
use onda_control_plane::config::Validated;
use onda_control_plane::server::{self, Running};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct TestControlPlane {
    pub url: String,
    pub admin: String,
    pub http: reqwest::Client,
    /// The control plane's media store directory (`media.dir`).
    pub media_dir: std::path::PathBuf,
    database_url: String,
    running: Option<Running>,
    /// None for a second replica over another's database.
    _db: Option<TestDb>,
    _media_dir: tempfile::TempDir,
    _ca_dir: tempfile::TempDir,
}

/// An in-process cluster for API tests: in-memory coordinator, QUIC on a free loopback port.
pub fn cluster_settings(ca_dir: &std::path::Path) -> onda_control_plane::config::ClusterSettings {
    let mut c = onda_control_plane::config::ClusterConfig {
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ca_dir: ca_dir.to_path_buf(),
        ..Default::default()
    };
    c.replica = "test".to_string();
    c.validate()
        .expect("cluster settings")
        .expect("cluster enabled")
}

/// A control plane's settings for tests: loopback on a free port, the given database, admin
/// token, cluster (None: API and gateway only) and media directory; webhooks may go to loopback.
fn settings(
    database_url: &str,
    admin: &str,
    cluster: Option<onda_control_plane::config::ClusterSettings>,
    media_dir: &std::path::Path,
) -> Validated {
    Validated {
        listen: "127.0.0.1:0".parse().expect("addr"),
        max_body_bytes: 64 * 1024,
        app_dir: crate::web_app_dir(),
        public_url: None,
        database_url: database_url.to_string(),
        max_connections: 5,
        admin_token: Some(admin.to_string()),
        cluster,
        media: onda_control_plane::config::MediaConfig {
            dir: media_dir.join("media"),
            ..Default::default()
        }
        .validate()
        .expect("media settings"),
        nowplaying: Default::default(),
        // Tests' webhook receivers listen on loopback.
        webhooks: onda_control_plane::config::WebhookSettings {
            allow_private: true,
            ..Default::default()
        },
        realtime: Default::default(),
        turn: Default::default(),
    }
}

/// One answer: status, content type and the body as JSON (Null when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status}, got {} with body {}",
            self.status,
            self.text
        );
        self
    }

    /// Asserts an RFC 9457 problem with this status and a human sentence.
    #[track_caller]
    pub fn problem(self, status: u16) -> Reply {
        let r = self.expect(status);
        assert_eq!(r.content_type, "application/problem+json", "{}", r.text);
        assert_eq!(r.body["status"], json!(status), "{}", r.text);
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.len() > 10 && detail.contains(' '),
            "detail is not a sentence: {}",
            r.text
        );
        r
    }
}

impl TestControlPlane {
    /// Starts a control plane, or None when the backend is PostgreSQL and it is unreachable
    /// outside CI.
    pub async fn start(backend: Backend) -> Option<TestControlPlane> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestControlPlane::start`], with the configuration adjusted by `tweak` first (the
    /// media directory is a temp dir of the test's own).
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Validated),
    ) -> Option<TestControlPlane> {
        let db = TestDb::new(backend).await?;
        let admin = format!("test-admin-token-{}", rand::random::<u64>());
        let ca_dir = tempfile::tempdir().expect("temp dir");
        let media_dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = settings(
            &db.url,
            &admin,
            Some(cluster_settings(ca_dir.path())),
            media_dir.path(),
        );
        tweak(&mut cfg);
        let running = server::start(&cfg).await.expect("control plane starts");
        Some(TestControlPlane {
            url: format!("http://{}", running.addr),
            admin,
            http: onda_shared::http::client(),
            media_dir: cfg.media.dir.clone(),
            database_url: db.url.clone(),
            running: Some(running),
            _db: Some(db),
            _media_dir: media_dir,
            _ca_dir: ca_dir,
        })
    }

    /// Runs the subscription renewal once now, as the control plane's task does every minute.
    pub async fn renew_subscriptions(&self) -> onda_control_plane::subscriptions::Report {
        self.running
            .as_ref()
            .expect("running")
            .renewer
            .run_once()
            .await
            .expect("renewal runs")
    }

    /// The URL of the control plane's database (for tests that seed or inspect it directly).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Another replica over the same database: the API and the gateway only (no cluster). It
    /// must be stopped before the replica that owns the database.
    pub async fn replica(&self) -> TestControlPlane {
        let ca_dir = tempfile::tempdir().expect("temp dir");
        let media_dir = tempfile::tempdir().expect("temp dir");
        let cfg = settings(&self.database_url, &self.admin, None, media_dir.path());
        let running = server::start(&cfg).await.expect("replica starts");
        TestControlPlane {
            url: format!("http://{}", running.addr),
            admin: self.admin.clone(),
            http: onda_shared::http::client(),
            media_dir: cfg.media.dir.clone(),
            database_url: self.database_url.clone(),
            running: Some(running),
            _db: None,
            _media_dir: media_dir,
            _ca_dir: ca_dir,
        }
    }

    /// Sends a request; `body` None sends no body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    /// Sends raw bytes with an optional content type (for malformed-input tests).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a tenant on `plan_id` and an API key for it: (tenant id, secret).
    pub async fn tenant_with_key(&self, name: &str, plan_id: &str) -> (String, String) {
        let t = self
            .post(
                "/v1/tenants",
                &self.admin,
                json!({"name": name, "plan_id": plan_id}),
            )
            .await
            .expect(201);
        let id = t.body["id"].as_str().expect("tenant id").to_string();
        let k = self
            .post(
                &format!("/v1/tenants/{id}/api-keys"),
                &self.admin,
                json!({"name": "test"}),
            )
            .await
            .expect(201);
        (id, k.body["secret"].as_str().expect("secret").to_string())
    }

    /// Creates (or replaces) end user `id` of the tenant with API key `key` and mints a user
    /// token for them.
    pub async fn user_with_token(&self, key: &str, id: &str, display_name: &str) -> String {
        self.call(
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(key),
            Some(json!({ "display_name": display_name })),
        )
        .await;
        let t = self
            .post(&format!("/v1/users/{id}/tokens"), key, json!({}))
            .await
            .expect(201);
        t.body["token"].as_str().expect("token").to_string()
    }

    /// Every item of a paginated list, following cursors.
    pub async fn list_all(&self, path: &str, token: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=100&cursor={c}"),
                None => format!("{path}{sep}limit=100"),
            };
            let page = self.get(&url, token).await.expect(200);
            items.extend(page.body["items"].as_array().cloned().unwrap_or_default());
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}
