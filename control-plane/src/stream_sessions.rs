//! Stream sessions: each RTMP publish of a live stream is a session, opened when the leader
//! sees the stream on the air and closed when it has been off the air for [`GRACE`], with its
//! peak viewers and viewer time sampled each second on the way (`db::stream_sessions` stores
//! them; `GET /v1/streams/{id}/sessions` reads them with their chat
//! messages, tips and pay-per-view revenue).
//!
//! Only the leader opens and closes sessions. Every replica runs the [`Tracker`]; each
//! [`TICK`] the leader gathers (I/O) the streams on the air from the cluster's view and the
//! open sessions from the database, [`decide`]s (pure) what to open, sample and close, and
//! writes it. Each write is conditional (see `db::stream_sessions`), so a second leader during
//! an election changes nothing twice.
//!
//! Opening a session writes, in one transaction, the session, the `stream.started` webhook
//! event and a stored notification "{creator} is live: {title}" for each active subscriber of
//! the stream's creator (in their feeds, like every notification); after the commit the
//! stream's room gets `stream-started` and the subscribers' devices their notification.
//! Closing writes the end and `stream.ended`, then the room gets `stream-ended`.
//!
//! The tracker reaches the gateway only through its public handle (`Gateway::to_stream`,
//! `Gateway::send`), and the cluster only through its view and `is_leader`: neither knows of
//! sessions.

use crate::cluster::Cluster;
use crate::db::{self, Db, stream_sessions::Open};
use crate::metrics::{NotificationSource, RealtimeMetrics};
use crate::notifications::{self, Content};
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery::{self, Entry, Recorded};
use crate::webhooks;
use onda_shared::api::{StreamSession, WebhookEventType};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the leader looks.
pub const TICK: Duration = Duration::from_secs(1);

/// How long a stream may be off the air before its session closes: an encoder that reconnects
/// within it (a network blip, a restarted OBS) stays in one session.
pub const GRACE: Duration = Duration::from_secs(3);

/// The longest interval one sample integrates viewers over. After a gap without a leader the
/// count seen now is not taken for the whole gap, which nobody observed.
pub const MAX_SAMPLE_GAP_MS: i64 = 10_000;

/// The room event when a session opens, and when it closes.
pub const STARTED_EVENT: &str = "stream-started";
pub const ENDED_EVENT: &str = "stream-ended";

/// The `type` of the subscribers' notification that their creator went live.
pub const LIVE_NOTIFICATION: &str = "stream.started";

/// A live stream on the air now, as the cluster's view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnAir {
    pub stream_id: String,
    pub tenant_id: String,
    pub creator_id: Option<String>,
    /// The stream's name, for the subscribers' notification.
    pub title: String,
    pub viewers: u64,
}

/// What one tick writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Streams on the air without an open session: open one now.
    pub open: Vec<OnAir>,
    /// Open sessions with their new figures, each with the `sampled_ms` it was computed from.
    pub sample: Vec<(Open, i64)>,
    /// Sessions off the air for the grace: closed at the last time they were seen on the air.
    pub close: Vec<(Open, i64)>,
}

/// Decides a tick at `now_ms` from the streams on the air and the open sessions (pure).
///
/// An open session whose stream is on the air is sampled: its viewer time grows by the viewers
/// seen now over the time since the last sample (at most [`MAX_SAMPLE_GAP_MS`]), its peak is
/// the larger of the two. One off the air is sampled with no viewers until [`GRACE`] has passed
/// since it was last seen, then closed at that last sight. A stream on the air without an open
/// session gets one.
pub fn decide(on_air: &[OnAir], open: &[Open], now_ms: i64) -> Plan {
    let grace_ms = i64::try_from(GRACE.as_millis()).unwrap_or(i64::MAX);
    let by_stream: BTreeMap<&str, &OnAir> =
        on_air.iter().map(|s| (s.stream_id.as_str(), s)).collect();
    let mut plan = Plan::default();
    for s in open {
        let elapsed = (now_ms - s.sampled_ms).clamp(0, MAX_SAMPLE_GAP_MS);
        match by_stream.get(s.stream_id.as_str()) {
            Some(live) => {
                let viewers = i64::try_from(live.viewers).unwrap_or(i64::MAX);
                let next = Open {
                    peak_viewers: s.peak_viewers.max(viewers),
                    viewer_ms: s.viewer_ms.saturating_add(viewers.saturating_mul(elapsed)),
                    sampled_ms: now_ms,
                    on_air_ms: now_ms,
                    ..s.clone()
                };
                plan.sample.push((next, s.sampled_ms));
            }
            None if now_ms - s.on_air_ms >= grace_ms => {
                plan.close.push((s.clone(), s.on_air_ms.max(s.started_ms)));
            }
            None => {
                let next = Open {
                    sampled_ms: now_ms,
                    ..s.clone()
                };
                plan.sample.push((next, s.sampled_ms));
            }
        }
    }
    let opened: std::collections::BTreeSet<&str> =
        open.iter().map(|s| s.stream_id.as_str()).collect();
    plan.open = on_air
        .iter()
        .filter(|s| !opened.contains(s.stream_id.as_str()))
        .cloned()
        .collect();
    plan
}

