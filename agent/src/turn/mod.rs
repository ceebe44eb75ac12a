//! The node's TURN relay for calls: coturn (`turnserver`), run by the agent as a child process.
//! The agent writes its configuration ([`conf`]) into `STATE_DIR/turn/`, starts it, restarts it
//! when it exits (backing off while it keeps failing), and stops it on shutdown. The shared
//! secrets arrive with the desired state and go into coturn's user database ([`userdb`]), which
//! coturn reads on every authentication: a rotation applies without a restart and without
//! dropping relays. Only a change of realm (a setting of the control plane) restarts coturn,
//! since the realm is in its configuration file.
//!
//! coturn logs to its stdout, which the agent reads: it meters each session's relayed bytes
//! by tenant from the usage lines ([`meter`]) for the node's usage reports, and writes every
//! line on to `turnserver.log`.
//!
//! The node advertises the `turn:` (and with a certificate `turns:`) URLs built here; clients
//! get credentials for them from the control plane.

pub mod conf;
pub mod meter;
pub mod userdb;

use crate::config::{TurnConfig, TurnMode};
use anyhow::Context as _;
use onda_shared::cluster::proto::TurnSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The realm coturn runs with before the first desired state names the cluster's.
const DEFAULT_REALM: &str = "onda";

/// A coturn that ran this long had a good run: its next exit restarts it at once again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// The longest wait before restarting a coturn that keeps exiting.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The executable `cfg` asks for, when TURN is to run: `None` when it is off, or `auto` and
/// coturn is not installed; an error when it is `on` and coturn is missing.
pub fn binary(cfg: &TurnConfig) -> anyhow::Result<Option<PathBuf>> {
    if cfg.enabled == TurnMode::Off {
        return Ok(None);
    }
    match (find(&cfg.binary), cfg.enabled) {
        (Some(found), _) => Ok(Some(found)),
        (None, TurnMode::On) => anyhow::bail!(
            "turn.enabled = \"on\" but coturn's {} is not installed: install the Debian package \
             coturn (scripts/install-deps.sh does), or set turn.binary",
            cfg.binary.display()
        ),
        (None, _) => Ok(None),
    }
}

/// `binary` itself when it names a path, else the first executable of that name on PATH.
fn find(binary: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if binary.components().count() > 1 {
        return is_file(binary).then(|| binary.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|p| is_file(p))
}

/// The URLs clients reach the relay at, on `host` (a name, an IPv4 address, or an IPv6 one in
/// brackets).
pub fn urls(cfg: &TurnConfig, host: &str) -> Vec<String> {
    let mut urls = vec![
        format!("turn:{host}:{}?transport=udp", cfg.port),
        format!("turn:{host}:{}?transport=tcp", cfg.port),
    ];
    if !cfg.cert.as_os_str().is_empty() {
        urls.push(format!("turns:{host}:{}?transport=tcp", cfg.tls_port));
    }
    urls
}

/// The host of the advertised URLs: `turn.public_host`, else the host of the edge's public URL.
pub fn public_host(cfg: &TurnConfig, edge_url: &str) -> anyhow::Result<String> {
    let host = cfg.public_host.trim();
    if !host.is_empty() {
        return Ok(if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        });
    }
    let url = url::Url::parse(edge_url).with_context(|| format!("edge URL {edge_url:?}"))?;
    url.host_str().map(str::to_string).with_context(|| {
        format!("the edge URL {edge_url} has no host: set turn.public_host to the relay's name")
    })
}

/// Counters of the relay, on the agent's `/metrics`.
#[derive(Clone)]
pub struct TurnMetrics {
    /// 1 while coturn runs.
    pub up: prometheus::IntGauge,
    /// Starts of coturn after it exited.
    pub restarts: prometheus::IntCounter,
    /// coturn's session usage lines by `result`: `counted` (a tenant's, metered), `unattributed`
    /// (a username of no tenant), `unparsed`.
    pub usage_lines: prometheus::IntCounterVec,
}

