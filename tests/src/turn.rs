//! TURN in tests: a node's agent running the real coturn on loopback ports of the test's own
//! (relays to loopback peers allowed), and coturn's own TURN client, `turnutils_uclient`, to
//! allocate relays through it and send data over them.

use std::process::Stdio;
use std::time::Duration;

/// Fails the test with what to do when coturn's server or client is missing: nothing is
/// skipped silently.
pub fn require_coturn() {
    for tool in ["turnserver", "turnutils_uclient"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        assert!(
            found,
            "{tool} is not installed: the TURN tests need coturn; run scripts/install-deps.sh test \
             (it installs the Debian package coturn)"
        );
    }
}

/// The TURN ports of one test node.
#[derive(Debug, Clone, Copy)]
pub struct TurnPorts {
    /// TURN over UDP and TCP (free on loopback for both).
    pub port: u16,
    /// Relay ports: a range of UDP ports free when chosen.
    pub min_port: u16,
    pub max_port: u16,
}

impl TurnPorts {
    pub fn free() -> TurnPorts {
        let port = free_udp_tcp_port();
        // Below Linux's ephemeral range (32768+), so no client socket of another test takes
        // them meanwhile; coturn skips any port that is busy anyway.
        let base = 20_000 + (rand::random::<u16>() % 120) * 100;
        let range = base..base + 100;
        let free = range
            .clone()
            .filter(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok())
            .count();
        assert!(
            free >= 50,
            "only {free} of the UDP ports {range:?} are free"
        );
        TurnPorts {
            port,
            min_port: range.start,
            max_port: range.end - 1,
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`:
/// (certificate path, key path).
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (dir.join("turn.pem"), dir.join("turn.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
    (cert_path, key_path)
}

/// A port free on loopback for both UDP and TCP.
pub fn free_udp_tcp_port() -> u16 {
    crate::process::unique_port(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// The `ONDA_TURN_*` settings of a test node: TURN on, on loopback, relays to loopback peers
/// allowed.
pub fn agent_env(p: &TurnPorts) -> Vec<(String, String)> {
    [
        ("ONDA_TURN_ENABLED", "on".to_string()),
        ("ONDA_TURN_LISTEN", "127.0.0.1".to_string()),
        ("ONDA_TURN_PORT", p.port.to_string()),
        ("ONDA_TURN_MIN_PORT", p.min_port.to_string()),
        ("ONDA_TURN_MAX_PORT", p.max_port.to_string()),
        ("ONDA_TURN_ALLOW_PRIVATE_PEERS", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// (host, port, TCP) of a `turn:host:port?transport=…` or `turns:…` URL (TLS is over TCP).
pub fn parse_url(url: &str) -> (String, u16, bool) {
    let rest = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"))
        .expect("a turn: or turns: URL");
    let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (
        host.to_string(),
        port.parse().expect("port"),
        query == "transport=tcp",
    )
}

/// Allocates a relay on the TURN server at `url` with `username` and `password` and sends a
/// few messages through it (`turnutils_uclient -y`: two clients relaying to each other).
/// Ok with the client's summary line when messages came back through the relay; Err
/// with its output when it did not (a refused credential: "Cannot complete Allocation").
pub async fn allocate(url: &str, username: &str, password: &str) -> Result<String, String> {
    relay(url, username, password, 5, None)
        .await
        .map(|r| r.summary)
}

/// What one run of `turnutils_uclient` relayed.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// "start_mclient: tot_send_msgs=10, tot_recv_msgs=10".
    pub summary: String,
    /// Payload bytes its clients sent and received through the relays, as it counts them.
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// As [`allocate`], sending `messages` messages per client of `length` bytes (the client's
/// default, 100, when `None`).
pub async fn relay(
    url: &str,
    username: &str,
    password: &str,
    messages: u32,
    length: Option<u32>,
) -> Result<Relayed, String> {
    let (host, port, tcp) = parse_url(url);
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    if tcp {
        cmd.arg("-t");
    }
    // TLS; the client does not check the server's certificate (no -E).
    if url.starts_with("turns:") {
        cmd.arg("-S");
    }
    if let Some(length) = length {
        cmd.args(["-l", &length.to_string()]);
    }
    cmd.args([
        "-y",
        "-n",
        &messages.to_string(),
        "-m",
        "1",
        "-L",
        "127.0.0.1",
    ])
    .args([
        "-u",
        username,
        "-w",
        password,
        "-p",
        &port.to_string(),
        &host,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    // Over TLS it takes about 15 s for five messages.
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| "turnutils_uclient ran for more than 60 s".to_string())?
        .map_err(|e| format!("cannot run turnutils_uclient: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary: "start_mclient: tot_send_msgs=10, tot_recv_msgs=10".
    let summary = text
        .lines()
        .find(|l| l.contains("start_mclient: tot_send_msgs="))
        .map(str::trim)
        .map(str::to_string);
    let n = |l: &str, key: &str| -> Option<u64> {
        let v = l.split(key).nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let counts = summary
        .as_deref()
        .and_then(|l| Some((n(l, "tot_send_msgs=")?, n(l, "tot_recv_msgs=")?)));
    // The last report: "start_mclient: tot_send_bytes ~ 20000, tot_recv_bytes ~ 20000".
    let bytes = text
        .lines()
        .rfind(|l| l.contains("start_mclient: tot_send_bytes ~ "))
        .and_then(|l| Some((n(l, "tot_send_bytes ~ ")?, n(l, "tot_recv_bytes ~ ")?)));
    match (out.status.success(), counts) {
        // Some messages may be lost on the way (UDP; the TLS client drops some): data that
        // came back proves the relay.
        (true, Some((sent, received))) if sent > 0 && received > 0 => {
            let (sent_bytes, received_bytes) = bytes.unwrap_or_default();
            Ok(Relayed {
                summary: summary.unwrap_or_default(),
                sent_bytes,
                received_bytes,
            })
        }
        _ => Err(format!("turnutils_uclient ({}):\n{text}", out.status)),
    }
}

/// The first node's advertised TURN URLs, once it is ready and has them (within 30 s).
pub async fn advertised(cp: &crate::cluster::ControlPlane) -> Vec<String> {
    crate::wait_for(
        "a ready node with TURN URLs",
        Duration::from_secs(30),
        || async {
            let (_, nodes) = cp.call(reqwest::Method::GET, "/v1/nodes", None).await;
            let node = nodes["items"].as_array()?.first()?.clone();
            let urls: Vec<String> = serde_json::from_value(node["turn_urls"].clone()).ok()?;
            (node["status"] == "ready" && !urls.is_empty()).then_some(urls)
        },
    )
    .await
}