/// The streams on the air in the view: a stream is on the air when its origin node is alive
/// and reports `/hls/{slug}` with a publisher (`Snapshot::stream`, as `GET
/// /v1/streams/{id}/viewers` and the chat's viewer counts read it).
fn on_air(
    snap: &crate::cluster::view::Snapshot,
    streams: &[db::stream_sessions::StreamRow],
) -> Vec<OnAir> {
    streams
        .iter()
        .filter_map(|s| {
            let (viewers, live, _) = snap.stream(&s.id, &s.slug);
            live.then(|| OnAir {
                stream_id: s.id.clone(),
                tenant_id: s.tenant_id.clone(),
                creator_id: s.creator_id.clone(),
                title: s.name.clone(),
                viewers,
            })
        })
        .collect()
}

/// The subscribers' notification that `creator_name` went live with stream `title`.
pub fn went_live(creator_name: &str, title: &str, stream_id: &str, session_id: &str) -> Content {
    let mut data = Map::new();
    data.insert("streamId".into(), json!(stream_id));
    data.insert("sessionId".into(), json!(session_id));
    let full = format!("{creator_name} is live: {title}");
    Content {
        kind: LIVE_NOTIFICATION.to_string(),
        // A long name and title together may pass what a title holds.
        title: full.chars().take(notifications::MAX_TITLE).collect(),
        body: String::new(),
        link: None,
        data,
    }
}

/// The body of `stream-started` and `stream-ended` to the stream's room.
fn room_event(s: &StreamSession, ended: bool) -> serde_json::Value {
    if ended {
        json!({ "streamId": s.stream_id, "sessionId": s.id, "endedAt": s.ended_at })
    } else {
        json!({ "streamId": s.stream_id, "sessionId": s.id, "startedAt": s.started_at })
    }
}

/// The task every replica runs; it acts only while its replica leads the cluster.
#[derive(Clone)]
pub struct Tracker {
    pub db: Db,
    pub cluster: Arc<Cluster>,
    pub realtime: crate::realtime::Gateway,
    pub notifications: RealtimeMetrics,
}

