//! A real etcd (Debian's `etcd-server`) for a test: its own data dir, free client and peer ports
//! on 127.0.0.1, short heartbeat and election timeouts so leases as short as a second are
//! allowed, killed on drop like every [`Proc`].

use crate::process::{Proc, free_port};
use std::time::Duration;

pub struct Etcd {
    pub proc: Proc,
    pub endpoint: String,
}

impl Etcd {
    pub async fn start() -> Etcd {
        let client = free_port();
        let peer = free_port();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let cluster = format!("t={peer_url}");
        let mut proc = Proc::external(
            "etcd",
            "etcd",
            &[
                "--name",
                "t",
                "--data-dir",
                "data",
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &cluster,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ],
        );
        // etcd 3.4 logs to stderr; this line means clients are served.
        proc.wait_log_word(
            "serving insecure client requests on",
            Duration::from_secs(20),
        )
        .await;
        Etcd {
            proc,
            endpoint: client_url,
        }
    }
}
