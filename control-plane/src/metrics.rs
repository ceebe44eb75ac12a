//! Prometheus metrics of the control plane, in a registry of its own (so several control planes
//! in one test process do not collide).

use prometheus::{Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Duration;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// User tokens checked, by `outcome` (accepted or why refused).
    user_tokens: IntCounterVec,
    /// Listeners' song requests, by `outcome` (accepted, or why refused).
    song_requests: IntCounterVec,
    pub cluster: ClusterMetrics,
    pub nowplaying: NowPlayingMetrics,
    pub media: MediaMetrics,
    pub realtime: RealtimeMetrics,
    pub webhooks: WebhookMetrics,
    pub ledger: LedgerMetrics,
}

/// The ledger's series.
#[derive(Clone, Debug)]
pub struct LedgerMetrics {
    /// Transactions written, by `source` (credit, tip, refund, …).
    transactions: IntCounterVec,
    /// Movements refused, by `reason`.
    refusals: IntCounterVec,
    /// What fans paid creators, in minor units, by `source` (tip, purchase, subscription) and
    /// `currency`.
    paid: IntCounterVec,
    /// Tips written by each transaction of the tips' writer.
    pub tip_batch: prometheus::Histogram,
}

impl LedgerMetrics {
    /// Why a movement is refused: the `reason` label values.
    pub const REASONS: [&'static str; 4] = [
        "insufficient_funds",
        "invalid_amount",
        "not_refundable",
        "idempotency_conflict",
    ];

    pub fn new(registry: &Registry) -> anyhow::Result<LedgerMetrics> {
        let m = LedgerMetrics {
            transactions: IntCounterVec::new(
                Opts::new(
                    "onda_ledger_transactions_total",
                    "Ledger transactions written, by source (credit, tip, purchase, refund, …)",
                ),
                &["source"],
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "onda_ledger_refusals_total",
                    "Value-moving requests refused, by reason: insufficient_funds, \
                     invalid_amount, not_refundable, idempotency_conflict",
                ),
                &["reason"],
            )?,
            paid: IntCounterVec::new(
                Opts::new(
                    "onda_ledger_paid_minor_units_total",
                    "What fans paid creators (before the tenant's fee), in minor units of the \
                     currency, by source (tip, purchase, subscription) and currency",
                ),
                &["source", "currency"],
            )?,
            tip_batch: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "onda_ledger_tip_batch_size",
                    "Tips written by each transaction (several when they arrive together)",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )?,
        };
        for source in onda_shared::api::LedgerSource::ALL {
            m.transactions.with_label_values(&[source.as_str()]);
        }
        for reason in Self::REASONS {
            m.refusals.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.transactions.clone()))?;
        registry.register(Box::new(m.refusals.clone()))?;
        registry.register(Box::new(m.paid.clone()))?;
        registry.register(Box::new(m.tip_batch.clone()))?;
        Ok(m)
    }

    pub fn transaction(&self, source: onda_shared::api::LedgerSource) {
        self.transactions
            .with_label_values(&[source.as_str()])
            .inc();
    }

    /// Adds a fan-to-creator payment of `amount` minor units of `currency` (a tip, a purchase,
    /// a subscription period): the revenue the counter sums.
    pub fn paid(&self, source: onda_shared::api::LedgerSource, currency: &str, amount: i64) {
        self.paid
            .with_label_values(&[source.as_str(), currency])
            .inc_by(u64::try_from(amount).unwrap_or(0));
    }

    /// Counts a refusal (one of [`LedgerMetrics::REASONS`]).
    pub fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }
}

/// The webhook delivery worker's series.
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    /// Attempts, by `outcome`: delivered, retry (will be tried again) or failed (given up).
    deliveries: IntCounterVec,
    /// How long the longest-waiting due delivery has waited, in seconds (0 when none waits).
    pub lag_seconds: prometheus::Gauge,
}

