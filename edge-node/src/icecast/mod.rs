//! The Icecast side of the edge, over the mount registry: source clients ([`source`]),
//! listeners ([`listener`]), the status and admin routes ([`admin`]) and relays pulling a
//! mount from another server ([`relay`]).

pub(crate) mod admin;
pub(crate) mod listener;
pub(crate) mod relay;
pub(crate) mod source;

use crate::auth::Logins;
use crate::config::{Current, EdgeConfig};
use crate::metrics::EdgeMetrics;
use crate::mount::{Mount, Session};
use crate::registry::Registry;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// What the Icecast handlers share.
pub(crate) struct Icecast {
    registry: Arc<Registry>,
    config: Arc<Current>,
    /// Source logins: bounded password checks, lockouts, remembered successes.
    pub(crate) logins: Logins,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) started: SystemTime,
}

impl Icecast {
    pub(crate) fn new(
        registry: Arc<Registry>,
        config: Arc<Current>,
        metrics: Arc<EdgeMetrics>,
        shutdown: CancellationToken,
    ) -> Icecast {
        let logins = Logins::new(
            config.get().limits.password_checks,
            metrics.password_verifications.clone(),
        );
        Icecast {
            registry,
            config,
            logins,
            metrics,
            shutdown,
            started: SystemTime::now(),
        }
    }

    pub(crate) fn config(&self) -> Arc<EdgeConfig> {
        self.config.get()
    }

    pub(crate) fn mount(&self, path: &str) -> Option<Arc<Mount>> {
        self.registry.get(path)
    }

    /// Every mount, sorted by path.
    pub(crate) fn mounts(&self) -> Vec<Arc<Mount>> {
        self.registry.all()
    }

    /// See [`Registry::resolve`].
    pub(crate) fn resolve(&self, home: &str) -> Option<(Arc<Mount>, Arc<Session>)> {
        self.registry.resolve(home)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.registry.next_id()
    }
}
