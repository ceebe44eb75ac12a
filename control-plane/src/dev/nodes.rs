//! The local nodes of `onda dev`: `onda agent` child processes of this same binary, joined on
//! first use, waited for until their edges are up, and stopped with dev mode.

use super::DevNode;
use crate::db::{self, Db};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::process::Child;

/// Starts `count` nodes; the first edge on `edge_port` (0: any free port) and the next ones
/// counting up, RTMP on 1935 and up when the edge port is fixed.
pub(super) async fn spawn_all(
    dir: &Path,
    count: usize,
    edge_port: u16,
    quic: SocketAddr,
    db: &Db,
    ca_sha256: &str,
) -> anyhow::Result<(Vec<Child>, Vec<DevNode>)> {
    let mut children = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=count.max(1) {
        let name = format!("node-{i}");
        let offset = u16::try_from(i - 1).unwrap_or(0);
        let (port, rtmp_port) = if edge_port == 0 {
            (0, 0)
        } else {
            (
                edge_port.saturating_add(offset),
                1935u16.saturating_add(offset),
            )
        };
        let child = spawn_node(dir, &name, port, rtmp_port, quic, db, ca_sha256).await?;
        nodes.push(DevNode {
            name,
            edge_url: String::new(),
            pid: child.id().unwrap_or(0),
        });
        children.push(child);
    }
    Ok((children, nodes))
}

/// Fills in each node's edge URL as it reports it when it connects, until `deadline`.
pub(super) async fn wait_edges(
    nodes: &mut [DevNode],
    db: &Db,
    dir: &Path,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    for n in nodes {
        while n.edge_url.is_empty() && tokio::time::Instant::now() < deadline {
            let mut c = db.conn().await?;
            let all = db::nodes::all(&mut c).await?;
            if let Some(found) = all
                .iter()
                .find(|x| x.name == n.name && x.status == onda_shared::api::NodeStatus::Ready)
            {
                n.edge_url = found.public_url.clone();
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if n.edge_url.is_empty() {
            let log = dir.join("nodes").join(&n.name).join("agent.log");
            tracing::warn!(
                "{} did not connect within 30 s; see {}",
                n.name,
                log.display()
            );
        }
    }
    Ok(())
}

/// SIGTERM to every node (each stops its edge and tones cleanly), then SIGKILL to any still
/// running after 5 s.
pub(super) async fn stop_all(children: Vec<Child>) {
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for mut child in children {
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// A port free on loopback for both UDP and TCP (TURN listens on both).
fn free_udp_tcp_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no loopback port is free for both UDP and TCP (for the dev node's TURN)")
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
    // TURN (when coturn is installed) on loopback, on a port free now rather than 3478, which
    // Debian's own coturn service may hold; the browsers of a dev machine are loopback peers.
    let turn_port = free_udp_tcp_port()?;
    let config = format!(
        "[node]\nname = \"{name}\"\nregion = \"local\"\nstate_dir = \"{state}\"\n\n\
         [control_plane]\naddresses = [\"{quic}\"]\nmax_backoff_ms = 1000\n\n\
         [http]\nlisten = \"127.0.0.1:{edge_port}\"\n\n[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n\
         [turn]\nlisten = \"127.0.0.1\"\nport = {turn_port}\nallow_private_peers = true\n",
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