impl WebhookMetrics {
    pub const OUTCOMES: [&'static str; 3] = ["delivered", "retry", "failed"];

    pub fn new(registry: &Registry) -> anyhow::Result<WebhookMetrics> {
        let m = WebhookMetrics {
            deliveries: IntCounterVec::new(
                Opts::new(
                    "onda_webhook_deliveries_total",
                    "Webhook delivery attempts, by outcome: delivered, retry or failed (given up)",
                ),
                &["outcome"],
            )?,
            lag_seconds: prometheus::Gauge::new(
                "onda_webhook_lag_seconds",
                "Seconds the longest-waiting due webhook delivery has waited (0: none waits)",
            )?,
        };
        for outcome in Self::OUTCOMES {
            m.deliveries.with_label_values(&[outcome]);
        }
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        Ok(m)
    }

    /// Counts one attempt's outcome (one of [`WebhookMetrics::OUTCOMES`]).
    pub fn attempt(&self, outcome: &str) {
        self.deliveries.with_label_values(&[outcome]).inc();
    }
}

/// The realtime gateway's series.
#[derive(Clone, Debug)]
pub struct RealtimeMetrics {
    /// Open Socket.io connections on this replica.
    pub connections: prometheus::IntGauge,
    /// Users with at least one connection to this replica.
    pub users_online: prometheus::IntGauge,
    /// Messages stored through this replica.
    pub messages: prometheus::IntCounter,
    /// Events received, by `event` and `outcome` (ok or the error code).
    events: IntCounterVec,
    /// Handshakes, by `outcome` (accepted, or why the token or the connection was refused).
    handshakes: IntCounterVec,
    /// Connection time of end users' sockets written to `realtime_usage` (billed), in seconds.
    connection_seconds: prometheus::Counter,
    /// Writes of the metered connection time, by `outcome`: `ok` or `error` (kept for the next).
    usage_flushes: IntCounterVec,
    /// Notifications created, by `source`: `message` (Onda's, for a new message), `money` (a
    /// payment received, a payout processed) or `tenant`.
    notifications: IntCounterVec,
    /// Reconnects that asked to recover, by `outcome`: `complete` or `incomplete`.
    recoveries: IntCounterVec,
    /// Events replayed to reconnecting sockets.
    replayed: prometheus::IntCounter,
    /// Sockets dropped because they did not read what they were sent (their queue was full).
    pub slow_clients: prometheus::IntCounter,
    /// Messages written by each transaction of the gateway's writer.
    pub message_batch: prometheus::Histogram,
    /// Messages said in live streams' chats through this replica (tips shown in chats not
    /// counted).
    pub chat_messages: prometheus::IntCounter,
    /// Viewers in streams' chat rooms on this replica (a socket in two rooms counts twice).
    pub chat_viewers: prometheus::IntGauge,
    /// 1-to-1 calls.
    pub calls: CallMetrics,
}

/// 1-to-1 calls (the gateway's signalling and the clock that bills them).
#[derive(Clone, Debug)]
pub struct CallMetrics {
    /// Calls in progress over the cluster, as the last tick of this replica's clock counted.
    pub in_progress: prometheus::IntGauge,
    /// Calls made through this replica (rung or busy).
    pub started: prometheus::IntCounter,
    /// Calls ended by this replica, by `reason`.
    ended: IntCounterVec,
    /// Call time charged by this replica, in seconds (units × their length).
    pub billed_seconds: prometheus::IntCounter,
    /// From `initiate-call` to media flowing, as the clients reported it.
    pub setup: prometheus::Histogram,
}

impl CallMetrics {
    fn new(registry: &Registry) -> anyhow::Result<CallMetrics> {
        let m = CallMetrics {
            in_progress: prometheus::IntGauge::new(
                "onda_calls_in_progress",
                "1-to-1 calls in progress over the cluster (each replica reports the same count: \
                 take the max)",
            )?,
            started: prometheus::IntCounter::new(
                "onda_calls_started_total",
                "1-to-1 calls made through this replica (rung, or refused as busy)",
            )?,
            ended: IntCounterVec::new(
                Opts::new(
                    "onda_calls_ended_total",
                    "1-to-1 calls ended by this replica, by reason (rejected, missed, cancelled, \
                     hung_up, busy, balance_exhausted, connection_lost)",
                ),
                &["reason"],
            )?,
            billed_seconds: prometheus::IntCounter::new(
                "onda_call_billed_seconds_total",
                "Call time charged to callers' wallets by this replica, in seconds",
            )?,
            setup: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "onda_call_setup_seconds",
                    "From initiate-call to media flowing, as the first client reported it",
                )
                .buckets(vec![0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 30.0]),
            )?,
        };
        for reason in onda_shared::api::CallEndReason::ALL {
            m.ended.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(m.in_progress.clone()))?;
        registry.register(Box::new(m.started.clone()))?;
        registry.register(Box::new(m.ended.clone()))?;
        registry.register(Box::new(m.billed_seconds.clone()))?;
        registry.register(Box::new(m.setup.clone()))?;
        Ok(m)
    }

    pub fn ended(&self, reason: onda_shared::api::CallEndReason) {
        self.ended.with_label_values(&[reason.as_str()]).inc();
    }
}