/// The running relay: dropping it leaves coturn to the shutdown that [`Turn::stop`] does.
pub struct Turn {
    specs: watch::Sender<Option<TurnSpec>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// What the node advertises.
    pub urls: Vec<String>,
    /// coturn's directory (configuration, user database, log, pid file).
    pub dir: PathBuf,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("urls", &self.urls)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// coturn's files in its directory.
struct Paths {
    conf: PathBuf,
    userdb: PathBuf,
    log: PathBuf,
    pid: PathBuf,
}

impl Paths {
    fn in_dir(dir: &Path) -> Paths {
        Paths {
            conf: dir.join("turnserver.conf"),
            userdb: dir.join("turndb"),
            log: dir.join("turnserver.log"),
            pid: dir.join("turnserver.pid"),
        }
    }
}

impl Turn {
    /// Starts supervising coturn (`binary`) with `cfg`, its files in `dir`, advertised at `urls`.
    pub fn start(
        cfg: TurnConfig,
        binary: PathBuf,
        dir: PathBuf,
        urls: Vec<String>,
        metrics: TurnMetrics,
        tally: meter::Tally,
    ) -> anyhow::Result<Turn> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // The user database holds the secrets credentials are made with: the agent's user only.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
        let paths = Paths::in_dir(&dir);
        end_stale(&paths);
        let (specs, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(
            Supervised {
                cfg,
                binary,
                paths,
                metrics,
                tally,
            },
            rx,
            stop.clone(),
        ));
        tracing::info!("TURN relay at {}", urls.join(", "));
        Ok(Turn {
            specs,
            stop,
            task,
            urls,
            dir,
        })
    }

    /// The secrets (and realm) of a desired state; coturn gets them at once.
    pub fn set(&self, spec: Option<&TurnSpec>) {
        self.specs.send_if_modified(|current| {
            let changed = current.as_ref() != spec;
            if changed {
                *current = spec.cloned();
            }
            changed
        });
    }

    /// Stops coturn and waits for it to end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!("the TURN supervisor failed: {e}");
        }
    }
}

/// Ends a coturn that a previous run of this agent started and could not stop (the agent was
/// killed): it would hold the ports. Only a process whose command line names this node's
/// configuration file is touched.
fn end_stale(paths: &Paths) {
    let Some(pid) = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
        let conf = paths.conf.as_os_str().as_encoded_bytes();
        cmd.windows(conf.len()).any(|w| w == conf)
    });
    let Some(pid) = rustix::process::Pid::from_raw(pid).filter(|_| ours) else {
        return;
    };
    tracing::warn!("ending coturn {pid:?} left running by an earlier run of this agent");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Supervised {
    cfg: TurnConfig,
    binary: PathBuf,
    paths: Paths,
    metrics: TurnMetrics,
    tally: meter::Tally,
}

/// Why one run of coturn ended.
enum Ended {
    /// The agent stops.
    Stopped,
    /// The realm changed: coturn starts again with the new configuration at once.
    Realm,
    Exited(std::io::Result<std::process::ExitStatus>),
}

impl Supervised {
    /// Writes coturn's configuration for `realm` and the secrets of `spec`.
    async fn prepare(&self, realm: &str, spec: Option<&TurnSpec>) -> anyhow::Result<()> {
        let files = conf::Files {
            userdb: &self.paths.userdb,
            pid: &self.paths.pid,
        };
        let text = conf::render(&self.cfg, realm, files);
        std::fs::write(&self.paths.conf, text)
            .with_context(|| format!("cannot write {}", self.paths.conf.display()))?;
        self.write_secrets(realm, spec).await
    }

    async fn write_secrets(&self, realm: &str, spec: Option<&TurnSpec>) -> anyhow::Result<()> {
        let secrets = spec.map(|s| s.secrets.as_slice()).unwrap_or_default();
        userdb::write(&self.paths.userdb, realm, secrets).await
    }

    /// Waits for the running coturn to exit, applying new secrets meanwhile.
    async fn run(
        &self,
        child: &mut tokio::process::Child,
        realm: &str,
        specs: &mut watch::Receiver<Option<TurnSpec>>,
        stop: &CancellationToken,
    ) -> Ended {
        loop {
            tokio::select! {
                status = child.wait() => return Ended::Exited(status),
                changed = specs.changed() => {
                    if changed.is_err() {
                        return Ended::Stopped;
                    }
                    let spec = specs.borrow_and_update().clone();
                    if spec.as_ref().is_some_and(|s| s.realm != realm) {
                        return Ended::Realm;
                    }
                    match self.write_secrets(realm, spec.as_ref()).await {
                        Ok(()) => tracing::info!(
                            "TURN secrets updated ({} live)",
                            spec.as_ref().map_or(0, |s| s.secrets.len())
                        ),
                        Err(e) => tracing::error!("cannot give coturn the new TURN secrets: {e:#}"),
                    }
                }
                () = stop.cancelled() => return Ended::Stopped,
            }
        }
    }
}

