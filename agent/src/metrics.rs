//! The agent's own metrics (`onda_agent_…`), served on its edge's `/metrics`: the host's CPU,
//! memory and network as the heartbeats report them, the free disk of its state directory, the
//! usage spool's depth, whether a control plane is connected, and whether its TURN relay runs.

use onda_shared::cluster::proto::HostMetrics;
use prometheus::{Gauge, IntGauge};

#[derive(Clone)]
pub struct AgentMetrics {
    cpu: Gauge,
    memory_total: IntGauge,
    memory_available: IntGauge,
    net_rx: IntGauge,
    net_tx: IntGauge,
    /// Sealed usage reports waiting for the control plane's ack.
    pub spool: IntGauge,
    /// 1 while a control-plane session is established.
    pub connected: IntGauge,
    disk_available: IntGauge,
    disk_total: IntGauge,
    /// The TURN relay (coturn) the agent supervises.
    pub turn: crate::turn::TurnMetrics,
}

impl AgentMetrics {
    /// Creates the series and registers them on the edge.
    pub fn register(edge: &onda_edge::Edge) -> anyhow::Result<AgentMetrics> {
        let m = AgentMetrics {
            cpu: Gauge::new(
                "onda_agent_host_cpu_percent",
                "Busy share of all CPUs of the node since the previous heartbeat, 0 to 100",
            )?,
            memory_total: IntGauge::new("onda_agent_host_memory_total_bytes", "The node's memory")?,
            memory_available: IntGauge::new(
                "onda_agent_host_memory_available_bytes",
                "The node's memory available to new work",
            )?,
            net_rx: IntGauge::new(
                "onda_agent_host_network_receive_bytes",
                "Bytes received on every interface but loopback since boot",
            )?,
            net_tx: IntGauge::new(
                "onda_agent_host_network_transmit_bytes",
                "Bytes sent on every interface but loopback since boot",
            )?,
            spool: IntGauge::new(
                "onda_agent_usage_spool_reports",
                "Usage reports spooled on the node and not yet acknowledged by a control plane",
            )?,
            connected: IntGauge::new(
                "onda_agent_control_plane_connected",
                "1 while the node has a session with a control plane",
            )?,
            disk_available: IntGauge::new(
                "onda_agent_state_disk_available_bytes",
                "Free space for the node's state directory (usage spool, media, renditions)",
            )?,
            disk_total: IntGauge::new(
                "onda_agent_state_disk_total_bytes",
                "Size of the file system holding the node's state directory",
            )?,
            turn: crate::turn::TurnMetrics {
                up: IntGauge::new(
                    "onda_agent_turn_up",
                    "1 while the node's TURN relay (coturn, run by the agent) is running",
                )?,
                restarts: prometheus::IntCounter::new(
                    "onda_agent_turn_restarts_total",
                    "Times the agent started coturn again after it exited",
                )?,
                usage_lines: prometheus::IntCounterVec::new(
                    prometheus::Opts::new(
                        "onda_agent_turn_usage_lines_total",
                        "coturn session usage lines read by the agent, by result: counted (a \
                         tenant's relayed bytes, metered), unattributed (a username of no \
                         tenant), unparsed",
                    ),
                    &["result"],
                )?,
            },
        };
        for c in [
            &m.memory_total,
            &m.memory_available,
            &m.net_rx,
            &m.net_tx,
            &m.spool,
            &m.connected,
            &m.disk_available,
            &m.disk_total,
            &m.turn.up,
        ] {
            edge.register_metric(Box::new(c.clone()))?;
        }
        edge.register_metric(Box::new(m.turn.restarts.clone()))?;
        edge.register_metric(Box::new(m.turn.usage_lines.clone()))?;
        edge.register_metric(Box::new(m.cpu.clone()))?;
        Ok(m)
    }

    /// The state directory's file system: what the spool and the media cache can still use.
    pub fn disk(&self, state_dir: &std::path::Path) {
        if let Ok(v) = rustix::fs::statvfs(state_dir) {
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.disk_available
                .set(i(v.f_bavail.saturating_mul(v.f_frsize)));
            self.disk_total
                .set(i(v.f_blocks.saturating_mul(v.f_frsize)));
        }
    }

    pub fn host(&self, h: &HostMetrics) {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.cpu.set(h.cpu_percent);
        self.memory_total.set(i(h.memory_total_bytes));
        self.memory_available.set(i(h.memory_available_bytes));
        self.net_rx.set(i(h.net_rx_bytes));
        self.net_tx.set(i(h.net_tx_bytes));
    }
}
