//! The durable usage spool. The agent takes its edge's listener usage and its TURN relay's
//! relayed bytes by tenant (`crate::turn::meter`) every checkpoint (about a second) and adds it to the report of the current interval, which is on disk — fsync'd file,
//! rename, fsync'd directory — before the next checkpoint; at the end of each interval (about
//! ten seconds) the report is sealed and sent. Sealed reports stay in the spool until the
//! control plane acknowledges storing them; a new session resends whatever is left. Together
//! with the control plane storing (node, seq) once, a report is neither lost (kill -9, a control
//! plane down, a partition) nor counted twice (a resend after a lost ack). What a `kill -9` of
//! the agent can lose is what its listeners used since the last checkpoint (their connections
//! die with the process) and what coturn logged since the last checkpoint.
//!
//! Layout of `state_dir/usage/`: `seq` holds the last sequence number handed out (written before
//! a report carries it, so no number is ever reused); the open report of the current interval is
//! `<seq>.open.json`; sealed reports waiting for their ack are `<seq>.json` (20-digit `seq`).
//! Sealing is a rename of the open file onto the sealed name, so after any crash exactly one of
//! the two exists; an open report found at start is sealed as it stands. Files are written to
//! `*.tmp` first, so a crash mid-write leaves a temp file that is ignored, never half a report.

use anyhow::Context as _;
use onda_shared::cluster::edge_mount_path;
use onda_shared::cluster::proto::{DesiredState, MountUsage, TurnUsage, UsageReport};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub struct Spool {
    dir: PathBuf,
    last_seq: u64,
    /// The current interval's report (also on disk as `<seq>.open.json`).
    open: Option<UsageReport>,
    /// Sealed reports by sequence number (also on disk), waiting for their ack.
    pending: BTreeMap<u64, UsageReport>,
    /// The open report has changes its file does not have yet (a write failed).
    dirty: bool,
    /// Usage taken while no report could be opened (the sequence number could not be made
    /// durable), with where it starts: added to the next one.
    unwritten: Option<(u64, Taken)>,
}

/// What one checkpoint took: listener usage by station mount, relayed TURN bytes by tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    pub mounts: Vec<MountUsage>,
    pub turn: Vec<TurnUsage>,
}

impl Taken {
    fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.turn.is_empty()
    }

    fn add(&mut self, more: Taken) {
        merge(&mut self.mounts, more.mounts);
        merge_turn(&mut self.turn, more.turn);
    }
}

fn sealed_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

