//! coturn's configuration file, written from the agent's `[turn]` section (pure).
//!
//! Credentials are the TURN REST API's (`use-auth-secret`); the secrets are not in this file but
//! in coturn's SQLite user database (`userdb`), which coturn reads on every authentication, so
//! a rotation reaches it without a restart ([`super::userdb`]).

use crate::config::TurnConfig;
use std::path::Path;

/// Peer addresses a production relay refuses (coturn's `denied-peer-ip`): "this" network,
/// RFC 1918 private, shared CGNAT (RFC 6598), loopback, link-local, IETF protocol assignments,
/// benchmarking, reserved and broadcast; IPv6 loopback, unspecified, IPv4-mapped, unique-local
/// and link-local. A relay to them would let a caller reach the node's own networks.
pub const DENIED_PEERS: &[&str] = &[
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "240.0.0.0-255.255.255.255",
    "::-::1",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// Where coturn keeps its files: all in the agent's `turn` directory.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub userdb: &'a Path,
    pub pid: &'a Path,
}

/// The text of `turnserver.conf` for `cfg`, the cluster's `realm` and `files`.
pub fn render(cfg: &TurnConfig, realm: &str, files: Files<'_>) -> String {
    let mut lines = vec![
        "# Written by the Onda agent at each start of coturn: edit agent.toml [turn].".to_string(),
    ];
    let mut line = |s: String| lines.push(s);
    if let Some(ip) = cfg.listen {
        line(format!("listening-ip={ip}"));
    }
    line(format!("listening-port={}", cfg.port));
    if let Some(ip) = cfg.external_ip {
        line(format!("external-ip={ip}"));
    }
    line(format!("min-port={}", cfg.min_port));
    line(format!("max-port={}", cfg.max_port));
    line("use-auth-secret".into());
    line(format!("realm={realm}"));
    line(format!("userdb={}", files.userdb.display()));
    line("fingerprint".into());
    if cfg.cert.as_os_str().is_empty() {
        line("no-tls".into());
        line("no-dtls".into());
    } else {
        line(format!("tls-listening-port={}", cfg.tls_port));
        line(format!("cert={}", cfg.cert.display()));
        line(format!("pkey={}", cfg.key.display()));
        // No `no-tlsv1`/`no-tlsv1_1`: with them Debian's coturn 4.6.1 stalls TLS sessions after
        // the handshake (seen with turnutils_uclient -S), and OpenSSL 3 refuses TLS 1.0 and 1.1
        // at its default security level anyway.
    }
    // NAT behaviour discovery needs a second address and port, which WebRTC does not use.
    line("no-rfc5780".into());
    line("no-cli".into());
    line("no-software-attribute".into());
    line("no-multicast-peers".into());
    if cfg.allow_private_peers {
        line("allow-loopback-peers".into());
    } else {
        for range in DENIED_PEERS {
            line(format!("denied-peer-ip={range}"));
        }
    }
    line(format!("total-quota={}", cfg.total_quota));
    line(format!("user-quota={}", cfg.user_quota));
    line(format!("max-bps={}", cfg.max_bps));
    // The log goes to the agent, which meters relayed bytes from its usage lines (`meter`)
    // and writes it on to `turnserver.log`. Only to stdout does coturn flush every line (its
    // copy of a log file's lines on stdout is block-buffered: a usage line would wait for 4 KiB
    // more and die with coturn). `simple-log`: no rollover of its own.
    line("log-file=stdout".into());
    line("simple-log".into());
    // Without it coturn logs no session usage at all.
    line("verbose".into());
    line(format!("pidfile={}", files.pid.display()));
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files<'static> {
        Files {
            userdb: Path::new("/var/lib/onda/turn/turndb"),
            pid: Path::new("/var/lib/onda/turn/turnserver.pid"),
        }
    }

    #[test]
    fn production_denies_private_peers_and_tests_allow_loopback() {
        let prod = render(&TurnConfig::default(), "onda", files());
        for want in [
            "listening-port=3478\n",
            "use-auth-secret\n",
            "realm=onda\n",
            "userdb=/var/lib/onda/turn/turndb\n",
            "no-cli\n",
            "fingerprint\n",
            "no-tls\n",
            "no-multicast-peers\n",
            "denied-peer-ip=10.0.0.0-10.255.255.255\n",
            "denied-peer-ip=127.0.0.0-127.255.255.255\n",
            "denied-peer-ip=100.64.0.0-100.127.255.255\n",
            "denied-peer-ip=169.254.0.0-169.254.255.255\n",
            "denied-peer-ip=172.16.0.0-172.31.255.255\n",
            "denied-peer-ip=192.168.0.0-192.168.255.255\n",
            "total-quota=1000\n",
            "max-bps=1250000\n",
            "log-file=stdout\n",
            "verbose\n",
        ] {
            assert!(prod.contains(want), "{want:?} missing from:\n{prod}");
        }
        assert!(!prod.contains("allow-loopback-peers"), "{prod}");
        assert!(!prod.contains("listening-ip"), "{prod}");
        assert!(
            !prod.contains("static-auth-secret"),
            "secrets are in the userdb: {prod}"
        );

        let test = render(
            &TurnConfig {
                listen: Some([127, 0, 0, 1].into()),
                port: 40000,
                allow_private_peers: true,
                cert: "/etc/onda/turn.pem".into(),
                key: "/etc/onda/turn.key".into(),
                ..TurnConfig::default()
            },
            "example",
            files(),
        );
        for want in [
            "listening-ip=127.0.0.1\n",
            "listening-port=40000\n",
            "allow-loopback-peers\n",
            "tls-listening-port=5349\n",
            "cert=/etc/onda/turn.pem\n",
            "realm=example\n",
        ] {
            assert!(test.contains(want), "{want:?} missing from:\n{test}");
        }
        assert!(
            !test.contains("denied-peer-ip") && !test.contains("no-tls\n"),
            "{test}"
        );
    }
}