/// How many of coturn's lines may wait for the log file's thread; beyond that (a disk that does
/// not take writes) lines are left out of the log, never out of the metering.
const LOG_QUEUE: usize = 1024;

/// The sending end of coturn's log: lines go to a blocking thread that owns the [`LogFile`], so
/// a slow disk never stalls the async worker that reads coturn's output and meters it. One per
/// supervisor, cloned into the reader of each coturn it starts: the lines of successive runs
/// go to the file in order, through one thread.
#[derive(Clone)]
struct LogLines {
    lines: tokio::sync::mpsc::Sender<Vec<u8>>,
    path: Arc<PathBuf>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl LogFile {
    /// Starts the log's thread; it ends, having written what was sent, once every clone of the
    /// returned sender is gone (the handle says when).
    fn spawn(path: PathBuf) -> (LogLines, tokio::task::JoinHandle<()>) {
        let (lines, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(LOG_QUEUE);
        let mut file = LogFile::new(path.clone());
        let thread = tokio::task::spawn_blocking(move || {
            while let Some(line) = queue.blocking_recv() {
                file.write(&line);
            }
        });
        let lines = LogLines {
            lines,
            path: Arc::new(path),
            dropped: Arc::default(),
        };
        (lines, thread)
    }
}

impl LogLines {
    fn write(&self, line: &[u8]) {
        if self.lines.try_send(line.to_vec()).is_err() {
            let dropped = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            // Said at the first line left out and then at every thousandth.
            if dropped % 1000 == 1 {
                tracing::warn!(
                    "coturn's log {} does not keep up: {dropped} lines left out of it",
                    self.path.display(),
                );
            }
        }
    }
}

/// coturn's log file, written from coturn's output on a blocking thread ([`LogFile::spawn`]).
/// It is opened again when it was moved or removed (logrotate's default `create`), checked at
/// most once a second; a failure to write it is said once and never stops the metering.
struct LogFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    checked: Instant,
    failed: bool,
}

impl LogFile {
    fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            file: None,
            checked: Instant::now(),
            failed: false,
        }
    }

    fn write(&mut self, line: &[u8]) {
        use std::io::Write as _;
        use std::os::unix::fs::MetadataExt as _;
        if self.file.is_some() && self.checked.elapsed() >= Duration::from_secs(1) {
            self.checked = Instant::now();
            let same = |f: &std::fs::File| {
                let (Ok(open), Ok(named)) = (f.metadata(), std::fs::metadata(&self.path)) else {
                    return false;
                };
                (open.dev(), open.ino()) == (named.dev(), named.ino())
            };
            if !self.file.as_ref().is_some_and(same) {
                self.file = None;
            }
        }
        if self.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => self.file = Some(f),
                Err(e) => self.fail(&e),
            }
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(line)
        {
            self.fail(&e);
            self.file = None;
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        if !std::mem::replace(&mut self.failed, true) {
            tracing::warn!("cannot write coturn's log {}: {e}", self.path.display());
        }
    }
}