impl RealtimeMetrics {
    /// Handshake outcomes beside the token check's ([`crate::users::Refused::OUTCOMES`]): no
    /// token in the handshake, a plan without messaging, the plan's connection limit reached.
    pub const HANDSHAKE_REFUSALS: [&'static str; 3] =
        ["no_token", "no_messaging", "connection_limit"];

    pub fn new(registry: &Registry) -> anyhow::Result<RealtimeMetrics> {
        let m = RealtimeMetrics {
            connections: prometheus::IntGauge::new(
                "onda_realtime_connections",
                "Open Socket.io connections on this replica",
            )?,
            users_online: prometheus::IntGauge::new(
                "onda_realtime_users_online",
                "End users with at least one connection to this replica",
            )?,
            messages: prometheus::IntCounter::new(
                "onda_realtime_messages_total",
                "Messages stored through this replica",
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "onda_realtime_events_total",
                    "Socket.io events received, by event and outcome (ok or the error code)",
                ),
                &["event", "outcome"],
            )?,
            handshakes: IntCounterVec::new(
                Opts::new(
                    "onda_realtime_handshakes_total",
                    "Socket.io handshakes, by outcome: accepted, or why the user token or the \
                     connection was refused (no_token, no_messaging, connection_limit, ...)",
                ),
                &["outcome"],
            )?,
            connection_seconds: prometheus::Counter::new(
                "onda_realtime_connection_seconds_total",
                "Connection time of end users' sockets on this replica written for billing, in seconds",
            )?,
            usage_flushes: IntCounterVec::new(
                Opts::new(
                    "onda_realtime_usage_flushes_total",
                    "Writes of the metered connection time, by outcome: ok, or error (kept for the next write)",
                ),
                &["outcome"],
            )?,
            notifications: IntCounterVec::new(
                Opts::new(
                    "onda_notifications_total",
                    "Notifications created, by source: message (Onda's, for a new message), money \
                     (Onda's, for a payment received or a payout processed), live (Onda's, to a \
                     creator's subscribers when the creator goes live) or tenant",
                ),
                &["source"],
            )?,
            recoveries: IntCounterVec::new(
                Opts::new(
                    "onda_realtime_recoveries_total",
                    "Reconnects that asked to recover missed events, by outcome: complete or incomplete",
                ),
                &["outcome"],
            )?,
            replayed: prometheus::IntCounter::new(
                "onda_realtime_replayed_events_total",
                "Events replayed to reconnecting sockets",
            )?,
            slow_clients: prometheus::IntCounter::new(
                "onda_realtime_slow_clients_total",
                "Sockets dropped because their send queue was full (they did not read)",
            )?,
            message_batch: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "onda_realtime_message_batch_size",
                    "Messages stored by each transaction of the gateway (several when they arrive together)",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )?,
            chat_messages: prometheus::IntCounter::new(
                "onda_chat_messages_total",
                "Messages said in live streams' chats through this replica",
            )?,
            chat_viewers: prometheus::IntGauge::new(
                "onda_chat_room_sockets",
                "Sockets in live streams' chat rooms on this replica",
            )?,
            calls: CallMetrics::new(registry)?,
        };
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.users_online.clone()))?;
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        for outcome in crate::users::Refused::OUTCOMES
            .into_iter()
            .chain(Self::HANDSHAKE_REFUSALS)
        {
            m.handshakes.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "error"] {
            m.usage_flushes.with_label_values(&[outcome]);
        }
        registry.register(Box::new(m.handshakes.clone()))?;
        registry.register(Box::new(m.recoveries.clone()))?;
        for outcome in ["complete", "incomplete"] {
            m.recoveries.with_label_values(&[outcome]);
        }
        registry.register(Box::new(m.replayed.clone()))?;
        registry.register(Box::new(m.slow_clients.clone()))?;
        registry.register(Box::new(m.message_batch.clone()))?;
        registry.register(Box::new(m.chat_messages.clone()))?;
        registry.register(Box::new(m.chat_viewers.clone()))?;
        registry.register(Box::new(m.connection_seconds.clone()))?;
        registry.register(Box::new(m.usage_flushes.clone()))?;
        registry.register(Box::new(m.notifications.clone()))?;
        Ok(m)
    }

    /// Counts one event: `None` when it succeeded, else its error code.
    pub fn event(&self, event: &str, error: Option<&str>) {
        self.events
            .with_label_values(&[event, error.unwrap_or("ok")])
            .inc();
    }

    /// Counts one handshake by its outcome: `accepted`, a token check's refusal or one of
    /// [`RealtimeMetrics::HANDSHAKE_REFUSALS`].
    pub fn handshake(&self, outcome: &str) {
        self.handshakes.with_label_values(&[outcome]).inc();
    }

    /// Counts a connect: whether it asked to recover, whether it got everything it missed, and
    /// how many events it was replayed.
    pub fn recovery(&self, asked: bool, complete: bool, replayed: usize) {
        if asked {
            let outcome = if complete { "complete" } else { "incomplete" };
            self.recoveries.with_label_values(&[outcome]).inc();
        }
        self.replayed.inc_by(replayed as u64);
    }

    /// Counts one write of metered connection time: the milliseconds written, or None when it
    /// failed.
    pub fn usage_flushed(&self, written_ms: Option<u64>) {
        match written_ms {
            Some(ms) => {
                self.usage_flushes.with_label_values(&["ok"]).inc();
                self.connection_seconds.inc_by(ms as f64 / 1000.0);
            }
            None => self.usage_flushes.with_label_values(&["error"]).inc(),
        }
    }

    /// Counts one notification created, by where it came from.
    pub fn notification(&self, source: NotificationSource) {
        let source = match source {
            NotificationSource::Message => "message",
            NotificationSource::Tenant => "tenant",
            NotificationSource::Money => "money",
            NotificationSource::Live => "live",
        };
        self.notifications.with_label_values(&[source]).inc();
    }
}

