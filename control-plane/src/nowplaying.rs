//! Now playing, built once per change and shared by every reader.
//!
//! The hub keeps one [`Snapshot`] per station someone reads (the public JSON, the panel route,
//! the SSE feeds). A snapshot is rebuilt only when what it shows changes — the track the origin
//! reports, the listeners, the station itself, whether it is on the air — and then sent to every
//! subscriber of that station through a `watch` channel. So the song history and the DJ's display
//! name are read from the database once per change of a station, never once per subscriber or
//! per request (`onda_nowplaying_snapshot_builds_total` counts the builds). A station's feeds
//! are spread over channels of at most [`PER_SHARD`] feeds each, and a new snapshot reaches
//! them in waves of about [`WAVE`] feeds [`WAVE_PAUSE`] apart, so waking tens of thousands of
//! feeds never holds the runtime's queue for longer than one small wave while panel requests
//! wait (20,000 feeds take about a second).
//!
//! The feeds are public, so they are bounded: per client address (an IPv6 client by its /64) and
//! in total, and the total is kept below the process's open-file limit so the feeds can never
//! take the descriptors the panel API and the redirector need.
//!
//! Song ids are opaque: an HMAC of the station and the media file's hash under a key the
//! replicas agree on in the database, so the public JSON never shows the content hash (nodes
//! fetch media by it).

use crate::cluster::Cluster;
use crate::config::NowPlayingSettings;
use crate::db::cluster::CatalogStation;
use crate::db::{self, Db};
use crate::metrics::NowPlayingMetrics;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac as _};
use onda_shared::api::{
    CurrentSong, NextSong, NowPlaying, NowPlayingListeners, NowPlayingLive, NowPlayingMount,
    NowPlayingStation, PlayedSong, Song,
};
use onda_shared::cluster::proto::TrackPlaying;
use onda_shared::domain::AudioFormat;
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Entries of `song_history` in an answer.
const HISTORY: u32 = 10;
/// A station nobody subscribes to keeps its snapshot this long after the last read.
const IDLE: Duration = Duration::from_secs(60);
/// The hub compares every watched station with the view at least this often (placement and the
/// catalogue change without a now-playing change).
const TICK: Duration = Duration::from_secs(1);
/// Descriptors kept free of feeds for the API, the database, the control channel and media.
const FD_RESERVE: u64 = 256;
/// Feeds per channel at most: a channel wakes all of its feeds at once, so it is the smallest
/// wave there can be. A station gets channels as its feeds grow.
pub const PER_SHARD: usize = 64;
/// Feeds woken before the publisher pauses.
pub const WAVE: usize = 64;
/// The pause between waves.
pub const WAVE_PAUSE: Duration = Duration::from_millis(3);
/// What a refused feed is told to wait.
pub const RETRY_AFTER_SECS: u32 = 30;

/// The pictures a snapshot shows: the station's media files' (by media hash) and its default.
struct Art<'a> {
    media: &'a HashMap<String, String>,
    station: Option<&'a str>,
}

/// Why the hub cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("There is no station {0:?}.")]
    NoStation(String),
    #[error(
        "This address already holds {limit} now-playing feeds \
         (nowplaying.max_subscribers_per_ip); close one before opening another."
    )]
    PerIp { limit: u32 },
    #[error(
        "This server carries its maximum of {limit} now-playing feeds \
         (nowplaying.max_subscribers); try again later."
    )]
    Total { limit: u32 },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// What a snapshot was built from: when these are equal, so is the answer.
#[derive(Debug, Clone, PartialEq)]
struct Inputs {
    station: CatalogStation,
    track: Option<TrackPlaying>,
    listeners: u64,
    online: bool,
}

/// One station's now-playing answer as of its last change. Listen URLs hold a marker where the
/// address the client used goes, so one snapshot serves every host name.
#[derive(Debug)]
pub struct Snapshot {
    inputs: Inputs,
    np: NowPlaying,
    marker: Arc<str>,
    /// The SSE frame (`event: nowplaying`), split where the marker was.
    event: Vec<Bytes>,
    /// The frame as last rendered, for its base: every feed of the same host shares the bytes.
    rendered: Mutex<Option<(String, Bytes)>>,
}

