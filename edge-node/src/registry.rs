//! The mount registry: every mount of the node with its listener group and usage cell, kept in
//! step with the configuration ([`Registry::apply`]), and the rules that cross mounts (a
//! listener's fallback chain, usage taken for metering). The Icecast handlers and the AutoDJ
//! work over it; it knows nothing of HTTP.

use crate::config::{Current, EdgeConfig, LimitsConfig, MountConfig};
use crate::metrics::EdgeMetrics;
use crate::mount::{Control, Mount, Session, SourceInfo};
use crate::sync::lock;
use crate::usage::{Group, MountUsage, Usage, restart_clock};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub(crate) struct Registry {
    mounts: RwLock<HashMap<String, Arc<Mount>>>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    usage: Usage,
    metrics: Arc<EdgeMetrics>,
    next_id: AtomicU64,
}

impl Registry {
    pub(crate) fn new(metrics: Arc<EdgeMetrics>) -> Registry {
        Registry {
            mounts: RwLock::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            usage: Usage::default(),
            metrics,
            next_id: AtomicU64::new(1),
        }
    }

    /// Makes the mounts those of `config`: new mounts appear, removed ones end (their source and
    /// listeners are disconnected), changed ones take the new settings without touching their
    /// listeners.
    pub(crate) fn apply(&self, config: &EdgeConfig) {
        let wanted: Vec<MountConfig> = config
            .mounts
            .iter()
            .cloned()
            // A relay's mount takes no source clients (no password).
            .chain(config.relays.iter().map(|r| MountConfig {
                max_listeners: r.max_listeners,
                listener_group: r.listener_group.clone(),
                relay_key: r.relay_key.clone(),
                hls: r.hls,
                ..MountConfig::new(&r.path, "")
            }))
            .collect();
        let groups = self.apply_groups(&config.listener_groups);
        let group_of = |mc: &MountConfig| {
            mc.listener_group
                .as_ref()
                .and_then(|g| groups.get(g).cloned())
        };
        let mut mounts = self
            .mounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keep: HashSet<&str> = wanted.iter().map(|m| m.path.as_str()).collect();
        let gone: Vec<String> = mounts
            .keys()
            .filter(|p| !keep.contains(p.as_str()))
            .cloned()
            .collect();
        for path in gone {
            if let Some(m) = mounts.remove(&path) {
                self.end(&m);
            }
        }
        for mc in wanted {
            match mounts.get(&mc.path) {
                Some(m) => {
                    m.set_group(group_of(&mc));
                    if m.config() != mc {
                        m.set_config(mc);
                    }
                }
                None => {
                    let counters = self.metrics.mount_counters(&mc.path);
                    let cell = self.usage.cell(&mc.path);
                    let group = group_of(&mc);
                    mounts.insert(
                        mc.path.clone(),
                        Arc::new(Mount::new(mc, counters, cell, group)),
                    );
                }
            }
        }
    }

    /// The listener groups of `wanted`, by name. Groups keep their counts across
    /// configurations; only their limits change.
    fn apply_groups(
        &self,
        wanted: &std::collections::BTreeMap<String, u64>,
    ) -> HashMap<String, Arc<Group>> {
        let mut all = lock(&self.groups);
        all.retain(|name, _| wanted.contains_key(name));
        for (name, max) in wanted {
            all.entry(name.clone())
                .or_insert_with(|| Arc::new(Group::new(*max)))
                .set_max(*max);
        }
        all.clone()
    }

    /// A removed mount: its source and listeners are disconnected.
    fn end(&self, m: &Mount) {
        m.removed.store(true, Ordering::Release);
        self.metrics.forget_mount(&m.path);
        if let Some(s) = m.session() {
            s.kill();
            m.detach(&s);
        }
        m.tell_listeners(&Control::Kill);
    }

    /// Disconnects every source and listener (at shutdown). A listener registering after this
    /// looks at the shutdown token itself.
    pub(crate) fn kill_all(&self) {
        for m in self.all() {
            if let Some(s) = m.session() {
                s.kill();
                m.detach(&s);
            }
            m.tell_listeners(&Control::Kill);
        }
    }

    pub(crate) fn get(&self, path: &str) -> Option<Arc<Mount>> {
        let mounts = self
            .mounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        mounts.get(path).cloned()
    }

    /// Every mount, sorted by path.
    pub(crate) fn all(&self) -> Vec<Arc<Mount>> {
        let mounts = self
            .mounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = mounts.values().cloned().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// A number no other listener of this node had.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The mount whose live source a listener of `home` hears: `home` itself, else the first
    /// live mount along its fallback chain.
    pub(crate) fn resolve(&self, home: &str) -> Option<(Arc<Mount>, Arc<Session>)> {
        let mut path = home.to_string();
        for _ in 0..8 {
            let m = self.get(&path)?;
            if let Some(s) = m.session() {
                return Some((m, s));
            }
            path = m.config().fallback?;
        }
        None
    }

    /// Listener usage of every mount since the previous call (those with nothing to report
    /// left out); the edge sorts it with the live streams' usage.
    pub(crate) fn take_usage(&self) -> Vec<MountUsage> {
        let mut out = Vec::new();
        for (path, cell) in self.usage.cells() {
            let now = Instant::now();
            let usage = match self.get(&path).filter(|m| Arc::ptr_eq(&m.usage, &cell)) {
                Some(m) => {
                    // The table's lock is held across the take so a listener leaving meanwhile
                    // is counted either here or at its leave, never both.
                    let mut table = lock(&m.listeners);
                    let open = table
                        .values_mut()
                        .filter(|e| !e.relay)
                        .map(|e| restart_clock(&mut e.since, now))
                        .sum();
                    let u = cell.take(&path, open);
                    drop(table);
                    u
                }
                None => cell.take(&path, Duration::ZERO),
            };
            if !usage.is_empty() {
                out.push(usage);
            }
        }
        self.usage.prune();
        out
    }
}

/// What the AutoDJ may do with the mounts: find one by path and start a session to feed it,
/// with the node's current limits. Nothing else of the registry is in reach.
#[derive(Clone)]
pub(crate) struct Feeds {
    registry: Arc<Registry>,
    config: Arc<Current>,
}

impl Feeds {
    pub(crate) fn new(registry: Arc<Registry>, config: Arc<Current>) -> Feeds {
        Feeds { registry, config }
    }

    pub(crate) fn mount(&self, path: &str) -> Option<Arc<Mount>> {
        self.registry.get(path)
    }

    pub(crate) fn session(&self, info: SourceInfo) -> Arc<Session> {
        Session::start(info, &self.limits())
    }

    fn limits(&self) -> LimitsConfig {
        self.config.get().limits.clone()
    }
}