/// Where a notification came from, as `onda_notifications_total` labels it.
#[derive(Debug, Clone, Copy)]
pub enum NotificationSource {
    /// Onda's own, for a new message.
    Message,
    /// The tenant's, through `POST /v1/users/{user_id}/notifications`.
    Tenant,
    /// Onda's own, for money: a payment received, a payout processed.
    Money,
    /// Onda's own, to a creator's subscribers: the creator went live.
    Live,
}

/// The now-playing hub's series.
#[derive(Clone, Debug)]
pub struct NowPlayingMetrics {
    /// Snapshots built (each one read of the song history): one per change of a watched
    /// station, however many read it.
    pub snapshot_builds: prometheus::IntCounter,
    /// Open SSE feeds.
    pub subscribers: prometheus::IntGauge,
    /// SSE feeds refused, by `reason` = per_ip | total.
    pub refused: IntCounterVec,
}

impl NowPlayingMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<NowPlayingMetrics> {
        let m = NowPlayingMetrics {
            snapshot_builds: prometheus::IntCounter::new(
                "onda_nowplaying_snapshot_builds_total",
                "Now-playing snapshots built from the database (one per change of a watched station)",
            )?,
            subscribers: prometheus::IntGauge::new(
                "onda_nowplaying_subscribers",
                "Open now-playing SSE feeds on this replica",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "onda_nowplaying_refused_total",
                    "Now-playing SSE feeds refused, by reason (per_ip, total)",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.snapshot_builds.clone()))?;
        registry.register(Box::new(m.subscribers.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        for r in ["per_ip", "total"] {
            m.refused.with_label_values(&[r]);
        }
        Ok(m)
    }
}

/// The media library's series.
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    /// Uploads being probed now.
    pub probes_running: prometheus::IntGauge,
    /// Uploads waiting for a probe slot.
    pub probes_waiting: prometheus::IntGauge,
    /// End users' uploads deleted because no message carried them in time.
    pub unsent_removed: prometheus::IntCounter,
    /// Rounds of the unsent-attachment sweep, by `result` = ok | error.
    pub unsent_sweeps: IntCounterVec,
}