impl Snapshot {
    /// The answer for a client that reached us at `base` (`http://host`), with elapsed and
    /// remaining time as of now.
    pub fn json(&self, base: &str) -> NowPlaying {
        let mut np = self.np.clone();
        let fix = |url: &mut String| *url = url.replace(&*self.marker, base);
        fix(&mut np.station.listen_url);
        for m in &mut np.station.mounts {
            fix(&mut m.url);
            if let Some(h) = &mut m.hls_url {
                fix(h);
            }
        }
        let songs = np
            .now_playing
            .iter_mut()
            .map(|c| &mut c.song)
            .chain(np.playing_next.iter_mut().map(|n| &mut n.song))
            .chain(np.song_history.iter_mut().map(|h| &mut h.song));
        for song in songs {
            fix(&mut song.art);
        }
        if let (Some(c), Some(t)) = (np.now_playing.as_mut(), self.inputs.track.as_ref()) {
            let elapsed = now_ms().saturating_sub(t.started_at_ms) / 1000;
            c.elapsed = elapsed;
            c.remaining = c.duration.saturating_sub(elapsed);
        }
        np
    }

    /// The station's name, as of this snapshot.
    pub fn station_name(&self) -> &str {
        &self.np.station.name
    }

    /// The SSE frame sent to subscribers when this snapshot is new: the precomputed bytes with
    /// `base` spliced in, no serialization per subscriber.
    pub fn event(&self, base: &str) -> Bytes {
        let mut cache = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((b, bytes)) = cache.as_ref()
            && b == base
        {
            return bytes.clone();
        }
        let bytes = self.splice(base);
        *cache = Some((base.to_string(), bytes.clone()));
        bytes
    }

    fn splice(&self, base: &str) -> Bytes {
        let len: usize = self.event.iter().map(Bytes::len).sum();
        let mut out = BytesMut::with_capacity(len + base.len() * self.event.len());
        for (i, part) in self.event.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(base.as_bytes());
            }
            out.extend_from_slice(part);
        }
        out.freeze()
    }
}

/// An SSE frame of `np`.
pub fn event_frame(np: &NowPlaying) -> Bytes {
    let json = serde_json::to_string(np).unwrap_or_else(|_| "null".to_string());
    Bytes::from(format!("event: nowplaying\ndata: {json}\n\n"))
}

type Shard = watch::Sender<Option<Arc<Snapshot>>>;

struct Entry {
    current: Mutex<Option<Arc<Snapshot>>>,
    /// The feeds, spread over channels of at most [`PER_SHARD`] (see [`Entry::publish`]).
    shards: Mutex<Vec<Arc<Shard>>>,
    /// Bumped by every publish, so the fan-out knows when its pass is out of date.
    generation: std::sync::atomic::AtomicU64,
    /// A fan-out task is running for this station (see [`Entry::publish`]).
    fanning: AtomicBool,
    /// One build at a time per station.
    building: tokio::sync::Mutex<()>,
    last_read: Mutex<Instant>,
}

impl Entry {
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn feeds(&self) -> usize {
        self.shards().iter().map(|s| s.receiver_count()).sum()
    }

    /// A feed goes to the first channel with room, else to a new one.
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let mut shards = self
            .shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shard = match shards.iter().find(|s| s.receiver_count() < PER_SHARD) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(watch::Sender::new(None));
                shards.push(s.clone());
                s
            }
        };
        let mut rx = shard.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// Makes `snap` the station's answer and has it sent to the feeds. One fan-out runs per
    /// station at a time: it goes shard after shard, pausing after every [`WAVE`] feeds woken,
    /// and sends each shard the newest snapshot there is when it gets there; when a snapshot
    /// newer than the one its pass began with arrived meanwhile, it makes another pass. So
    /// snapshots published faster than a pass takes never starve the last shards, and a shard
    /// never goes back to an older snapshot.
    fn publish(self: &Arc<Self>, snap: Arc<Snapshot>) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snap);
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.fanning.swap(true, Ordering::SeqCst) {
            return;
        }
        let entry = self.clone();
        tokio::spawn(async move {
            loop {
                let began = entry.generation.load(Ordering::SeqCst);
                let mut woken = 0;
                for shard in entry.shards() {
                    let Some(latest) = entry.current() else {
                        break;
                    };
                    let sent = shard.send_if_modified(|v| {
                        if v.as_ref().is_some_and(|v| Arc::ptr_eq(v, &latest)) {
                            return false;
                        }
                        *v = Some(latest.clone());
                        true
                    });
                    if !sent {
                        continue;
                    }
                    woken += shard.receiver_count();
                    if woken >= WAVE {
                        woken = 0;
                        tokio::time::sleep(WAVE_PAUSE).await;
                    }
                }
                if entry.generation.load(Ordering::SeqCst) != began {
                    continue;
                }
                entry.fanning.store(false, Ordering::SeqCst);
                // A publish between the check and the store saw `fanning` still set and left
                // the fan-out to this task: take it back unless another task already did.
                if entry.generation.load(Ordering::SeqCst) == began
                    || entry.fanning.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            }
        });
    }
}

