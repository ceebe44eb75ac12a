//! Benchmark (not a test): `onda edge` against Icecast 2 on this machine, with the same 128 kbps
//! MP3 source and the same load generator, one server at a time. Reports per case and server:
//! listeners that kept ≥ 90 % of the bitrate, server CPU % and RSS, and onda/Icecast ratios.
//!
//! Run with `scripts/bench-edge.sh` (installs icecast2, builds release binaries). Options:
//! `--cases 1000,storm4000,ramp10000` `--window SECS` `--servers icecast,onda`
//! `--wrap "heaptrack -o FILE"` (onda under a heap profiler; its figures are then not comparable).

use onda_tests::load::{LoadPlan, LoadReport, run};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Case {
    name: String,
    listeners: usize,
    ramp: Duration,
}

fn parse_case(s: &str) -> Option<Case> {
    let (kind, n) = if let Some(n) = s.strip_prefix("storm") {
        ("storm", n)
    } else if let Some(n) = s.strip_prefix("ramp") {
        ("ramp", n)
    } else {
        ("steady", s)
    };
    let listeners: usize = n.parse().ok()?;
    let ramp = match kind {
        "storm" => Duration::ZERO,
        // About 1,000 new listeners a second, as a popular show starting.
        _ => Duration::from_millis((listeners as u64).max(1)),
    };
    Some(Case {
        name: s.to_string(),
        listeners,
        ramp,
    })
}

struct Server {
    name: &'static str,
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18000)
}

fn start_icecast(dir: &Path) -> anyhow::Result<Server> {
    let port = free_port();
    let xml = format!(
        r#"<icecast>
  <location>bench</location><admin>bench@localhost</admin><hostname>127.0.0.1</hostname>
  <limits><clients>30000</clients><sources>4</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>65536</burst-size></limits>
  <authentication><source-password>hackme</source-password><admin-user>admin</admin-user><admin-password>admin-bench</admin-password></authentication>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>1</fileserve>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{d}</logdir><webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>1</loglevel></logging>
  <security><chroot>0</chroot><changeowner><user>icecast2</user><group>icecast</group></changeowner></security>
</icecast>"#,
        d = dir.display()
    );
    let cfg = dir.join("icecast.xml");
    std::fs::write(&cfg, xml)?;
    let child = Command::new("icecast2")
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server {
        name: "icecast",
        child,
        addr: format!("127.0.0.1:{port}"),
    })
}

fn start_onda(dir: &Path, onda: &Path, wrap: Option<&str>) -> anyhow::Result<Server> {
    let port = free_port();
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[limits]\nmax_connections = 30000\nmax_connections_per_ip = 0\n\n[[mounts]]\npath = \"/live\"\nsource_password = \"hackme\"\n"
    );
    let cfg = dir.join("edge.toml");
    std::fs::write(&cfg, toml)?;
    let mut cmd = onda_tests::bench::onda_command(onda, wrap);
    let child = cmd
        .args(["edge", "--config"])
        .arg(&cfg)
        .env("ONDA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server {
        name: "onda",
        child,
        addr: format!("127.0.0.1:{port}"),
    })
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / ticks
}

/// A `/proc/{pid}/status` figure (`VmRSS`, `RssAnon`) in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    onda_tests::bench::status_kib(pid, field) as f64 / 1024.0
}