impl MediaMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<MediaMetrics> {
        let m = MediaMetrics {
            probes_running: prometheus::IntGauge::new(
                "onda_media_probes_running",
                "Uploads being probed (decoded by ffmpeg) now",
            )?,
            probes_waiting: prometheus::IntGauge::new(
                "onda_media_probes_waiting",
                "Uploads waiting for a probe slot",
            )?,
            unsent_removed: prometheus::IntCounter::new(
                "onda_media_unsent_attachments_removed_total",
                "End users' uploads deleted because no message carried them within \
                 media.unsent_attachment_grace_secs",
            )?,
            unsent_sweeps: IntCounterVec::new(
                Opts::new(
                    "onda_media_unsent_sweeps_total",
                    "Rounds of the sweep of unsent attachments, by result (ok, error)",
                ),
                &["result"],
            )?,
        };
        for result in ["ok", "error"] {
            m.unsent_sweeps.with_label_values(&[result]);
        }
        registry.register(Box::new(m.probes_running.clone()))?;
        registry.register(Box::new(m.probes_waiting.clone()))?;
        registry.register(Box::new(m.unsent_removed.clone()))?;
        registry.register(Box::new(m.unsent_sweeps.clone()))?;
        Ok(m)
    }
}

/// The cluster's series (handles are cheap clones of the registered metrics).
#[derive(Clone)]
pub struct ClusterMetrics {
    /// Nodes connected to this replica's control channel.
    pub sessions: prometheus::IntGauge,
    /// Usage reports received, `result` = stored | duplicate | failed.
    pub usage_reports: IntCounterVec,
    /// Seconds from the end of the last stored report's period to its storing.
    pub usage_lag: prometheus::Gauge,
    /// Reconcile rounds of the leader, `result` = ok | error.
    pub scheduler_runs: IntCounterVec,
    pub scheduler_duration: prometheus::Histogram,
    /// Stream sessions open (set by the leader each second; 0 on other replicas).
    pub live_sessions: prometheus::IntGauge,
    /// Stations by `state` = placed | unplaced (set by the leader).
    pub stations: prometheus::IntGaugeVec,
    /// Nodes by `status` (set by the leader).
    pub nodes: prometheus::IntGaugeVec,
    /// Listeners per station (by slug) across its edges, relay pulls left out.
    pub station_listeners: prometheus::IntGaugeVec,
    /// Listeners per tenant (by id), the sum over its stations.
    pub tenant_listeners: prometheus::IntGaugeVec,
    /// Invoices billing touched, by `outcome` = created | updated | unchanged |
    /// already_finalized | finalized | skipped.
    pub billing_invoices: IntCounterVec,
    /// What nodes asked for and were refused, by `kind` (see `cluster::refusals`).
    pub node_refusals: IntCounterVec,
    /// Values in the coordinator that did not decode, by `kind` (see `cluster::store`).
    pub store_corrupt: IntCounterVec,
}