/// Feeds open per client address and in total.
struct Admission {
    per_ip: u32,
    total: u32,
    open: Mutex<(u32, HashMap<IpAddr, u32>)>,
    metrics: NowPlayingMetrics,
}

/// A feed's place under the limits, given back when the feed ends (dropped with its stream).
pub struct Ticket {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut open) = self.admission.open.lock() {
            open.0 = open.0.saturating_sub(1);
            if let Some(ip) = self.ip
                && let Some(n) = open.1.get_mut(&ip)
            {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&ip);
                }
            }
        }
        self.admission.metrics.subscribers.dec();
    }
}

/// The limits count an IPv6 client by its /64: one host usually holds the whole prefix.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Ticket, HubError> {
        let ip = ip.map(client_key);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ip) = ip
            && open.1.get(&ip).copied().unwrap_or(0) >= self.per_ip
        {
            self.metrics.refused.with_label_values(&["per_ip"]).inc();
            return Err(HubError::PerIp { limit: self.per_ip });
        }
        if open.0 >= self.total {
            self.metrics.refused.with_label_values(&["total"]).inc();
            return Err(HubError::Total { limit: self.total });
        }
        open.0 += 1;
        if let Some(ip) = ip {
            *open.1.entry(ip).or_default() += 1;
        }
        self.metrics.subscribers.inc();
        Ok(Ticket {
            admission: self.clone(),
            ip,
        })
    }
}

/// An open feed: the answer to send first, then every new snapshot.
pub struct Subscription {
    pub first: Arc<Snapshot>,
    pub updates: watch::Receiver<Option<Arc<Snapshot>>>,
    pub ticket: Ticket,
}

pub struct Hub {
    db: Db,
    cluster: Arc<Cluster>,
    metrics: NowPlayingMetrics,
    admission: Arc<Admission>,
    id_key: Vec<u8>,
    marker: Arc<str>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    closed: AtomicBool,
    stop: CancellationToken,
    /// The runtime the hub started on: feeds are served on a runtime of their own (see
    /// `crate::lanes`), but their database work and fan-out stay here, so no pooled database
    /// connection is opened from (and tied to) the feeds' low-priority thread.
    main: tokio::runtime::Handle,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nowplaying::Hub")
    }
}

/// The feeds' total limit kept below the open-file limit (raised to its hard limit first).
fn total_within_fd_limit(configured: u32) -> u32 {
    let Some(fds) = raise_nofile() else {
        return configured;
    };
    let room = u32::try_from(fds.saturating_sub(FD_RESERVE).max(1)).unwrap_or(u32::MAX);
    if configured > room {
        tracing::warn!(
            "nowplaying.max_subscribers = {configured} does not fit the open file limit ({fds}); \
             at most {room} feeds will be open (raise LimitNOFILE / ulimit -n)"
        );
        room
    } else {
        configured
    }
}

/// Raises the soft open-file limit to the hard one; the limit now in force.
fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.maximum != lim.current {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            lim = raised;
        }
    }
    lim.current
}

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn secs(ms: u64) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}

fn source(t: &TrackPlaying) -> String {
    if t.live { "live" } else { "autodj" }.to_string()
}

impl Hub {
    /// Agrees on the song id key with the other replicas and starts the loop that rebuilds
    /// snapshots on changes.
    pub async fn start(
        db: Db,
        cluster: Arc<Cluster>,
        metrics: NowPlayingMetrics,
        limits: NowPlayingSettings,
    ) -> anyhow::Result<Arc<Hub>> {
        let id_key = {
            let mut c = db.conn().await?;
            db::cluster::agree_fact(&mut c, SONG_ID_KEY, &crate::secrets::new_playback_secret())
                .await?
        };
        let hub = Arc::new(Hub {
            db,
            cluster,
            admission: Arc::new(Admission {
                per_ip: limits.max_subscribers_per_ip,
                total: total_within_fd_limit(limits.max_subscribers),
                open: Mutex::new((0, HashMap::new())),
                metrics: metrics.clone(),
            }),
            metrics,
            id_key: id_key.into_bytes(),
            // Unknowable to a station name: random, and spliced out before anything is sent.
            marker: Arc::from(format!("onda-base-{}", crate::secrets::new_password())),
            entries: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            main: tokio::runtime::Handle::current(),
        });
        tokio::spawn(hub.clone().run());
        Ok(hub)
    }

