//! Runs the control plane: connects the database, binds the HTTP listener, serves until told to
//! stop, then drains in-flight requests.

use crate::api;
use crate::config::Validated;
use crate::db::Db;
use crate::media::MediaStore;
use crate::metrics::Metrics;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A control plane serving in the background of the current runtime.
pub struct Running {
    pub addr: SocketAddr,
    pub db: Db,
    /// The control channel and scheduler, when the cluster is enabled.
    pub cluster: Option<crate::cluster::Running>,
    /// The media store (uploaded audio by content hash), e.g. to serve blobs to nodes.
    pub media: Arc<MediaStore>,
    /// Now-playing snapshots and feeds, when the cluster is enabled.
    pub nowplaying: Option<Arc<crate::nowplaying::Hub>>,
    /// The realtime gateway, closed before the drain (its connections never end by themselves).
    pub realtime: crate::realtime::Gateway,
    /// Delivers webhooks; stopped before the database closes.
    webhooks: Option<crate::webhooks::Worker>,
    /// Renews due wallet subscriptions (its `run_once` is what the task runs, for tests).
    pub renewer: crate::subscriptions::Renewer,
    renewals: Option<(tokio_util::sync::CancellationToken, JoinHandle<()>)>,
    /// Deletes message attachments no message carried within their grace period.
    sweeps: Option<(tokio_util::sync::CancellationToken, JoinHandle<()>)>,
    /// Opens and closes stream sessions while this replica leads (with the cluster).
    sessions: Option<(tokio_util::sync::CancellationToken, JoinHandle<()>)>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, closes the database pool.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Before the gateway closes: the tracker emits through it.
        if let Some((stop, task)) = self.sessions.take() {
            stop.cancel();
            let _ = task.await;
        }
        // Open feeds never end by themselves and would keep the drain waiting.
        if let Some(hub) = &self.nowplaying {
            hub.close();
        }
        self.realtime.close().await;
        if let Some(w) = self.webhooks.take() {
            w.stop().await;
        }
        if let Some((stop, task)) = self.renewals.take() {
            stop.cancel();
            let _ = task.await;
        }
        if let Some((stop, task)) = self.sweeps.take() {
            stop.cancel();
            let _ = task.await;
        }
        let served = (&mut self.task).await.context("server task failed")?;
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
        self.db.close().await;
        served.context("HTTP server failed")
    }
}

/// Binds the listener first (so a port in use is reported before anything else happens), then
/// connects the database and starts serving.
pub async fn start(cfg: &Validated) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| bind_error(cfg.listen, &e))?;
    let db = Db::connect(&cfg.database_url, cfg.max_connections).await?;
    start_with(listener, db, cfg).await
}

fn warn_without_admin_token(cfg: &Validated) {
    if cfg.admin_token.is_none() {
        tracing::warn!(
            "no admin token configured (auth.admin_token / ONDA_AUTH_ADMIN_TOKEN): admin routes refuse every request"
        );
    }
}

/// Serves on an already bound listener with an already connected database.
pub async fn start_with(
    listener: tokio::net::TcpListener,
    db: Db,
    cfg: &Validated,
) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new()?);
    warn_without_admin_token(cfg);
    let media = Arc::new(MediaStore::open(&cfg.media, metrics.media.clone()).await?);
    crate::turn::start(&db, &cfg.turn).await?;
    let cluster = match &cfg.cluster {
        Some(settings) => Some(
            crate::cluster::start(
                db.clone(),
                settings.clone(),
                Some(media.clone()),
                metrics.cluster.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let nowplaying = match &cluster {
        Some(c) => Some(
            crate::nowplaying::Hub::start(
                db.clone(),
                c.cluster.clone(),
                metrics.nowplaying.clone(),
                cfg.nowplaying,
            )
            .await?,
        ),
        None => None,
    };
    let webhooks =
        crate::webhooks::Worker::start(db.clone(), cfg.webhooks.clone(), metrics.webhooks.clone())?;
    // The gateway cuts the connection of a client that stops reading.
    let connections = crate::connections::Connections::default();
    let (realtime, socketio) = crate::realtime::Gateway::start(
        db.clone(),
        cfg,
        (metrics.realtime.clone(), metrics.ledger.clone()),
        media.clone(),
        connections.clone(),
    )
    .await?;
    if let Some(c) = &cluster {
        let cluster = c.cluster.clone();
        realtime.set_audience(Arc::new(move |id: &str, slug: &str| {
            let (viewers, live, _) = cluster.view.get().stream(id, slug);
            (viewers, live)
        }));
    }
    let renewer = crate::subscriptions::Renewer {
        db: db.clone(),
        realtime: realtime.clone(),
        ledger: metrics.ledger.clone(),
        notifications: metrics.realtime.clone(),
    };
    let renewals_stop = tokio_util::sync::CancellationToken::new();
    let renewals = renewer.clone().spawn(
        crate::subscriptions::RENEWAL_INTERVAL,
        renewals_stop.clone(),
    );
    let sweeps_stop = tokio_util::sync::CancellationToken::new();
    let sweeps = crate::media::unsent::Sweeper {
        db: db.clone(),
        media: media.clone(),
        grace: cfg.media.unsent_attachment_grace,
        metrics: metrics.media.clone(),
    }
    .spawn(sweeps_stop.clone());
    // The cluster's leader opens and closes stream sessions; the tracker tells the gateway.
    let sessions = cluster.as_ref().map(|c| {
        let stop = tokio_util::sync::CancellationToken::new();
        let tracker = crate::stream_sessions::Tracker {
            db: db.clone(),
            cluster: c.cluster.clone(),
            realtime: realtime.clone(),
            notifications: metrics.realtime.clone(),
        };
        (stop.clone(), tracker.spawn(stop))
    });
    let app = api::router(
        db.clone(),
        cfg,
        metrics,
        cluster.as_ref().map(|c| c.cluster.clone()),
        media.clone(),
        nowplaying.clone(),
        (realtime.clone(), socketio),
    );
    let (tx, rx) = oneshot::channel::<()>();
    // The peer address limits the public now-playing feeds per client; the feeds have their
    // own lane (see `lanes`).
    let task = tokio::spawn(crate::lanes::serve(listener, app, connections, async {
        let _ = rx.await;
    }));
    tracing::info!(
        "panel API listening on http://{addr} (database: {:?})",
        db.backend()
    );
    Ok(Running {
        addr,
        db,
        cluster,
        media,
        nowplaying,
        realtime,
        webhooks: Some(webhooks),
        renewer,
        renewals: Some((renewals_stop, renewals)),
        sweeps: Some((sweeps_stop, sweeps)),
        sessions,
        stop: Some(tx),
        task,
    })
}

pub fn bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "cannot listen on {addr}: port {} is already in use; choose another address with \
             http.listen in the config file or the ONDA_HTTP_LISTEN environment variable",
            addr.port()
        )
    } else {
        anyhow::anyhow!("cannot listen on {addr}: {e}")
    }
}

/// `onda control-plane`: serve until a signal, then drain.
pub async fn run(cfg: Validated) -> anyhow::Result<()> {
    let running = start(&cfg).await?;
    onda_shared::signal::shutdown_signal().await;
    tracing::info!("shutting down: draining requests");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