/// SIGTERM, then SIGKILL if coturn has not ended within 3 s.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn supervise(
    s: Supervised,
    mut specs: watch::Receiver<Option<TurnSpec>>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    let mut first = true;
    let (log, _log_thread) = LogFile::spawn(s.paths.log.clone());
    while !stop.is_cancelled() {
        let spec = specs.borrow_and_update().clone();
        let realm = spec
            .as_ref()
            .map_or(DEFAULT_REALM, |s| s.realm.as_str())
            .to_string();
        if let Err(e) = s.prepare(&realm, spec.as_ref()).await {
            tracing::error!("cannot prepare coturn: {e:#}");
        }
        if !first {
            s.metrics.restarts.inc();
        }
        first = false;
        let started = Instant::now();
        let spawned = tokio::process::Command::new(&s.binary)
            .arg("-c")
            .arg(&s.paths.conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let ended = match spawned {
            Ok(mut child) => {
                s.metrics.up.set(1);
                let reader = child.stdout.take().map(|out| {
                    let log = log.clone();
                    tokio::spawn(meter::read(
                        out,
                        s.tally.clone(),
                        s.metrics.usage_lines.clone(),
                        move |line| log.write(line),
                    ))
                });
                let ended = s.run(&mut child, &realm, &mut specs, &stop).await;
                if !matches!(ended, Ended::Exited(_)) {
                    terminate(&mut child).await;
                }
                // The usage coturn logged on its way out is in the tally before the agent's
                // last checkpoint. Bounded: a grandchild holding the pipe open would keep it.
                if let Some(reader) = reader
                    && tokio::time::timeout(Duration::from_secs(5), reader)
                        .await
                        .is_err()
                {
                    tracing::warn!("coturn's output did not end within 5 s of its exit");
                }
                s.metrics.up.set(0);
                ended
            }
            Err(e) => Ended::Exited(Err(e)),
        };
        match ended {
            Ended::Stopped => break,
            Ended::Realm => tracing::info!("the TURN realm changed: restarting coturn"),
            Ended::Exited(status) => {
                if started.elapsed() >= HEALTHY_RUN {
                    failures = 0;
                }
                failures += 1;
                let wait =
                    (Duration::from_millis(250) * 2u32.pow(failures.min(6) - 1)).min(MAX_BACKOFF);
                let status = match status {
                    Ok(st) => format!("exited ({st})"),
                    Err(e) => format!("could not start ({e})"),
                };
                // Said after the wait: a Ctrl-C in a terminal (onda dev) signals coturn, in the
                // agent's process group, a moment before the agent itself stops.
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => {
                        tracing::info!("coturn {status} as the agent stops");
                        break;
                    }
                }
                tracing::warn!(
                    "coturn {status}; starting it again after {wait:?} (its log: {})",
                    s.paths.log.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coturns_lines_reach_the_log_file_through_its_thread() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("turn.log");
        std::fs::write(&path, "before\n").expect("write");
        let (log, thread) = LogFile::spawn(path.clone());
        // Two coturn runs' readers, one after the other, through the one thread.
        let first = log.clone();
        first.write(b"one\n");
        drop(first);
        log.write(b"two: usage\n");
        drop(log);
        thread.await.expect("the log's thread");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "before\none\ntwo: usage\n"
        );
        // A log that cannot be opened costs nothing but the warning.
        let (nowhere, thread) = LogFile::spawn(dir.path().join("missing/turn.log"));
        nowhere.write(b"lost\n");
        drop(nowhere);
        thread.await.expect("the log's thread");
    }

    #[test]
    fn urls_name_udp_tcp_and_tls_when_there_is_a_certificate() {
        let mut cfg = TurnConfig::default();
        assert_eq!(
            urls(&cfg, "edge1.example.com"),
            [
                "turn:edge1.example.com:3478?transport=udp",
                "turn:edge1.example.com:3478?transport=tcp"
            ]
        );
        cfg.cert = "/etc/onda/turn.pem".into();
        cfg.key = "/etc/onda/turn.key".into();
        assert_eq!(
            urls(&cfg, "[2001:db8::1]")[2],
            "turns:[2001:db8::1]:5349?transport=tcp"
        );
    }

    #[test]
    fn the_host_is_the_configured_one_else_the_edges() {
        let mut cfg = TurnConfig::default();
        let host = |cfg: &TurnConfig, url: &str| public_host(cfg, url).expect(url);
        assert_eq!(
            host(&cfg, "http://edge1.example.com:8000"),
            "edge1.example.com"
        );
        assert_eq!(host(&cfg, "http://[::1]:8000"), "[::1]");
        cfg.public_host = "2001:db8::1".into();
        assert_eq!(host(&cfg, "http://edge1.example.com:8000"), "[2001:db8::1]");
        cfg.public_host = "turn1.example.com".into();
        assert_eq!(host(&cfg, "http://127.0.0.1:8000"), "turn1.example.com");
    }

    #[test]
    fn off_is_off_and_on_without_coturn_says_what_to_install() {
        let off = TurnConfig {
            enabled: TurnMode::Off,
            ..TurnConfig::default()
        };
        assert_eq!(binary(&off).expect("off"), None);
        let missing = TurnConfig {
            binary: "/nonexistent/turnserver".into(),
            ..TurnConfig::default()
        };
        assert_eq!(binary(&missing).expect("auto"), None);
        let err = binary(&TurnConfig {
            enabled: TurnMode::On,
            ..missing
        })
        .expect_err("on");
        assert!(
            err.to_string()
                .contains("install the Debian package coturn"),
            "{err}"
        );
    }
}