/// Registers `c` in `registry` and hands it back.
fn registered<C>(registry: &Registry, c: C) -> anyhow::Result<C>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> anyhow::Result<ClusterMetrics> {
        let counters = |name: &str, help: &str, label: &str| {
            registered(
                registry,
                IntCounterVec::new(Opts::new(name, help), &[label])?,
            )
        };
        let gauges = |name: &str, help: &str, label: &str| {
            let g = prometheus::IntGaugeVec::new(Opts::new(name, help), &[label])?;
            registered(registry, g)
        };
        let duration = HistogramOpts::new(
            "onda_scheduler_run_duration_seconds",
            "Time of one reconcile round of the leader",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let m = ClusterMetrics {
            sessions: registered(
                registry,
                prometheus::IntGauge::new(
                    "onda_control_channel_sessions",
                    "Nodes connected to this replica's control channel",
                )?,
            )?,
            usage_reports: counters(
                "onda_usage_reports_total",
                "Usage reports received from nodes, by result (stored, duplicate, failed)",
                "result",
            )?,
            usage_lag: registered(
                registry,
                prometheus::Gauge::new(
                    "onda_usage_ingest_lag_seconds",
                    "Seconds from the end of the last stored usage report's period to its storing",
                )?,
            )?,
            scheduler_runs: counters(
                "onda_scheduler_runs_total",
                "Reconcile rounds run by the leader, by result (ok, error)",
                "result",
            )?,
            scheduler_duration: registered(registry, prometheus::Histogram::with_opts(duration)?)?,
            live_sessions: registered(
                registry,
                prometheus::IntGauge::new(
                    "onda_live_sessions",
                    "Stream sessions open (live streams on the air); set by the leader, 0 on \
                     other replicas",
                )?,
            )?,
            stations: gauges(
                "onda_stations",
                "Stations on the air by placement state (placed, unplaced); set by the leader",
                "state",
            )?,
            nodes: gauges(
                "onda_nodes",
                "Nodes by status (ready, unreachable, draining, revoked); set by the leader",
                "status",
            )?,
            station_listeners: gauges(
                "onda_station_listeners",
                "Listeners of a station across every edge carrying it (relay pulls left out)",
                "station",
            )?,
            tenant_listeners: gauges(
                "onda_tenant_listeners",
                "Listeners of a tenant's stations across every edge (relay pulls left out)",
                "tenant",
            )?,
            billing_invoices: counters(
                "onda_billing_invoices_total",
                "Invoices billing touched, by outcome (created, updated, unchanged, already_finalized, finalized, skipped)",
                "outcome",
            )?,
            node_refusals: counters(
                "onda_node_refusals_total",
                "Requests of nodes the control plane refused, by kind (join: a failed join; usage: \
                 usage for a station or stream the node did not carry; media: a media file its \
                 desired state does not name; track: a track report for a station it does not run)",
                "kind",
            )?,
            store_corrupt: counters(
                "onda_cluster_store_corrupt_total",
                "Values read from the coordinator that did not decode, by kind (placement, \
                 desired, observed, now_playing); the leader skips its round",
                "kind",
            )?,
        };
        m.start_series_at_zero();
        Ok(m)
    }

    /// Series exist from the start, so dashboards and alerts see zeros, not gaps.
    fn start_series_at_zero(&self) {
        let m = self;
        for k in crate::cluster::refusals::KINDS {
            m.node_refusals.with_label_values(&[k]);
        }
        for r in ["stored", "duplicate", "failed"] {
            m.usage_reports.with_label_values(&[r]);
        }
        for r in ["ok", "error"] {
            m.scheduler_runs.with_label_values(&[r]);
        }
        for o in [
            "created",
            "updated",
            "unchanged",
            "already_finalized",
            "finalized",
            "skipped",
        ] {
            m.billing_invoices.with_label_values(&[o]);
        }
        for st in ["placed", "unplaced"] {
            m.stations.with_label_values(&[st]);
        }
        for st in ["ready", "unreachable", "draining", "revoked"] {
            m.nodes.with_label_values(&[st]);
        }
    }
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "onda_http_requests_total",
                "HTTP requests handled, by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "onda_http_request_duration_seconds",
                "Time to answer an HTTP request, by route and status",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route", "status"],
        )?;
        let build = prometheus::IntGaugeVec::new(
            Opts::new("onda_build_info", "Always 1; labels carry the version"),
            &["component", "version"],
        )?;
        build
            .with_label_values(&["control-plane", env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(build))?;
        let user_tokens = IntCounterVec::new(
            Opts::new(
                "onda_user_token_checks_total",
                "User tokens checked, by outcome: accepted, or the reason they were refused",
            ),
            &["outcome"],
        )?;
        for outcome in crate::users::Refused::OUTCOMES {
            user_tokens.with_label_values(&[outcome]);
        }
        registry.register(Box::new(user_tokens.clone()))?;
        let song_requests = IntCounterVec::new(
            Opts::new(
                "onda_song_requests_total",
                "Listeners' song requests, by outcome: accepted, or the rule that refused them",
            ),
            &["outcome"],
        )?;
        for outcome in crate::requests::Refusal::OUTCOMES {
            song_requests.with_label_values(&[outcome]);
        }
        registry.register(Box::new(song_requests.clone()))?;
        let cluster = ClusterMetrics::new(&registry)?;
        let nowplaying = NowPlayingMetrics::new(&registry)?;
        let media = MediaMetrics::new(&registry)?;
        let realtime = RealtimeMetrics::new(&registry)?;
        let webhooks = WebhookMetrics::new(&registry)?;
        let ledger = LedgerMetrics::new(&registry)?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            user_tokens,
            song_requests,
            cluster,
            nowplaying,
            media,
            realtime,
            webhooks,
            ledger,
        })
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, &status])
            .inc();
        self.latency
            .with_label_values(&[method, route, &status])
            .observe(took.as_secs_f64());
    }

    /// Counts one user token check: `None` when it was accepted.
    pub fn user_token_checked(&self, refused: Option<&crate::users::Refused>) {
        let outcome = refused.map_or("accepted", crate::users::Refused::outcome);
        self.user_tokens.with_label_values(&[outcome]).inc();
    }

    /// Counts one song request that got as far as the rules: `None` when it was taken.
    pub fn song_request(&self, refused: Option<&crate::requests::Refusal>) {
        let outcome = refused.map_or("accepted", crate::requests::Refusal::outcome);
        self.song_requests.with_label_values(&[outcome]).inc();
    }

    /// Counts what a billing run did.
    pub fn billing_run(&self, run: &onda_shared::api::BillingRun) {
        let c = &self.cluster.billing_invoices;
        c.with_label_values(&["created"])
            .inc_by(u64::from(run.created));
        c.with_label_values(&["updated"])
            .inc_by(u64::from(run.updated));
        c.with_label_values(&["unchanged"])
            .inc_by(u64::from(run.unchanged));
        c.with_label_values(&["already_finalized"])
            .inc_by(u64::from(run.already_finalized));
        c.with_label_values(&["finalized"])
            .inc_by(u64::from(run.finalized));
        c.with_label_values(&["skipped"])
            .inc_by(run.skipped.len() as u64);
    }

    /// Counts an invoice finalized on its own (`POST /v1/invoices/{id}/finalize`).
    pub fn invoice_finalized(&self) {
        self.cluster
            .billing_invoices
            .with_label_values(&["finalized"])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