    /// Ends every feed (they would keep a graceful shutdown waiting) and the loop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.cancel();
        self.lock_entries().clear();
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>) {
        let mut changed = self.cluster.changed.subscribe();
        loop {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tokio::time::sleep(TICK) => {}
                () = self.stop.cancelled() => return,
            }
            self.refresh().await;
        }
    }

    /// Rebuilds the snapshots whose inputs changed; forgets stations gone or no longer read.
    async fn refresh(&self) {
        let entries: Vec<(String, Arc<Entry>)> = self
            .lock_entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (id, entry) in entries {
            let idle =
                entry.feeds() == 0 && entry.last_read.lock().map_or(true, |t| t.elapsed() > IDLE);
            let inputs = self.inputs(&id);
            let Some(inputs) = inputs.filter(|_| !idle) else {
                // Dropping the sender ends the station's feeds.
                self.lock_entries().remove(&id);
                continue;
            };
            if let Err(e) = self.ensure_built(&entry, inputs).await {
                // The database is briefly unreachable: the next round tries again.
                tracing::debug!(station = id, "now-playing snapshot: {e}");
            }
        }
    }

    /// What a station's answer depends on now, from the view; None when it does not exist.
    fn inputs(&self, key: &str) -> Option<Inputs> {
        let view = self.cluster.view.get();
        let station = view.station(key)?;
        Some(Inputs {
            station: (**station).clone(),
            track: view.now_playing.get(&station.id).cloned(),
            listeners: view.listeners.get(&station.id).copied().unwrap_or(0),
            online: station
                .mounts
                .iter()
                .any(|(path, _, _)| !view.carriers(station, path).is_empty()),
        })
    }

    fn entry(&self, id: &str) -> Arc<Entry> {
        let mut entries = self.lock_entries();
        let e = entries
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Entry {
                    current: Mutex::new(None),
                    shards: Mutex::new(Vec::new()),
                    generation: std::sync::atomic::AtomicU64::new(0),
                    fanning: AtomicBool::new(false),
                    building: tokio::sync::Mutex::new(()),
                    last_read: Mutex::new(Instant::now()),
                })
            })
            .clone();
        if let Ok(mut t) = e.last_read.lock() {
            *t = Instant::now();
        }
        e
    }

    /// The station's snapshot for `inputs`, built (and sent to its subscribers) unless the
    /// current one already shows them.
    async fn ensure_built(
        &self,
        entry: &Arc<Entry>,
        inputs: Inputs,
    ) -> Result<Arc<Snapshot>, HubError> {
        let current = |e: &Entry| e.current().filter(|s| s.inputs == inputs);
        if let Some(s) = current(entry) {
            return Ok(s);
        }
        let _one = entry.building.lock().await;
        // Another reader may have built it while this one waited.
        if let Some(s) = current(entry) {
            return Ok(s);
        }
        let snap = Arc::new(self.build(inputs.clone()).await?);
        self.metrics.snapshot_builds.inc();
        entry.publish(snap.clone());
        Ok(snap)
    }

    /// The station's answer now (public JSON, panel).
    pub async fn current(&self, key: &str) -> Result<Arc<Snapshot>, HubError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(HubError::NoStation(key.to_string()));
        }
        let inputs = self
            .inputs(key)
            .ok_or_else(|| HubError::NoStation(key.to_string()))?;
        let entry = self.entry(&inputs.station.id);
        self.ensure_built(&entry, inputs).await
    }

    /// Opens a feed of the station for a client at `ip`, within the limits. Runs on the hub's
    /// own runtime whichever runtime calls it.
    pub async fn subscribe(
        self: &Arc<Self>,
        key: &str,
        ip: Option<IpAddr>,
    ) -> Result<Subscription, HubError> {
        let (hub, owned) = (self.clone(), key.to_string());
        match self
            .main
            .spawn(async move { hub.subscribe_here(&owned, ip).await })
            .await
        {
            Ok(sub) => sub,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is stopping.
            Err(_) => Err(HubError::NoStation(key.to_string())),
        }
    }

    async fn subscribe_here(
        &self,
        key: &str,
        ip: Option<IpAddr>,
    ) -> Result<Subscription, HubError> {
        let ticket = self.admission.admit(ip)?;
        let first = self.current(key).await?;
        let entry = self.entry(&first.inputs.station.id);
        let updates = entry.subscribe();
        // A snapshot published between reading `first` and subscribing reached the channel
        // before this feed did: the feed starts from it instead (a publish sets the current
        // snapshot before it sends).
        let first = entry.current().unwrap_or(first);
        // Closed meanwhile: `close` may have cleared the entries before this one was put back,
        // and a feed of it would never end.
        if self.closed.load(Ordering::SeqCst) {
            return Err(HubError::NoStation(key.to_string()));
        }
        Ok(Subscription {
            first,
            updates,
            ticket,
        })
    }

    fn song_id(&self, station_id: &str, sha256: &str) -> String {
        song_id(&self.id_key, station_id, sha256)
    }

    /// `art` maps the media files' hashes to their pictures'; a track without one shows the
    /// station's default picture, or the built-in one.
    fn song(&self, t: &TrackPlaying, art: &Art<'_>) -> Song {
        let picture = t
            .media_sha256
            .as_deref()
            .and_then(|m| art.media.get(m).map(String::as_str))
            .or(art.station)
            .map(|sha| format!("{}{}", self.marker, crate::media::art::path(sha, 500)))
            .unwrap_or_else(|| format!("{}/art/default.svg", self.marker));
        Song {
            id: t
                .media_sha256
                .as_deref()
                .map(|sha| self.song_id(&t.station_id, sha))
                .unwrap_or_default(),
            text: t.title.clone(),
            artist: t.artist.clone(),
            title: t.track_title.clone(),
            album: String::new(),
            art: picture,
        }
    }

    /// Reads the history (and the live DJ's display name) once and makes the snapshot.
    async fn build(&self, inputs: Inputs) -> Result<Snapshot, HubError> {
        let station = &inputs.station;
        let current = inputs.track.as_ref();
        let (history, streamer, art) = {
            let mut c = self.db.conn().await?;
            let history = db::history::recent(&mut c, &station.id, HISTORY + 1).await?;
            // A DJ's account name becomes the display name the tenant gave it.
            let streamer = match current.filter(|t| t.live) {
                Some(t) if !t.streamer.is_empty() && t.streamer != "source" => {
                    db::streamers::display_name(&mut c, &station.id, &t.streamer)
                        .await?
                        .unwrap_or_else(|| t.streamer.clone())
                }
                Some(t) => t.title.clone(),
                None => String::new(),
            };
            let media: Vec<&str> = current
                .iter()
                .copied()
                .chain(history.iter())
                .filter_map(|t| t.media_sha256.as_deref())
                .collect();
            let art = db::art::of_media(&mut c, &station.id, &media).await?;
            (
                history,
                streamer,
                art.into_iter().collect::<HashMap<_, _>>(),
            )
        };
        let art = Art {
            media: &art,
            station: station.art.as_deref(),
        };
        let np = self.answer(&inputs, &history, streamer, &art);
        let frame = event_frame(&np);
        let event = split_at_marker(&frame, self.marker.as_bytes());
        Ok(Snapshot {
            inputs,
            np,
            marker: self.marker.clone(),
            event,
            rendered: Mutex::new(None),
        })
    }

    fn answer(
        &self,
        inputs: &Inputs,
        history: &[TrackPlaying],
        streamer: String,
        art: &Art<'_>,
    ) -> NowPlaying {
        let station = &inputs.station;
        let current = inputs.track.as_ref();
        let base = &*self.marker;
        let now = now_ms();
        let now_playing = current.map(|t| {
            let elapsed = now.saturating_sub(t.started_at_ms) / 1000;
            let duration = t.duration_ms.unwrap_or(0) / 1000;
            CurrentSong {
                played_at: secs(t.started_at_ms),
                duration,
                elapsed,
                remaining: duration.saturating_sub(elapsed),
                source: source(t),
                is_request: t.request_id.is_some(),
                song: self.song(t, art),
            }
        });
        let playing_next = current.and_then(|t| Some((t.next_title.as_ref()?, t)));
        let playing_next = playing_next.map(|(text, t)| {
            let (artist, title) = text.split_once(" - ").unwrap_or(("", text.as_str()));
            NextSong {
                is_request: t.next_request_id.is_some(),
                song: Song {
                    id: String::new(),
                    text: text.clone(),
                    artist: artist.to_string(),
                    title: title.to_string(),
                    album: String::new(),
                    art: String::new(),
                },
            }
        });
        let song_history = history
            .iter()
            .filter(|h| current.is_none_or(|c| c.started_at_ms != h.started_at_ms))
            .take(HISTORY as usize)
            .map(|h| PlayedSong {
                played_at: secs(h.started_at_ms),
                duration: h.duration_ms.unwrap_or(0) / 1000,
                source: source(h),
                is_request: h.request_id.is_some(),
                song: self.song(h, art),
            })
            .collect();
        let live = current.filter(|t| t.live);
        let mounts: Vec<NowPlayingMount> = station
            .mounts
            .iter()
            .map(|(path, format, kbps)| {
                let url = format!("{base}/listen/{}{path}", station.slug);
                NowPlayingMount {
                    name: path.clone(),
                    hls_url: (station.hls && matches!(format, AudioFormat::Mp3 | AudioFormat::Aac))
                        .then(|| format!("{url}.m3u8")),
                    url,
                    format: *format,
                    bitrate: *kbps,
                }
            })
            .collect();
        NowPlaying {
            station: NowPlayingStation {
                id: station.id.clone(),
                name: station.name.clone(),
                shortcode: station.slug.clone(),
                listen_url: mounts.first().map(|m| m.url.clone()).unwrap_or_default(),
                mounts,
                hls_preferred: station.hls_preferred,
            },
            listeners: NowPlayingListeners {
                total: inputs.listeners,
                current: inputs.listeners,
            },
            live: NowPlayingLive {
                is_live: live.is_some(),
                streamer_name: streamer,
                broadcast_start: live.map(|t| secs(t.started_at_ms)),
            },
            now_playing,
            playing_next,
            song_history,
            is_online: inputs.online,
        }
    }
}