fn open_name(seq: u64) -> String {
    format!("{seq:020}.open.json")
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, reading what earlier runs left; an open report
    /// of an interrupted run is sealed.
    pub fn open(dir: &Path) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut last_seq = match std::fs::read_to_string(dir.join("seq")) {
            Ok(text) => text.trim().parse::<u64>().with_context(|| {
                format!("{} is not a sequence number", dir.join("seq").display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut pending = BTreeMap::new();
        let mut names: Vec<(PathBuf, String)> = Vec::new();
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                names.push((path.clone(), name.to_string()));
            }
        }
        let mut sealed_any = false;
        for (path, name) in names {
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let (seq, open) = if let Some(s) = name.strip_suffix(".open.json") {
                (s.parse::<u64>().ok(), true)
            } else if let Some(s) = name.strip_suffix(".json") {
                (s.parse::<u64>().ok(), false)
            } else {
                continue;
            };
            let Some(seq) = seq else { continue };
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            match serde_json::from_slice::<UsageReport>(&bytes) {
                Ok(r) if r.seq == seq => {
                    if open {
                        let sealed = dir.join(sealed_name(seq));
                        std::fs::rename(&path, &sealed).with_context(|| {
                            format!("cannot seal {} as {}", path.display(), sealed.display())
                        })?;
                        sealed_any = true;
                    }
                    last_seq = last_seq.max(seq);
                    pending.insert(seq, r);
                }
                // Renames are atomic, so this is damage from outside: keep the file for a
                // human and say so, but do not stop metering.
                _ => tracing::error!(
                    "usage spool: {} is not a readable report; it is left in place and not sent",
                    path.display()
                ),
            }
        }
        if sealed_any {
            sync_dir(dir)?;
        }
        if !pending.is_empty() {
            tracing::info!(
                "usage spool: {} report(s) from before the restart wait to be sent",
                pending.len()
            );
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            last_seq,
            open: None,
            pending,
            dirty: false,
            unwritten: None,
        })
    }

    /// Adds one checkpoint's usage to the open report (starting one at `start_ms` if none is
    /// open) and makes it durable. Nothing is written when there is nothing to add.
    pub fn checkpoint(&mut self, start_ms: u64, end_ms: u64, taken: Taken) -> anyhow::Result<()> {
        let (start_ms, mut taken) = match self.unwritten.take() {
            Some((since, mut earlier)) => {
                earlier.add(taken);
                (since, earlier)
            }
            None => (start_ms, taken),
        };
        if taken.is_empty() && !self.dirty {
            if let Some(open) = &mut self.open {
                open.period_end_ms = open.period_end_ms.max(end_ms);
            }
            return Ok(());
        }
        if self.open.is_none() {
            let seq = self.last_seq + 1;
            // The number is durable before a report carries it: no restart hands it out again
            // (a reused number would be taken for a resend and dropped).
            if let Err(e) = write_durably(&self.dir, "seq", seq.to_string().as_bytes()) {
                self.unwritten = Some((start_ms, std::mem::take(&mut taken)));
                return Err(e);
            }
            self.last_seq = seq;
            self.open = Some(UsageReport {
                seq,
                period_start_ms: start_ms,
                period_end_ms: start_ms,
                mounts: Vec::new(),
                turn: Vec::new(),
            });
        }
        let Some(open) = &mut self.open else {
            unreachable!("opened above")
        };
        open.period_end_ms = open.period_end_ms.max(end_ms);
        merge(&mut open.mounts, taken.mounts);
        merge_turn(&mut open.turn, taken.turn);
        self.dirty = true;
        let bytes = serde_json::to_vec(open)?;
        write_durably(&self.dir, &open_name(open.seq), &bytes)?;
        self.dirty = false;
        Ok(())
    }

    /// Seals the open report, if any: from now on it is sent until acknowledged.
    pub fn seal(&mut self) -> anyhow::Result<Option<UsageReport>> {
        if self.dirty {
            // The file must hold everything the report does before it is sealed and sent.
            self.checkpoint(0, 0, Taken::default())?;
        }
        let Some(report) = self.open.take() else {
            return Ok(None);
        };
        let from = self.dir.join(open_name(report.seq));
        let to = self.dir.join(sealed_name(report.seq));
        if let Err(e) = std::fs::rename(&from, &to)
            .and_then(|()| sync_dir(&self.dir).map_err(std::io::Error::other))
        {
            // Keep it open: the next seal tries again, and nothing is lost meanwhile.
            self.open = Some(report);
            return Err(e).with_context(|| format!("cannot seal {}", from.display()));
        }
        self.pending.insert(report.seq, report.clone());
        Ok(Some(report))
    }

    /// The control plane stored `seq`: forget it.
    pub fn ack(&mut self, seq: u64) -> anyhow::Result<()> {
        if self.pending.remove(&seq).is_some() {
            let path = self.dir.join(sealed_name(seq));
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }

    /// Sealed reports after `after`, oldest first.
    pub fn pending_after(&self, after: u64) -> Vec<UsageReport> {
        self.pending
            .range(after.saturating_add(1)..)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Sealed reports not yet acknowledged.
    pub fn depth(&self) -> usize {
        self.pending.len()
    }
}

/// Adds `more` into `into`, one entry per (station, mount): times, sessions and bytes add up;
/// the peak is the largest seen (each take restarts its peak at the listeners still on).
fn merge(into: &mut Vec<MountUsage>, more: Vec<MountUsage>) {
    for m in more {
        match into
            .iter_mut()
            .find(|u| u.station_id == m.station_id && u.mount == m.mount)
        {
            Some(u) => {
                u.listener_ms += m.listener_ms;
                u.sessions += m.sessions;
                u.bytes_sent += m.bytes_sent;
                u.peak_listeners = u.peak_listeners.max(m.peak_listeners);
            }
            None => into.push(m),
        }
    }
}

/// Adds `more` into `into`, one entry per tenant.
fn merge_turn(into: &mut Vec<TurnUsage>, more: Vec<TurnUsage>) {
    for t in more {
        match into.iter_mut().find(|u| u.tenant_id == t.tenant_id) {
            Some(u) => u.relayed_bytes = u.relayed_bytes.saturating_add(t.relayed_bytes),
            None => into.push(t),
        }
    }
}

/// Which station and station mount each edge path belongs to. Paths are never forgotten while
/// the agent runs: a listener may leave a removed mount later, and its time still belongs to
/// the station.
pub type PathMap = std::sync::Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>>;

pub fn remember_paths(map: &PathMap, desired: &DesiredState) {
    let mut m = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A live stream's viewers are usage of the stream, under the mount name "/hls".
    for l in &desired.live_streams {
        m.insert(
            format!("/hls/{}", l.slug),
            (l.stream_id.clone(), "/hls".to_string()),
        );
    }
    for s in &desired.stations {
        let live = s.autodj.iter().filter_map(|a| a.live_mount.as_deref());
        for mount in s.mounts.iter().map(|m| m.path.as_str()).chain(live) {
            m.insert(
                edge_mount_path(&s.slug, mount),
                (s.station_id.clone(), mount.to_string()),
            );
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Takes the edge's usage and the TURN relay's since the last take into the spool's open
/// report. `since_ms` is where this checkpoint starts and moves to its end.
pub fn checkpoint(
    take: &dyn Fn() -> Vec<onda_edge::MountUsage>,
    turn: &crate::turn::meter::Tally,
    paths: &PathMap,
    spool: &std::sync::Mutex<Spool>,
    since_ms: &mut u64,
) -> anyhow::Result<()> {
    let taken = take();
    let turn = turn.take();
    let end = now_ms().max(*since_ms);
    let start = std::mem::replace(since_ms, end);
    let map = paths
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut mounts: Vec<MountUsage> = Vec::new();
    for u in taken {
        let Some((station_id, mount)) = map.get(&u.path) else {
            // Every edge mount comes from the desired state, whose paths are remembered first.
            tracing::warn!("usage of {} belongs to no station: not reported", u.path);
            continue;
        };
        merge(
            &mut mounts,
            vec![MountUsage {
                station_id: station_id.clone(),
                mount: mount.clone(),
                listener_ms: u.listener_ms,
                peak_listeners: u.peak_listeners,
                sessions: u.sessions,
                bytes_sent: u.bytes_sent,
            }],
        );
    }
    spool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .checkpoint(start, end, Taken { mounts, turn })
}

/// The metering loop: a checkpoint every `checkpoint_ms`, a sealed report every `interval_ms`
/// (announced on `sealed`), until `stop`; then one last checkpoint and seal, after the caller
/// has stopped the edge (see [`finish`]).
#[allow(clippy::too_many_arguments)]
pub async fn meter(
    take: impl Fn() -> Vec<onda_edge::MountUsage> + Send + Sync + 'static,
    turn: crate::turn::meter::Tally,
    paths: PathMap,
    spool: std::sync::Arc<std::sync::Mutex<Spool>>,
    sealed: tokio::sync::watch::Sender<u64>,
    depth: prometheus::IntGauge,
    every: crate::config::UsageConfig,
    stop: tokio_util::sync::CancellationToken,
) -> Meter {
    let checkpoint_every = std::time::Duration::from_millis(every.checkpoint_ms);
    let interval = std::time::Duration::from_millis(every.interval_ms);
    let mut since = now_ms();
    let mut tick = tokio::time::interval(checkpoint_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_seal = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        if let Err(e) = checkpoint(&take, &turn, &paths, &spool, &mut since) {
            // What was taken stays in the spool's memory (the open report, or usage waiting
            // for one) until a checkpoint succeeds; say so loudly, this is billing.
            tracing::error!("usage spool: {e:#}");
            continue;
        }
        if tokio::time::Instant::now() >= next_seal {
            next_seal += interval;
            seal_and_announce(&spool, &sealed, &depth);
        }
    }
    Meter {
        depth,
        take: Box::new(take),
        turn,
        paths,
        spool,
        sealed,
        since,
    }
}

/// What the metering loop hands back when it stops, for the last checkpoint.
pub struct Meter {
    take: Box<dyn Fn() -> Vec<onda_edge::MountUsage> + Send + Sync>,
    turn: crate::turn::meter::Tally,
    paths: PathMap,
    spool: std::sync::Arc<std::sync::Mutex<Spool>>,
    sealed: tokio::sync::watch::Sender<u64>,
    depth: prometheus::IntGauge,
    since: u64,
}

impl Meter {
    /// The last checkpoint and seal, once the edge and coturn have stopped (its listeners have
    /// left, so their time is all in the take, and what coturn logged is in the tally).
    pub fn finish(mut self) {
        if let Err(e) = checkpoint(
            &*self.take,
            &self.turn,
            &self.paths,
            &self.spool,
            &mut self.since,
        ) {
            tracing::error!("usage spool: {e:#}");
        }
        seal_and_announce(&self.spool, &self.sealed, &self.depth);
    }
}

fn seal_and_announce(
    spool: &std::sync::Mutex<Spool>,
    sealed: &tokio::sync::watch::Sender<u64>,
    depth: &prometheus::IntGauge,
) {
    let result = {
        let mut spool = spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = spool.seal();
        depth.set(i64::try_from(spool.depth()).unwrap_or(i64::MAX));
        r
    };
    match result {
        Ok(Some(r)) => {
            sealed.send_replace(r.seq);
        }
        Ok(None) => {}
        Err(e) => tracing::error!("usage spool: {e:#}"),
    }
}

fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    sync_dir(dir)
}

/// A rename is durable only once its directory is.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn usage(ms: u64, peak: u64) -> Taken {
        Taken {
            mounts: vec![MountUsage {
                station_id: "st".into(),
                mount: "/a.mp3".into(),
                listener_ms: ms,
                peak_listeners: peak,
                sessions: 1,
                bytes_sent: 10,
            }],
            turn: Vec::new(),
        }
    }

    fn relayed(pairs: &[(&str, u64)]) -> Taken {
        Taken {
            mounts: Vec::new(),
            turn: pairs
                .iter()
                .map(|&(t, b)| TurnUsage {
                    tenant_id: t.into(),
                    relayed_bytes: b,
                })
                .collect(),
        }
    }

    /// Relayed bytes add up per tenant like listener usage, a report of TURN bytes alone is a
    /// report, and what is in the open report survives a restart once: sealed, never again.
    #[test]
    fn turn_bytes_add_up_per_tenant_and_survive_a_restart_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        s.checkpoint(0, 10, relayed(&[("ten_a", 100), ("ten_b", 5)]))
            .unwrap();
        s.checkpoint(10, 20, relayed(&[("ten_a", 50)])).unwrap();
        let mut more = usage(3, 1);
        more.turn = relayed(&[("ten_b", 7)]).turn;
        s.checkpoint(20, 30, more).unwrap();
        drop(s); // killed with the report open
        let mut s = Spool::open(dir.path()).unwrap();
        let r = &s.pending_after(0)[0];
        assert_eq!((r.seq, r.period_start_ms, r.period_end_ms), (1, 0, 30));
        assert_eq!(r.turn, relayed(&[("ten_a", 150), ("ten_b", 12)]).turn);
        assert_eq!(r.mounts.len(), 1);
        s.ack(1).unwrap();
        // Usage taken while the sequence number cannot be written is kept for the next report.
        let blocker = dir.path().join("seq.tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(s.checkpoint(30, 40, relayed(&[("ten_a", 9)])).is_err());
        std::fs::remove_dir(&blocker).unwrap();
        s.checkpoint(40, 50, relayed(&[("ten_a", 1)])).unwrap();
        let r = s.seal().unwrap().unwrap();
        assert_eq!((r.seq, r.period_start_ms), (2, 30));
        assert_eq!(r.turn, relayed(&[("ten_a", 10)]).turn);
        drop(s);
        let s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.pending_after(0), vec![r], "sealed once, nothing else");
    }

    #[test]
    fn checkpoints_add_up_and_seal_into_numbered_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        s.checkpoint(0, 10, Taken::default()).unwrap();
        assert!(s.seal().unwrap().is_none(), "nothing used, no report");
        s.checkpoint(10, 20, usage(5, 2)).unwrap();
        s.checkpoint(20, 30, usage(7, 1)).unwrap();
        let r = s.seal().unwrap().unwrap();
        assert_eq!((r.seq, r.period_start_ms, r.period_end_ms), (1, 10, 30));
        assert_eq!(r.mounts.len(), 1);
        let m = &r.mounts[0];
        assert_eq!(
            (m.listener_ms, m.peak_listeners, m.sessions, m.bytes_sent),
            (12, 2, 2, 20)
        );
        s.checkpoint(30, 40, usage(1, 1)).unwrap();
        assert_eq!(s.seal().unwrap().unwrap().seq, 2);
        assert_eq!(s.depth(), 2);
        assert_eq!(s.pending_after(1).len(), 1);
    }

    #[test]
    fn a_restart_seals_the_open_report_once_and_never_reuses_a_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        s.checkpoint(0, 10, usage(1, 1)).unwrap();
        let a = s.seal().unwrap().unwrap();
        s.checkpoint(10, 20, usage(2, 1)).unwrap();
        s.checkpoint(20, 25, usage(3, 1)).unwrap();
        // A crash mid-write leaves a temp file: ignored.
        std::fs::write(dir.path().join("00000000000000000009.json.tmp"), b"{").unwrap();
        drop(s); // as kill -9 would: the open report is on disk, not sealed
        let mut s = Spool::open(dir.path()).unwrap();
        let pending = s.pending_after(0);
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0], a);
        assert_eq!(pending[1].seq, 2);
        assert_eq!(
            pending[1].mounts[0].listener_ms, 5,
            "both checkpoints of the open report"
        );
        assert_eq!(pending[1].period_end_ms, 25);
        s.ack(1).unwrap();
        s.ack(2).unwrap();
        s.ack(2).unwrap(); // a second ack of the same report is harmless
        drop(s);
        // Reopened again: nothing is sealed twice, and numbers go on after the last one.
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.depth(), 0);
        s.checkpoint(30, 40, usage(1, 1)).unwrap();
        assert_eq!(s.seal().unwrap().unwrap().seq, 3);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".tmp") || n.contains(".open.")),
            "{names:?}"
        );
    }

    #[test]
    fn failed_writes_lose_nothing_and_seal_only_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        // The sequence number cannot be written (its temp name is taken by a directory).
        let blocker = dir.path().join("seq.tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(s.checkpoint(0, 10, usage(4, 1)).is_err());
        assert!(s.seal().unwrap().is_none(), "nothing could be opened");
        std::fs::remove_dir(&blocker).unwrap();
        s.checkpoint(10, 20, usage(6, 2)).unwrap();
        // Now the open report's own file cannot be rewritten.
        let blocker = dir.path().join("00000000000000000001.open.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(s.checkpoint(20, 30, usage(5, 1)).is_err());
        assert!(s.seal().is_err(), "not sealed while its file lags behind");
        std::fs::remove_dir(&blocker).unwrap();
        let r = s.seal().unwrap().unwrap();
        assert_eq!((r.seq, r.period_start_ms, r.period_end_ms), (1, 0, 30));
        assert_eq!(r.mounts[0].listener_ms, 15, "every checkpoint's usage");
        drop(s);
        let s = Spool::open(dir.path()).unwrap();
        assert_eq!(
            s.pending_after(0),
            vec![r],
            "the sealed file holds all of it"
        );
    }

    #[test]
    fn a_damaged_file_is_kept_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000000004.json"), b"not json").unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.depth(), 0);
        assert!(dir.path().join("00000000000000000004.json").exists());
        s.checkpoint(0, 1, usage(1, 1)).unwrap();
        assert_eq!(s.seal().unwrap().unwrap().seq, 1);
    }
}