async fn wait_for_source(addr: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = onda_shared::http::get(format!("http://{addr}/status-json.xsl")).await
            && let Ok(t) = r.text().await
            && t.contains("\"listenurl\"")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

struct Row {
    case: String,
    server: &'static str,
    report: LoadReport,
    cpu_pct: f64,
    rss_mib: f64,
    /// Of it, anonymous memory (without the binary's and libraries' pages).
    anon_mib: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cases: Vec<Case> = arg("--cases")
        .unwrap_or_else(|| "1000,storm4000,ramp10000".to_string())
        .split(',')
        .filter_map(parse_case)
        .collect();
    let window = Duration::from_secs(arg("--window").and_then(|w| w.parse().ok()).unwrap_or(20));
    let servers = arg("--servers").unwrap_or_else(|| "icecast,onda".to_string());
    let onda = onda_tests::bench::release_onda(arg("--onda"));
    let ticks: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);

    let work = tempfile::tempdir()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Icecast drops to its own user and must write its logs here.
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777))?;
    }
    let track = make_track(work.path())?;

    let mut rows = Vec::new();
    for name in servers.split(',') {
        let server = match name {
            "icecast" => start_icecast(work.path())?,
            "onda" => start_onda(work.path(), &onda, arg("--wrap").as_deref())?,
            other => anyhow::bail!("unknown server {other}"),
        };
        let url = format!("icecast://source:hackme@{}/live", server.addr);
        let mut source = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(&track)
            .args([
                "-c",
                "copy",
                "-content_type",
                "audio/mpeg",
                "-f",
                "mp3",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        anyhow::ensure!(
            wait_for_source(&server.addr).await,
            "{}: the source did not connect",
            server.name
        );
        let pid = server.child.id();
        for case in &cases {
            let plan = LoadPlan {
                addr: server.addr.clone(),
                path: "/live".to_string(),
                listeners: case.listeners,
                ramp: case.ramp,
                settle: Duration::from_secs(3),
                window,
                bitrate_kbps: 128,
            };
            // CPU is measured over connect + settle + window: the whole cost of the case.
            let cpu0 = cpu_seconds(pid, ticks);
            let t0 = Instant::now();
            let report = run(&plan).await;
            let cpu_pct = (cpu_seconds(pid, ticks) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
            let (rss, anon) = (status_mib(pid, "VmRSS"), status_mib(pid, "RssAnon"));
            eprintln!(
                "{} {}: {report:?} cpu {cpu_pct:.1}% rss {rss:.1} MiB ({anon:.1} anonymous)",
                server.name, case.name
            );
            rows.push(Row {
                case: case.name.clone(),
                server: server.name,
                report,
                cpu_pct,
                rss_mib: rss,
                anon_mib: anon,
            });
            // Let the server close the previous case's connections.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let _ = source.kill();
        let _ = source.wait();
        drop(server);
    }

    print_table(&rows, &cases);
    Ok(())
}

/// A minute of 440 Hz MP3 at 128 kbit/s for the source to loop.
fn make_track(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let track = dir.join("tone.mp3");
    let made = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=60",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
        ])
        .arg(&track)
        .status()?;
    anyhow::ensure!(made.success(), "ffmpeg could not make the test track");
    Ok(track)
}

/// The results as a Markdown table, then onda's ratios to Icecast per case.
fn print_table(rows: &[Row], cases: &[Case]) {
    println!(
        "| case | server | kept ≥90 % | failed | ended early | min / median rate | all connected after | CPU % | RSS MiB | of it anonymous MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let rep = &r.report;
        println!(
            "| {} | {} | {}/{} ({:.2} %) | {} | {} | {:.2} / {:.2} | {} | {:.1} | {:.1} | {:.1} |",
            r.case,
            r.server,
            rep.kept_up,
            rep.listeners,
            rep.kept_up as f64 * 100.0 / rep.listeners.max(1) as f64,
            rep.failed,
            rep.ended_early,
            rep.min_rate_ratio,
            rep.median_rate_ratio,
            rep.all_connected_after
                .map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
            r.cpu_pct,
            r.rss_mib,
            r.anon_mib
        );
    }
    println!();
    for case in cases {
        let find = |s: &str| rows.iter().find(|r| r.case == case.name && r.server == s);
        if let (Some(i), Some(o)) = (find("icecast"), find("onda")) {
            // CPU per listener that kept up: a server that refuses half its listeners must not
            // look cheap for it.
            let per = |r: &Row| r.cpu_pct / r.report.kept_up.max(1) as f64;
            println!(
                "{}: CPU per listener kept up onda/icecast = {:.2} (total CPU {:.2}), RSS onda/icecast = {:.2}, kept up onda {} vs icecast {}",
                case.name,
                per(o) / per(i).max(1e-9),
                o.cpu_pct / i.cpu_pct.max(0.01),
                o.rss_mib / i.rss_mib.max(0.01),
                o.report.kept_up,
                i.report.kept_up
            );
        }
    }
}