/// The name of the song id key among the cluster's facts (`db::cluster::agree_fact`).
pub const SONG_ID_KEY: &str = "nowplaying_song_id_key";

/// An opaque, stable id of a media file as one station plays it (song requests list the same).
pub fn song_id(key: &[u8], station_id: &str, sha256: &str) -> String {
    let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(station_id.as_bytes());
    mac.update(b"\n");
    mac.update(sha256.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// `frame` cut at every occurrence of `marker` (the marker left out).
fn split_at_marker(frame: &Bytes, marker: &[u8]) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + marker.len() <= frame.len() {
        if &frame[i..i + marker.len()] == marker {
            parts.push(frame.slice(start..i));
            i += marker.len();
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(frame.slice(start..));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_the_marker_and_splice_back() {
        let frame = Bytes::from_static(b"data: {\"u\":\"MARK/a\",\"v\":\"MARK/b\"}\n\n");
        let parts = split_at_marker(&frame, b"MARK");
        assert_eq!(parts.len(), 3);
        let joined: Vec<u8> = parts.join(&b"http://h"[..]);
        assert_eq!(
            joined,
            b"data: {\"u\":\"http://h/a\",\"v\":\"http://h/b\"}\n\n".to_vec()
        );
        assert_eq!(
            split_at_marker(&Bytes::from_static(b"none"), b"MARK").len(),
            1
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn admission_counts_per_address_and_in_total() {
        let registry = prometheus::Registry::new();
        let metrics = NowPlayingMetrics::new(&registry).expect("metrics");
        let adm = Arc::new(Admission {
            per_ip: 2,
            total: 3,
            open: Mutex::new((0, HashMap::new())),
            metrics,
        });
        let ip1: IpAddr = "127.0.0.1".parse().expect("ip");
        let ip2: IpAddr = "127.0.0.2".parse().expect("ip");
        let a = adm.admit(Some(ip1)).expect("first");
        let _b = adm.admit(Some(ip1)).expect("second");
        assert!(matches!(
            adm.admit(Some(ip1)),
            Err(HubError::PerIp { limit: 2 })
        ));
        let _c = adm.admit(Some(ip2)).expect("other address");
        assert!(matches!(
            adm.admit(Some(ip2)),
            Err(HubError::Total { limit: 3 })
        ));
        drop(a);
        let _d = adm.admit(Some(ip1)).expect("a slot given back");
    }
}
