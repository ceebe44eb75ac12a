//! A whole test cluster in one value: a database (SQLite in a temp dir or a fresh PostgreSQL
//! database), a CA directory, optionally a real etcd, one `onda control-plane` and the
//! `onda agent` nodes joined to it, all removed or killed when the fixture is dropped.
//!
//! Tests reach the parts through the fields (`fx.cp`, `fx.agents[i]`) and kill or restart them
//! through methods, so the fixture always owns what a running process still uses. Moving a part
//! out (`let ClusterFixture { cp, .. } = fx`) does not compile: the parts not named would be
//! dropped on the spot, removing the database and CA under a running control plane.

use crate::cluster::{Agent, ControlPlane, CpOptions};
use crate::db::{Backend, TestDb};
use crate::etcd::Etcd;
use std::time::Duration;

/// What a [`ClusterFixture`] starts; `..ClusterSpec::default()` for the rest.
pub struct ClusterSpec<'a> {
    pub admin_token: &'a str,
    pub backend: Backend,
    /// A real etcd as the coordinator; false: the in-process one.
    pub etcd: bool,
    pub replica: &'a str,
    pub node_ttl_ms: u64,
    /// Listeners one node carries of a station before relays help.
    pub relay_threshold: u64,
    /// Agents joined in this order, each with a fresh join token; each serves its edge when
    /// `start` answers ([`ClusterFixture::wait_ready`] waits for the control plane's view).
    pub nodes: &'a [&'a str],
    /// More control-plane settings as `ONDA_*` environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl Default for ClusterSpec<'_> {
    fn default() -> Self {
        ClusterSpec {
            admin_token: "cluster-fixture-admin-token-0123",
            backend: Backend::Sqlite,
            etcd: false,
            replica: "cp",
            node_ttl_ms: 2000,
            relay_threshold: 500,
            nodes: &[],
            env: &[],
        }
    }
}

/// A running cluster. Its fields are dropped in the order declared, which is the order the
/// parts must stop in: the agents first (so none sees its control plane vanish and starts
/// reconnecting), then the control plane (which uses the coordinator, the database and the
/// CA), then etcd, and the database and CA directory last, once nothing has them open.
pub struct ClusterFixture {
    pub agents: Vec<Agent>,
    pub cp: ControlPlane,
    pub etcd: Option<Etcd>,
    /// The control plane's database (`db.url`), for tests that reach below the API.
    pub db: TestDb,
    ca: tempfile::TempDir,
    settings: CpSettings,
}

/// Drops nothing itself (the fields drop after it, in their order): a type with `Drop` cannot
/// be moved out of (E0509), so no test can take a part and drop the rest early.
impl Drop for ClusterFixture {
    fn drop(&mut self) {}
}

/// The spec's control-plane settings, kept to start replicas and restarts alike.
struct CpSettings {
    admin_token: String,
    replica: String,
    node_ttl_ms: u64,
    relay_threshold: u64,
    env: Vec<(String, String)>,
}

impl ClusterFixture {
    /// A control plane on SQLite with the in-process coordinator and `n` ready agents named
    /// `edge-1` … `edge-n`.
    pub async fn start(n: usize) -> ClusterFixture {
        let names: Vec<String> = (1..=n).map(|i| format!("edge-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::start_with(ClusterSpec {
            nodes: &names,
            ..ClusterSpec::default()
        })
        .await
    }

    /// Starts what `spec` says; panics where [`ClusterFixture::start_on`] answers None (use
    /// that for PostgreSQL).
    pub async fn start_with(spec: ClusterSpec<'_>) -> ClusterFixture {
        Self::start_on(spec)
            .await
            .expect("the database to be reachable")
    }

