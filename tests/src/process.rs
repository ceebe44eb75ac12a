//! Real `onda` processes for tests: each runs in a temp dir of its own with stdout and stderr
//! captured to files, is killed when dropped, and has its logs printed if the test panics.
//!
//! The binary is `target/debug/onda` of this workspace (built by `make test` before the tests),
//! or the path in `ONDA_BIN`.

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

/// A free TCP port on 127.0.0.1 (for tests of fixed-address behaviour; prefer port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Onda {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    name: String,
}

impl Onda {
    /// Starts `onda ARGS` in a new temp dir with extra environment variables.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Onda {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(name, dir, args, env)
    }

    /// Starts `onda ARGS` in a given dir (e.g. to run a second time on the same data).
    pub fn start_in(
        name: &str,
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Onda {
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("log file");
        let err = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut cmd = Command::new(onda_bin());
        cmd.args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("ONDA_LOG", "info");
        // Nothing from the developer's environment leaks into a test's configuration.
        for (k, _) in std::env::vars() {
            if k.starts_with("ONDA_") && k != "ONDA_LOG" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn onda");
        Onda {
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
        self.kill();
        self.dir.take().expect("dir")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
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
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
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

impl Drop for Onda {
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
