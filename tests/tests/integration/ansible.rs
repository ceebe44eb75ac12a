//! Provisioning with Ansible, for real: `ansible-lint` and a syntax check of `ansible/`, then
//! `site.yml` applied to two throwaway hosts the test makes (chroots that share this machine's
//! /usr and dpkg database read-only, `tests/ansible/chroot.sh`, reached with Ansible's chroot
//! connection): etcd, a control plane and Prometheus on one, an edge node on the other, each
//! service on its own free loopback port, run by the roles' init scripts (no systemd runs
//! here). It ends with the control plane ready on etcd, the edge joined with a token the role
//! asked the API for, and a station playing through the redirector; a second run changes
//! nothing, and a run with a new binary restarts the services and the station plays again.

use onda_tests::process::{free_port, onda_bin};
use onda_tests::turn::TurnPorts;
use onda_tests::wait_for;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ADMIN: &str = "ansible-test-admin-token-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository")
        .to_path_buf()
}

/// A host made with chroot.sh, destroyed (services stopped, mounts undone) on drop.
struct Host {
    dir: PathBuf,
}

impl Host {
    fn create(dir: PathBuf) -> Host {
        let out = Command::new(repo().join("tests/ansible/chroot.sh"))
            .arg("create")
            .arg(&dir)
            .output()
            .expect("chroot.sh runs");
        let host = Host { dir };
        assert!(
            out.status.success(),
            "chroot.sh create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        host
    }

    /// The end of a service's log (the init scripts write /var/log/NAME.log).
    fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("var/log/{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let out = Command::new(repo().join("tests/ansible/chroot.sh"))
            .arg("destroy")
            .arg(&self.dir)
            .output();
        if let Ok(o) = out
            && !o.status.success()
        {
            eprintln!(
                "chroot.sh destroy {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// Runs an Ansible command in `ansible/` (bounded: `timeout`), returning (success, output).
fn ansible(program: &str, args: &[&str], home: &Path) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("900")
        .arg(program)
        .args(args)
        .current_dir(repo().join("ansible"))
        .env("ANSIBLE_CONFIG", repo().join("ansible/ansible.cfg"))
        .env("ANSIBLE_HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("HOME", home)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `changed=N` counts of a play recap, by host.
fn changed(recap: &str) -> Vec<(String, u64)> {
    let Some(at) = recap.rfind("PLAY RECAP") else {
        return Vec::new();
    };
    recap[at..]
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (host, rest) = l.split_once(" : ")?;
            let n = rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("changed="))?
                .parse()
                .ok()?;
            Some((host.trim().to_string(), n))
        })
        .collect()
}

#[test]
fn recap_lines_parse() {
    let recap = "PLAY RECAP *****\ncp : ok=40 changed=3 unreachable=0 failed=0\n\
                 edge : ok=20 changed=0 unreachable=0 failed=0\n";
    assert_eq!(
        changed(recap),
        [("cp".to_string(), 3), ("edge".to_string(), 0)]
    );
}

#[test]
fn the_roles_pass_ansible_lint_and_a_syntax_check() {
    let home = tempfile::tempdir().expect("dir");
    let (ok, out) = ansible(
        "ansible-playbook",
        &[
            "--syntax-check",
            "-i",
            "inventory/example/hosts.yml",
            "site.yml",
        ],
        home.path(),
    );
    assert!(ok, "syntax check:\n{out}");
    let (ok, out) = ansible("ansible-lint", &["--offline", "--nocolor"], home.path());
    assert!(ok, "ansible-lint:\n{out}");
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playbook_provisions_a_cluster_that_plays_and_a_second_run_changes_nothing() {
    let work = tempfile::tempdir().expect("dir");
    let home = work.path().join("ansible-home");
    std::fs::create_dir_all(home.join("tmp")).expect("dir");
    let cp = Host::create(work.path().join("cp"));
    let edges = [
        Host::create(work.path().join("edge1")),
        Host::create(work.path().join("edge2")),
    ];
    let (cp_http, cp_quic, etcd_client, etcd_peer, prom) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let edge_ports = [(free_port(), free_port()), (free_port(), free_port())];
    let turn_ports = [TurnPorts::free(), TurnPorts::free()];
    // Everything as host variables: they win over the example's group_vars/all.yml, which the
    // test's inventory uses to wire the plays together as a real one does.
    let common = json!({
        "ansible_connection": "community.general.chroot",
        "ansible_become": false,
        "ansible_python_interpreter": "/usr/bin/python3",
        "onda_binary_src": onda_bin(),
        "onda_admin_token": ADMIN,
        "onda_firewall": "none",
        "onda_apt_update_cache": false,
        "onda_common_init": "sysv",
        "etcd_init": "sysv",
        "monitoring_init": "sysv",
    });
    let with_common = |mut v: Value| {
        for (k, x) in common.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let cp_vars = with_common(json!({
        "ansible_host": cp.dir,
        "onda_control_plane_http_port": cp_http,
        "onda_control_plane_http_listen": format!("127.0.0.1:{cp_http}"),
        "onda_control_plane_quic_port": cp_quic,
        "onda_control_plane_quic_listen": format!("127.0.0.1:{cp_quic}"),
        "onda_control_plane_advertise": [format!("127.0.0.1:{cp_quic}")],
        "onda_control_plane_api_address": format!("127.0.0.1:{cp_http}"),
        "onda_control_plane_demo_tone": true,
        "onda_control_plane_node_ttl_ms": 2000,
        "etcd_member_name": "etcd1",
        "etcd_listen_host": "127.0.0.1",
        "etcd_advertise_host": "127.0.0.1",
        "etcd_client_port": etcd_client,
        "etcd_peer_port": etcd_peer,
        "monitoring_prometheus_port": prom,
        "monitoring_prometheus_listen": format!("127.0.0.1:{prom}"),
    }));
    let edge_vars = |i: usize| {
        let (http, rtmp) = edge_ports[i];
        with_common(json!({
            "ansible_host": edges[i].dir,
            "onda_edge_name": format!("edge-{}", i + 1),
            "onda_edge_http_port": http,
            "onda_edge_http_listen": format!("127.0.0.1:{http}"),
            "onda_edge_rtmp_port": rtmp,
            "onda_edge_rtmp_listen": format!("127.0.0.1:{rtmp}"),
            "onda_edge_public_url": format!("http://127.0.0.1:{http}"),
            "onda_edge_rtmp_url": format!("rtmp://127.0.0.1:{rtmp}"),
            "onda_edge_apply_sysctl": false,
            // Each edge's coturn on loopback ports of its own (both share this machine's
            // network).
            "onda_edge_turn_listen": "127.0.0.1",
            "onda_edge_turn_port": turn_ports[i].port,
            "onda_edge_turn_min_port": turn_ports[i].min_port,
            "onda_edge_turn_max_port": turn_ports[i].max_port,
        }))
    };
    let inventory = json!({
        "all": {
            "children": {
                "control_plane": {"hosts": {"cp1": cp_vars}},
                "etcd": {"hosts": {"cp1": {}}},
                "monitoring": {"hosts": {"cp1": {}}},
                "edge": {"hosts": {"edge1": edge_vars(0), "edge2": edge_vars(1)}},
            }
        }
    });
    // The example inventory's group_vars wire the plays together; the test's hosts use them.
    let inv_dir = work.path().join("inventory");
    std::fs::create_dir_all(&inv_dir).expect("dir");
    std::fs::copy(
        repo().join("ansible/inventory/example/group_vars/all/main.yml"),
        inv_dir.join("group_vars.yml"),
    )
    .expect("group vars");
    std::fs::create_dir_all(inv_dir.join("group_vars")).expect("dir");
    std::fs::rename(
        inv_dir.join("group_vars.yml"),
        inv_dir.join("group_vars/all.yml"),
    )
    .expect("group vars");
    let hosts = inv_dir.join("hosts.yml");
    std::fs::write(
        &hosts,
        serde_json::to_string_pretty(&inventory).expect("json"),
    )
    .expect("inventory");
    let hosts = hosts.to_str().expect("path").to_string();

    let (ok, first) = ansible("ansible-playbook", &["-i", &hosts, "site.yml"], &home);
    assert!(
        ok,
        "first run:\n{first}\n--- control plane log:\n{}\n--- agent logs:\n{}\n{}\n--- etcd log:\n{}",
        cp.log("onda-control-plane"),
        edges[0].log("onda-agent"),
        edges[1].log("onda-agent"),
        cp.log("onda-etcd")
    );
    assert!(
        changed(&first).iter().all(|(_, n)| *n > 0),
        "the first run changes every host: {first}"
    );

    // The control plane runs on etcd, the edge joined and is ready.
    let http = onda_shared::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let api = format!("http://127.0.0.1:{cp_http}");
    let r = http
        .get(format!("{api}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let config =
        std::fs::read_to_string(cp.dir.join("etc/onda/control-plane.toml")).expect("config");
    assert!(config.contains("coordinator = \"etcd\""), "{config}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let (_, body) = admin(&http, reqwest::Method::GET, format!("{api}/v1/nodes"), None).await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        // Ready, and running the TURN relay the role installed coturn for.
        let ready = |name: &str| {
            items.iter().any(|n| {
                n["name"] == name
                    && n["status"] == "ready"
                    && n["turn_urls"].as_array().is_some_and(|u| !u.is_empty())
            })
        };
        if ready("edge-1") && ready("edge-2") {
            break items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edges are not both joined and ready: {body}\n{first}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(nodes.len(), 2, "{nodes:?}");

    // A station plays through the redirector from the provisioned edge.
    let (s, tenant) = admin(
        &http,
        reqwest::Method::POST,
        format!("{api}/v1/tenants"),
        Some(json!({"name": "Radio", "email": "r@example.com", "plan_id": "plan_premium"})),
    )
    .await;
    assert_eq!(s, 201, "{tenant}");
    let (s, key) = admin(
        &http,
        reqwest::Method::POST,
        format!(
            "{api}/v1/tenants/{}/api-keys",
            tenant["id"].as_str().expect("id")
        ),
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let station: Value = http
        .post(format!("{api}/v1/stations"))
        .bearer_auth(key["secret"].as_str().expect("secret"))
        .json(&json!({"name": "Provisioned", "mounts": [{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]}))
        .send()
        .await
        .expect("create station")
        .json()
        .await
        .expect("station");
    let slug = station["slug"].as_str().expect("slug").to_string();
    let listen = format!("{api}/listen/{slug}/radio.mp3");
    let got = wait_for("the station playing", Duration::from_secs(30), || async {
        let r = http.get(&listen).send().await.ok()?;
        let to = r.headers().get("location")?.to_str().ok()?.to_string();
        if !edge_ports
            .iter()
            .any(|(p, _)| to.starts_with(&format!("http://127.0.0.1:{p}/")))
        {
            return None;
        }
        onda_tests::cluster::audio_bytes(&to, 16 * 1024).await
    })
    .await;
    assert!(got >= 16 * 1024);
    // Prometheus from the monitoring role answers with Onda's rules loaded.
    let rules: Value = http
        .get(format!("http://127.0.0.1:{prom}/api/v1/rules"))
        .send()
        .await
        .expect("prometheus")
        .json()
        .await
        .expect("rules");
    assert!(
        rules.to_string().contains("onda_"),
        "Prometheus has Onda's alert rules: {rules}"
    );

    // Run again: nothing to change anywhere.
    let (ok, second) = ansible("ansible-playbook", &["-i", &hosts, "site.yml"], &home);
    assert!(ok, "second run:\n{second}");
    let counts = changed(&second);
    assert_eq!(counts.len(), 3, "{second}");
    assert!(
        counts.iter().all(|(_, n)| *n == 0),
        "the second run changed something: {counts:?}\n{second}"
    );

    // An upgrade: a new binary restarts the services (new process ids), each edge drained
    // first so its stations move to the other one, and the station plays afterwards.
    let pid = |h: &Host, name: &str| {
        std::fs::read_to_string(h.dir.join(format!("run/{name}.pid"))).unwrap_or_default()
    };
    let agents_before: Vec<String> = edges.iter().map(|e| pid(e, "onda-agent")).collect();
    let cp_before = pid(&cp, "onda-control-plane");
    let upgraded = work.path().join("onda-upgraded");
    let mut bytes = std::fs::read(onda_bin()).expect("binary");
    // Bytes after the end of an ELF file are not loaded: the same program, another checksum.
    bytes.extend_from_slice(b"upgrade");
    std::fs::write(&upgraded, bytes).expect("write");
    let extra = format!("onda_binary_src={}", upgraded.display());
    let (ok, third) = ansible(
        "ansible-playbook",
        &["-i", &hosts, "site.yml", "-e", &extra],
        &home,
    );
    assert!(ok, "upgrade run:\n{third}");
    assert!(
        third.contains("RUNNING HANDLER [onda_edge : Restart the agent]")
            && third.contains("RUNNING HANDLER [onda_control_plane : Restart the control plane]"),
        "{third}"
    );
    for (e, before) in edges.iter().zip(&agents_before) {
        assert_ne!(&pid(e, "onda-agent"), before);
    }
    assert_ne!(pid(&cp, "onda-control-plane"), cp_before);
    // Both edges were drained before their restart, one after the other (serial).
    let drains: Vec<&str> = third
        .split("HANDLER [onda_edge : Drain the node]")
        .skip(1)
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("changed:") || l.starts_with("skipping:"))
        })
        .collect();
    assert!(
        drains.len() == 2
            && drains[0].starts_with("changed: [edge1")
            && drains[1].starts_with("changed: [edge2"),
        "{drains:?}\n{third}"
    );
    let got = wait_for(
        "the station playing after the upgrade",
        Duration::from_secs(30),
        || async {
            let r = http.get(&listen).send().await.ok()?;
            let to = r.headers().get("location")?.to_str().ok()?.to_string();
            onda_tests::cluster::audio_bytes(&to, 16 * 1024).await
        },
    )
    .await;
    assert!(got >= 16 * 1024);
    drop(edges);
    drop(cp);
}