    /// Starts what `spec` says, or answers None when its PostgreSQL is unreachable outside CI
    /// (the test then returns: see [`TestDb::new`]).
    pub async fn start_on(spec: ClusterSpec<'_>) -> Option<ClusterFixture> {
        let db = TestDb::new(spec.backend).await?;
        let etcd = match spec.etcd {
            true => Some(Etcd::start().await),
            false => None,
        };
        let ca = tempfile::tempdir().expect("CA dir");
        let settings = CpSettings {
            admin_token: spec.admin_token.to_string(),
            replica: spec.replica.to_string(),
            node_ttl_ms: spec.node_ttl_ms,
            relay_threshold: spec.relay_threshold,
            env: spec
                .env
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let cp = {
            let o = options(&settings, &db, etcd.as_ref(), &ca, spec.replica);
            ControlPlane::start_with_env(&o, &settings.env_pairs()).await
        };
        let mut fx = ClusterFixture {
            agents: Vec::new(),
            cp,
            etcd,
            db,
            ca,
            settings,
        };
        for name in spec.nodes {
            fx.join(name).await;
        }
        Some(fx)
    }

    /// The options the control plane runs with, as replica `replica`.
    pub fn options<'a>(&'a self, replica: &'a str) -> CpOptions<'a> {
        options(
            &self.settings,
            &self.db,
            self.etcd.as_ref(),
            &self.ca,
            replica,
        )
    }

    /// The etcd's client URL; panics without one.
    pub fn etcd_endpoint(&self) -> &str {
        &self.etcd.as_ref().expect("a cluster with etcd").endpoint
    }

    /// Joins a new agent `name` to the control plane (with a fresh join token) and adds it to
    /// `agents`.
    pub async fn join(&mut self, name: &str) {
        let cps = [self.cp.quic.clone()];
        self.join_via(name, &cps).await;
    }

    /// Like [`ClusterFixture::join`], reaching the control plane at `cps` (other replicas, or
    /// a relay between the two).
    pub async fn join_via(&mut self, name: &str, cps: &[String]) {
        let token = self.cp.join_token(600).await;
        self.agents
            .push(Agent::start(name, cps, Some(&token)).await);
    }

    /// Like [`ClusterFixture::join`], the agent running with `ONDA_*` settings `env` over its
    /// agent.toml (also when restarted).
    pub async fn join_with_env(&mut self, name: &str, env: Vec<(String, String)>) {
        let token = self.cp.join_token(600).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let toml = crate::cluster::agent_toml(
            name,
            std::slice::from_ref(&self.cp.quic),
            crate::process::free_port(),
        );
        std::fs::write(dir.path().join("agent.toml"), toml).expect("write agent.toml");
        self.agents
            .push(Agent::start_in_with_env(name, dir, Some(&token), env).await);
    }

    /// Another control-plane replica of the same cluster (same database, CA and coordinator),
    /// owned by the caller.
    pub async fn start_replica(&self, replica: &str) -> ControlPlane {
        ControlPlane::start_with_env(&self.options(replica), &self.settings.env_pairs()).await
    }

    /// `kill -9` of the control plane; `cp` stays, dead, until [`ClusterFixture::restart_cp`].
    pub fn kill_cp(&mut self) {
        self.cp.proc.kill();
    }

    /// Starts the control plane again (killing it first if it still runs) on its own data
    /// directory and ports.
    pub async fn restart_cp(&mut self) {
        let (http_port, quic_port) = (self.cp.http_port(), self.cp.quic_port());
        let dir = self.cp.proc.take_dir();
        let o = self.options(&self.settings.replica);
        self.cp = ControlPlane::start_in_with_env(
            &o,
            dir,
            http_port,
            quic_port,
            &self.settings.env_pairs(),
        )
        .await;
    }

    /// `kill -9` of agent `i`; it stays in `agents`, dead, until
    /// [`ClusterFixture::restart_agent`].
    pub fn kill_agent(&mut self, i: usize) {
        self.agents[i].proc.kill();
    }

    /// Starts agent `i` again (killing it first if it still runs) on its own state: the same
    /// node, joined already.
    pub async fn restart_agent(&mut self, i: usize) {
        let dir = self.agents[i].proc.take_dir();
        let name = self.agents[i].name.clone();
        let env = std::mem::take(&mut self.agents[i].env);
        self.agents[i] = Agent::start_in_with_env(&name, dir, None, env).await;
    }

    /// Waits until `n` nodes are ready as the control plane sees them.
    pub async fn wait_ready(&self, n: usize, timeout: Duration) {
        crate::wait_for(&format!("{n} ready nodes"), timeout, || async {
            let (_, nodes) = self.cp.call(reqwest::Method::GET, "/v1/nodes", None).await;
            let ready = nodes["items"]
                .as_array()?
                .iter()
                .filter(|n| n["status"] == "ready")
                .count();
            (ready == n).then_some(())
        })
        .await;
    }
}

impl CpSettings {
    fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

fn options<'a>(
    s: &'a CpSettings,
    db: &TestDb,
    etcd: Option<&'a Etcd>,
    ca: &'a tempfile::TempDir,
    replica: &'a str,
) -> CpOptions<'a> {
    CpOptions {
        database_url: db.url.clone(),
        etcd: etcd.map(|e| e.endpoint.as_str()),
        ca_dir: ca.path(),
        replica,
        admin_token: &s.admin_token,
        node_ttl_ms: s.node_ttl_ms,
        relay_threshold: s.relay_threshold,
    }
}

/// A one-node cluster ("n1") on `backend` and a station of a Premium tenant with the AutoDJ on
/// and one 64 kbps MP3 mount, `/radio.mp3`: the cluster, the tenant's key, the station's id and
/// slug. None when that database is not reachable (see [`ClusterFixture::start_on`]).
pub async fn radio(
    backend: Backend,
    tenant: &str,
    station: &str,
) -> Option<(ClusterFixture, String, String, String)> {
    let fx = ClusterFixture::start_on(ClusterSpec {
        backend,
        nodes: &["n1"],
        ..ClusterSpec::default()
    })
    .await?;
    let key = fx.cp.tenant_key(tenant).await;
    let (id, slug) = fx
        .cp
        .autodj_station(
            &key,
            station,
            serde_json::json!([{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]),
        )
        .await;
    Some((fx, key, id, slug))
}
