//! Real processes for tests (`onda` itself, and real clients such as ffmpeg): each runs in a temp
//! dir of its own with stdout and stderr captured to files, is killed when dropped, and has its
//! logs printed (and its directory kept) if the test panics. Each is the leader of a process
//! group of its own, and dropping it kills the whole group: whatever it started goes too.
//!
//! The binary is `target/debug/onda` of this workspace (built by `make test` before the tests),
//! or the path in `ONDA_BIN`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn onda_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ONDA_BIN") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("..").join("target"));
    let bin = target.join("debug").join("onda");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin onda` (make test does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (for tests of fixed-address behaviour; prefer port 0), never
/// one this test process handed out before.
pub fn free_port() -> u16 {
    unique_port(|_| true)
}

/// A port the kernel finds free on 127.0.0.1 for TCP (and for which `also` holds), never one
/// this test process handed out before. A port is free again once its probe closes, so two
/// picks of the same test (an edge's HTTP port and its TURN port, say) could get the same one
/// and the second process would find it taken; remembering every port given keeps the picks of
/// concurrent tests of one binary apart.
pub fn unique_port(also: impl Fn(u16) -> bool) -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) && also(port) {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port that this test process did not give out before, in 1000 tries");
}

pub struct Proc {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    name: String,
}

impl Proc {
    /// `onda dev --nodes N` on a free API port and free edge ports, in a new temp dir (its
    /// `dev.json` appears in `.onda-dev/`; see [`Proc::wait_json`]).
    pub fn dev(nodes: usize, env: &[(&str, &str)]) -> Proc {
        let n = nodes.to_string();
        let args = [
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            &n,
            "--edge-port",
            "0",
        ];
        Self::start(&format!("onda dev --nodes {nodes}"), &args, env)
    }

    /// Starts `onda ARGS` in a new temp dir with extra environment variables.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(name, dir, args, env)
    }

    /// Starts `onda ARGS` in a given dir (e.g. to run a second time on the same data).
    pub fn start_in(
        name: &str,
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        Self::spawn(name, &onda_bin(), dir, args, env)
    }

    /// Starts another program (a real client: ffmpeg, curl, …) in a new temp dir.
    pub fn external(name: &str, program: &str, args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn(name, Path::new(program), dir, args, &[])
    }

    fn spawn(
        name: &str,
        program: &Path,
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("log file");
        let err = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .process_group(0)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // ONDA_LOG from the developer's environment raises the children's log level.
            .env(
                "ONDA_LOG",
                std::env::var("ONDA_LOG").unwrap_or_else(|_| "info".to_string()),
            );
        // Nothing from the developer's environment leaks into a test's configuration.
        for (k, _) in std::env::vars() {
            if k.starts_with("ONDA_") && k != "ONDA_LOG" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            child: Some(child),
            dir: Some(dir),
            name: name.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// Stops the process and hands its directory over (to start another on the same data).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.take_dir()
    }

    /// Like [`Proc::into_dir`] for a process held in a larger value: this one is left with no
    /// directory (its logs go with the directory).
    pub fn take_dir(&mut self) -> tempfile::TempDir {
        self.kill();
        self.dir.take().expect("dir")
    }

    /// `kill -9` of the process and its group; the directory stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The group first (children the process started, even if it already exited), then
            // the process itself in case the group is gone.
            if let Some(pgid) = i32::try_from(c.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to end by itself, panicking after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (graceful stop).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Reads a file the process writes (such as dev.json) once it exists and parses as JSON.
    pub async fn wait_json(&mut self, rel: &str, timeout: Duration) -> serde_json::Value {
        let path = self.path().join(rel);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(v) = serde_json::from_str(&text)
            {
                return v;
            }
            if let Some(s) = self.try_exit() {
                panic!(
                    "{} exited ({s}) before writing {rel}\n{}",
                    self.name,
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not write {rel} within {timeout:?}\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a log line on stderr containing `marker` and returns the first word after it
    /// (e.g. the address after "listening on ").
    pub async fn wait_log_word(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(word) = self
                .stderr()
                .lines()
                .find_map(|l| l.split(marker).nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return word.to_string();
            }
            if let Some(s) = self.try_exit() {
                panic!(
                    "{} exited ({s}) before logging {marker:?}\n{}",
                    self.name,
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {marker:?} within {timeout:?}\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "----- {} stdout -----\n{}\n----- {} stderr -----\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            // Keep the directory (logs, database) for a post-mortem.
            if let Some(d) = self.dir.take() {
                eprintln!("{}: files kept in {}", self.name, d.keep().display());
            }
        }
    }
}