impl Tracker {
    /// One tick at the current time (nothing unless this replica leads and its view loaded).
    pub async fn tick(&self) -> Result<(), sqlx::Error> {
        let gauge = &self.cluster.metrics.live_sessions;
        let snap = self.cluster.view.get();
        if !self.cluster.is_leader() || !snap.loaded {
            // The leader's gauge counts; another replica's says nothing.
            gauge.set(0);
            return Ok(());
        }
        let (streams, open) = {
            let mut conn = self.db.conn().await?;
            (
                db::stream_sessions::streams(&mut conn).await?,
                db::stream_sessions::open_all(&mut conn).await?,
            )
        };
        let now = db::now_millis();
        let plan = decide(&on_air(&snap, &streams), &open, now);
        let mut live = open.len();
        if !plan.sample.is_empty() {
            let mut tx = self.db.begin().await?;
            for (next, read) in &plan.sample {
                db::stream_sessions::sample(&mut tx, next, *read).await?;
            }
            tx.commit().await?;
        }
        for (s, ended_ms) in &plan.close {
            if self.close(s, *ended_ms, now).await? {
                live -= 1;
            }
        }
        for s in &plan.open {
            if self.open(s, now).await? {
                live += 1;
            }
        }
        gauge.set(i64::try_from(live).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Opens a session of `s` and tells everyone; false when another leader opened it first.
    async fn open(&self, s: &OnAir, now: i64) -> Result<bool, sqlx::Error> {
        let row = Open {
            id: crate::secrets::new_time_id("ses", now),
            tenant_id: s.tenant_id.clone(),
            stream_id: s.stream_id.clone(),
            creator_id: s.creator_id.clone(),
            started_ms: now,
            peak_viewers: i64::try_from(s.viewers).unwrap_or(i64::MAX),
            viewer_ms: 0,
            sampled_ms: now,
            on_air_ms: now,
        };
        let mut tx = self.db.begin().await?;
        if !db::stream_sessions::open(&mut tx, &row).await? {
            return Ok(false);
        }
        let session = db::stream_sessions::get(&mut tx, &row.id, now)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let outbox = webhooks::Outbox::load(&mut tx, &s.tenant_id).await?;
        outbox
            .enqueue(&mut tx, WebhookEventType::StreamStarted, &session)
            .await?;
        let recorded = match &s.creator_id {
            Some(creator) => {
                self.notify_subscribers(&mut tx, (&outbox, creator), &s.title, &session, now)
                    .await?
            }
            None => Vec::new(),
        };
        tx.commit().await?;
        tracing::info!(stream = %s.stream_id, session = %row.id, "stream session opened");
        self.realtime
            .to_stream(
                &s.tenant_id,
                &s.stream_id,
                STARTED_EVENT,
                &room_event(&session, false),
            )
            .await;
        for _ in &recorded {
            self.notifications.notification(NotificationSource::Live);
        }
        self.realtime.send(&s.tenant_id, &recorded).await;
        Ok(true)
    }

    /// Stores "{creator} is live: {title}" for each active subscriber of `creator`, in their
    /// feeds, in the caller's transaction; answers the events to send after the commit.
    async fn notify_subscribers(
        &self,
        tx: &mut db::Conn,
        (outbox, creator): (&webhooks::Outbox, &str),
        title: &str,
        session: &StreamSession,
        now: i64,
    ) -> Result<Vec<Recorded>, sqlx::Error> {
        let tenant = outbox.tenant_id();
        let fans = db::subscriptions::active_subscribers(tx, tenant, creator, now).await?;
        if fans.is_empty() {
            return Ok(Vec::new());
        }
        let name = db::users::get(tx, tenant, creator)
            .await?
            .map_or_else(|| creator.to_string(), |u| u.display_name);
        let content = went_live(&name, title, &session.stream_id, &session.id);
        let items: Vec<(&str, &Content)> = fans.iter().map(|f| (f.as_str(), &content)).collect();
        let pushes = notifications::store_many(tx, outbox, &items, now).await?;
        let entries = fans
            .iter()
            .zip(pushes)
            .map(|(fan, push)| Entry::new(fan, NOTIFICATION, json!(push)))
            .collect();
        recovery::record(tx, tenant, entries).await
    }

    /// Closes `s` at `ended_ms` and tells its room; false when it was closed already.
    async fn close(&self, s: &Open, ended_ms: i64, now: i64) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if !db::stream_sessions::close(&mut tx, &s.id, ended_ms, now).await? {
            return Ok(false);
        }
        let session = db::stream_sessions::get(&mut tx, &s.id, now)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        webhooks::enqueue(
            &mut tx,
            &s.tenant_id,
            WebhookEventType::StreamEnded,
            &session,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(stream = %s.stream_id, session = %s.id, secs = session.duration_secs, "stream session closed");
        self.realtime
            .to_stream(
                &s.tenant_id,
                &s.stream_id,
                ENDED_EVENT,
                &room_event(&session, true),
            )
            .await;
        Ok(true)
    }

    /// Ticks every [`TICK`] until `stop` is cancelled.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = crate::ticker::Ticker::new(TICK, stop);
            while ticker.next().await {
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "stream sessions: tick failed; trying again");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: &str, viewers: u64) -> OnAir {
        OnAir {
            stream_id: id.to_string(),
            tenant_id: "ten".to_string(),
            creator_id: Some("star".to_string()),
            title: "Friday set".to_string(),
            viewers,
        }
    }

    fn session(stream: &str, at: i64) -> Open {
        Open {
            id: format!("ses_{stream}"),
            tenant_id: "ten".to_string(),
            stream_id: stream.to_string(),
            creator_id: Some("star".to_string()),
            started_ms: at,
            peak_viewers: 2,
            viewer_ms: 5_000,
            sampled_ms: at,
            on_air_ms: at,
        }
    }

    #[test]
    fn a_stream_on_the_air_without_a_session_gets_one() {
        let plan = decide(&[live("a", 3), live("b", 0)], &[session("b", 1_000)], 2_000);
        assert_eq!(plan.open, vec![live("a", 3)]);
        assert!(plan.close.is_empty());
        assert_eq!(plan.sample.len(), 1);
        assert_eq!(plan.sample[0].0.stream_id, "b");
        assert_eq!(decide(&[], &[], 5), Plan::default());
    }

    #[test]
    fn samples_integrate_viewers_and_keep_the_peak() {
        let open = session("a", 10_000);
        let plan = decide(&[live("a", 4)], std::slice::from_ref(&open), 11_500);
        let (next, read) = &plan.sample[0];
        assert_eq!(*read, 10_000, "written only if nobody sampled since");
        assert_eq!(next.viewer_ms, 5_000 + 4 * 1_500);
        assert_eq!(next.peak_viewers, 4);
        assert_eq!((next.sampled_ms, next.on_air_ms), (11_500, 11_500));
        // Fewer viewers keep the peak; a clock that went back adds nothing.
        let plan = decide(&[live("a", 1)], std::slice::from_ref(&open), 9_000);
        assert_eq!(
            (plan.sample[0].0.peak_viewers, plan.sample[0].0.viewer_ms),
            (2, 5_000)
        );
        // A long gap without a leader counts at most MAX_SAMPLE_GAP_MS.
        let plan = decide(&[live("a", 2)], &[open], 10_000 + 60_000);
        assert_eq!(plan.sample[0].0.viewer_ms, 5_000 + 2 * MAX_SAMPLE_GAP_MS);
    }

    #[test]
    fn off_the_air_closes_only_after_the_grace_at_the_last_sight() {
        let mut open = session("a", 10_000);
        open.on_air_ms = 20_000;
        open.sampled_ms = 20_000;
        // Within the grace: sampled with no viewers (the time off the air adds nothing), kept.
        let plan = decide(&[], std::slice::from_ref(&open), 22_000);
        assert!(plan.close.is_empty() && plan.open.is_empty());
        let (next, _) = &plan.sample[0];
        assert_eq!(
            (next.viewer_ms, next.sampled_ms, next.on_air_ms),
            (5_000, 22_000, 20_000)
        );
        // Back on the air within the grace: the same session goes on.
        let plan = decide(&[live("a", 1)], std::slice::from_ref(&open), 22_500);
        assert!(plan.close.is_empty() && plan.open.is_empty());
        // Off for the whole grace: closed when it was last seen.
        let grace = i64::try_from(GRACE.as_millis()).expect("ms");
        let plan = decide(&[], std::slice::from_ref(&open), 20_000 + grace);
        assert_eq!(plan.close, vec![(open.clone(), 20_000)]);
        assert!(plan.sample.is_empty());
        // A stream on the air again after its session closed opens a new one (next tick).
        let plan = decide(&[live("a", 1)], &[], 30_000);
        assert_eq!(plan.open.len(), 1);
    }

    #[test]
    fn on_the_air_means_a_live_origin_reporting_the_streams_hls_path() {
        use crate::cluster::view::{NodeView, Snapshot};
        use crate::scheduler::StationPlacement;
        let row = |id: &str, slug: &str| db::stream_sessions::StreamRow {
            id: id.to_string(),
            tenant_id: "ten".to_string(),
            slug: slug.to_string(),
            name: format!("{slug} show"),
            creator_id: None,
        };
        let node = |alive: bool, paths: &[&str]| NodeView {
            alive,
            on_air: paths.iter().map(|p| p.to_string()).collect(),
            ..NodeView::default()
        };
        let mut snap = Snapshot::default();
        for (stream, origin) in [("a", "n1"), ("b", "n1"), ("c", "n2"), ("d", "n3")] {
            snap.placement.stations.insert(
                stream.to_string(),
                StationPlacement {
                    origin: origin.to_string(),
                    relays: vec!["n4".to_string()],
                    leaving: Vec::new(),
                },
            );
        }
        // n1 publishes a and (only as an audio mount path) not b; n2 is dead; n3 is absent;
        // n4, a relay, carries everything but is not the origin.
        snap.nodes
            .insert("n1".into(), node(true, &["/hls/a-live", "/b-live"]));
        snap.nodes
            .insert("n2".into(), node(false, &["/hls/c-live"]));
        snap.nodes.insert(
            "n4".into(),
            node(true, &["/hls/b-live", "/hls/c-live", "/hls/d-live"]),
        );
        snap.listeners.insert("a".into(), 7);
        let streams = [
            row("a", "a-live"),
            row("b", "b-live"),
            row("c", "c-live"),
            row("d", "d-live"),
            row("e", "e-live"),
        ];
        let got = on_air(&snap, &streams);
        assert_eq!(
            got,
            vec![OnAir {
                stream_id: "a".into(),
                tenant_id: "ten".into(),
                creator_id: None,
                title: "a-live show".into(),
                viewers: 7,
            }]
        );
    }

    #[test]
    fn the_live_notification_names_the_creator_and_the_title() {
        let n = went_live("Star", "Friday set", "lvs_1", "ses_1");
        assert_eq!(n.kind, LIVE_NOTIFICATION);
        assert_eq!(n.title, "Star is live: Friday set");
        assert_eq!(n.data["streamId"], "lvs_1");
        assert_eq!(n.data["sessionId"], "ses_1");
        let long = went_live(&"é".repeat(150), &"t".repeat(100), "lvs_1", "ses_1");
        assert_eq!(long.title.chars().count(), notifications::MAX_TITLE);
    }
}
