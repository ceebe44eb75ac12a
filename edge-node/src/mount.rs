//! Mounts and the fan-out. A mount has at most one source session at a time; a session holds
//! the shared buffer every listener of it reads from: a ring of reference-counted chunks indexed
//! by byte offset, so a listener is just an offset into it (no per-listener copy), a new listener
//! starts `burst_bytes` back, and a listener more than `queue_bytes` behind is dropped without
//! the source or anyone else waiting for it.

use crate::config::MountConfig;
use crate::icy::Metadata;
pub(crate) use crate::metrics::Counters;
use crate::sync::lock;
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// What a source client told us about its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SourceInfo {
    pub content_type: String,
    pub name: String,
    pub description: String,
    pub genre: String,
    pub url: String,
    pub public: bool,
    /// kbit/s, from `ice-audio-info`/`icy-br`, 0 when unknown.
    pub bitrate: u32,
    /// The raw `ice-audio-info` value.
    pub audio_info: String,
    pub user_agent: String,
    pub ip: String,
    /// True for a relay pulling from another server.
    pub relay: bool,
    /// The source user who authenticated (`source`, or a live DJ's name).
    pub user: String,
    /// A digest of the credentials it logged in with (`auth::Logins::digest`): a title update
    /// presenting them needs no password check again.
    pub credentials: Option<Credentials>,
}

/// A salted digest of the credentials a source logged in with (see `auth::Logins::digest`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Credentials([u8; 32]);

impl Credentials {
    pub(crate) fn new(digest: [u8; 32]) -> Credentials {
        Credentials(digest)
    }

    /// Constant-time comparison.
    pub(crate) fn matches(&self, other: &Credentials) -> bool {
        crate::constant_time_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Credentials) -> bool {
        self.matches(other)
    }
}

impl Eq for Credentials {}

/// The outcome of one read from a session.
#[derive(Debug)]
pub(crate) enum Read {
    /// New bytes from the listener's offset; the offset has moved past them.
    Data(Vec<Bytes>),
    /// Nothing new yet.
    Pending,
    /// The listener fell further behind than the queue allows.
    Lagged,
    /// The source left and the listener has everything it sent.
    Ended,
}

#[derive(Debug, Default)]
struct Ring {
    /// (offset of the chunk's first byte, chunk), oldest first.
    chunks: VecDeque<(u64, Bytes)>,
}

/// One connection of a source (or one run of a relay) feeding a mount.
pub(crate) struct Session {
    pub info: SourceInfo,
    pub connected_at: SystemTime,
    pub started: Instant,
    ring: Mutex<Ring>,
    /// For Ogg streams: each chained link's header pages, which listeners need first.
    ogg: Option<Mutex<crate::ogg::OggTracker>>,
    /// Bytes received from the source.
    end: AtomicU64,
    /// Bytes listeners may read: `end` as of the last publication. Publishing in batches (every
    /// `batch_bytes`, or by the publisher task every few hundred milliseconds) wakes each
    /// listener a few times a second instead of once per MP3 frame the source writes.
    published: AtomicU64,
    batch_bytes: u64,
    /// The first this many bytes are published as they arrive: whoever joins a mount that has
    /// just come up (a station taken over after a failover, a source that reconnected) hears
    /// it at once rather than after the first batch. One burst's worth.
    eager_bytes: u64,
    closed: AtomicBool,
    notify: Notify,
    queue_bytes: u64,
    keep_bytes: u64,
    meta: RwLock<Arc<Metadata>>,
    /// Set to stop the source's connection (killsource, config removal).
    pub kill: Notify,
    pub killed: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("info", &self.info)
            .field("end", &self.end.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

static META_VERSION: AtomicU64 = AtomicU64::new(1);

impl Session {
    /// A new session for a mount, publishing in batches as `limits` say.
    pub(crate) fn start(info: SourceInfo, limits: &crate::config::LimitsConfig) -> Arc<Session> {
        let batch = if limits.publish_interval_ms == 0 {
            0
        } else {
            32 * 1024
        };
        let session = Arc::new(Session::new(
            info,
            limits.burst_bytes,
            limits.queue_bytes,
            batch,
        ));
        if limits.publish_interval_ms > 0 {
            session.spawn_publisher(Duration::from_millis(limits.publish_interval_ms));
        }
        session
    }

    /// A session; `batch_bytes` 0 publishes every push at once (no batching).
    pub(crate) fn new(
        info: SourceInfo,
        burst_bytes: u64,
        queue_bytes: u64,
        batch_bytes: u64,
    ) -> Session {
        let ogg = crate::frames::is_ogg(&info.content_type)
            .then(|| Mutex::new(crate::ogg::OggTracker::default()));
        Session {
            ogg,
            info,
            connected_at: SystemTime::now(),
            started: Instant::now(),
            ring: Mutex::new(Ring::default()),
            end: AtomicU64::new(0),
            published: AtomicU64::new(0),
            batch_bytes,
            eager_bytes: burst_bytes,
            closed: AtomicBool::new(false),
            notify: Notify::new(),
            queue_bytes,
            keep_bytes: queue_bytes.max(burst_bytes),
            meta: RwLock::new(Arc::new(Metadata::new(
                META_VERSION.fetch_add(1, Ordering::Relaxed),
                "",
                "",
            ))),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
        }
    }

    /// Appends audio from the source and wakes the listeners.
    pub(crate) fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let chunk_len = chunk.len() as u64;
        let tags = self.ogg.as_ref().and_then(|ogg| {
            let mut ogg = lock(ogg);
            ogg.feed(&chunk);
            ogg.take_tags()
        });
        if let Some(tags) = tags.filter(|t| !t.is_empty()) {
            // A new track's comment header: now playing, as an /admin/metadata update would.
            self.set_tags(tags);
        }
        {
            let mut ring = lock(&self.ring);
            let end = self.end.load(Ordering::Relaxed);
            let len = chunk.len() as u64;
            ring.chunks.push_back((end, chunk));
            let new_end = end + len;
            // Drop chunks wholly older than what listeners may still need.
            while let Some((start, c)) = ring.chunks.front() {
                if ring.chunks.len() > 1 && start + c.len() as u64 + self.keep_bytes <= new_end {
                    ring.chunks.pop_front();
                } else {
                    break;
                }
            }
            self.end.store(new_end, Ordering::Release);
            if let (Some(ogg), Some((oldest, _))) = (&self.ogg, ring.chunks.front()) {
                lock(ogg).forget_before(*oldest);
            }
        }
        let end = self.end();
        let began = end - chunk_len;
        if began < self.eager_bytes || end - self.published() >= self.batch_bytes {
            self.publish();
        }
    }

    /// Makes everything received so far readable and wakes the listeners.
    pub(crate) fn publish(&self) {
        let end = self.end();
        if self.published.swap(end, Ordering::AcqRel) != end {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Publishes whatever is pending every `every`, until the session ends.
    pub(crate) fn spawn_publisher(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.publish();
                if s.is_closed() {
                    return;
                }
            }
        });
    }

    /// Marks the session over; listeners drain what is left and then see `Ended`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.publish();
        self.notify.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Bytes received from the source so far.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Where a new listener starts: the chunk boundary at least `burst` bytes before the end
    /// (or the oldest kept byte).
    pub(crate) fn burst_start(&self, burst: u64) -> u64 {
        let ring = lock(&self.ring);
        let end = self.published();
        // `burst` back (reads slice inside chunks), never before the oldest kept byte, then on to
        // the next frame so the listener's decoder starts on a frame boundary.
        let oldest = ring.chunks.front().map_or(end, |(s, _)| *s);
        let start = end.saturating_sub(burst).max(oldest);
        self.align(&ring, start, end)
    }

    /// Where a listener starts reading, and what it must be sent before: for an Ogg stream, the
    /// header pages of the chained link its start belongs to (a start inside header pages moves
    /// on to the link's first audio page), so a decoder always has the headers of what follows.
    pub(crate) fn listener_start(&self, back: u64) -> (u64, Option<Bytes>) {
        let pos = self.burst_start(back);
        let Some(ogg) = &self.ogg else {
            return (pos, None);
        };
        let oldest = lock(&self.ring).chunks.front().map_or(pos, |(s, _)| *s);
        lock(ogg).start_for(pos, oldest)
    }

    /// The first frame boundary at or after `start` (within 8 KiB), or `start` itself when the
    /// format is unknown or no frame is found.
    fn align(&self, ring: &Ring, start: u64, end: u64) -> u64 {
        let Some(parse) = crate::frames::parser_for(&self.info.content_type) else {
            return start;
        };
        let mut window = Vec::with_capacity(8192);
        for (s, c) in &ring.chunks {
            let chunk_end = s + c.len() as u64;
            if chunk_end <= start || *s >= end {
                continue;
            }
            let from = usize::try_from(start.saturating_sub(*s)).unwrap_or(0);
            let room = 8192 - window.len();
            let piece = &c[from..];
            window.extend_from_slice(&piece[..piece.len().min(room)]);
            if window.len() >= 8192 {
                break;
            }
        }
        let found = if crate::frames::is_ogg(&self.info.content_type) {
            crate::frames::find_ogg_start(&window)
        } else {
            crate::frames::find_frame(&window, parse)
        };
        found.map_or(start, |i| start + i as u64)
    }

    /// Whether a reader at `pos` is more than the queue behind what the source sent.
    pub(crate) fn too_far_behind(&self, pos: u64) -> bool {
        self.end().saturating_sub(pos) > self.queue_bytes
    }

    /// Everything after `pos`, advancing it.
    pub(crate) fn read(&self, pos: &mut u64) -> Read {
        // Lag counts against everything received; reading stops at what is published, or at
        // the end once the session is closed: the source's last flush may come after the close,
        // and a reader told there is news ([`Session::has_news`]) must then get it or `Ended`,
        // never `Pending` (it would ask again at once, forever).
        if self.too_far_behind(*pos) {
            return Read::Lagged;
        }
        let end = if self.is_closed() {
            self.end()
        } else {
            self.published()
        };
        if *pos >= end {
            return if self.is_closed() && *pos >= self.end() {
                Read::Ended
            } else {
                Read::Pending
            };
        }
        let ring = lock(&self.ring);
        let Some((first, _)) = ring.chunks.front() else {
            return Read::Pending;
        };
        if *pos < *first {
            return Read::Lagged;
        }
        // The chunk holding `pos`: the last one starting at or before it.
        let idx = ring.chunks.partition_point(|(s, _)| *s <= *pos) - 1;
        let mut out = Vec::with_capacity(ring.chunks.len() - idx);
        for (start, chunk) in ring.chunks.iter().skip(idx) {
            if *start >= end {
                break;
            }
            let skip = usize::try_from(pos.saturating_sub(*start)).unwrap_or(0);
            let take = usize::try_from(end - start)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            if skip < take {
                out.push(chunk.slice(skip..take));
            }
        }
        *pos = end;
        Read::Data(out)
    }

    /// Whether a reader at `pos` has something new to read (or the session ended).
    pub(crate) fn has_news(&self, pos: u64) -> bool {
        self.published() > pos || self.is_closed()
    }

    /// Woken at the next publish or close: enable it before looking at [`Session::has_news`].
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Resolves when there may be something new after `pos` (or the session ended).
    pub(crate) async fn wait(&self, pos: u64) {
        loop {
            let notified = self.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_news(pos) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn metadata(&self) -> Arc<Metadata> {
        self.meta
            .read()
            .map_or_else(|p| p.into_inner().clone(), |m| m.clone())
    }

    pub(crate) fn set_title(&self, title: &str, url: &str) {
        let meta = Arc::new(Metadata::new(
            META_VERSION.fetch_add(1, Ordering::Relaxed),
            title,
            url,
        ));
        match self.meta.write() {
            Ok(mut m) => *m = meta,
            Err(p) => *p.into_inner() = meta,
        }
    }

    /// Now playing from an Ogg stream's comment header: "Artist - Title" for ICY and
    /// now-playing, the two apart for status-json.
    pub(crate) fn set_tags(&self, tags: crate::ogg::Tags) {
        let mut meta = Metadata::new(
            META_VERSION.fetch_add(1, Ordering::Relaxed),
            &tags.display(),
            "",
        );
        meta.tags = Some(tags);
        match self.meta.write() {
            Ok(mut m) => *m = Arc::new(meta),
            Err(p) => *p.into_inner() = Arc::new(meta),
        }
    }

    /// Asks the source's connection to end.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_waiters();
        self.kill.notify_one();
    }
}

/// Gathers a source's small writes (ffmpeg writes one ~400-byte MP3 frame at a time) into
/// chunks of a few KiB before they enter the ring: fewer chunks per listener read, and no read
/// buffer kept alive per frame.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    pending: BytesMut,
    since: Option<Instant>,
}

impl Coalescer {
    pub(crate) const BYTES: usize = 8 * 1024;
    pub(crate) const WAIT: Duration = Duration::from_millis(100);

    pub(crate) fn add(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.since = Some(Instant::now());
        }
        if self.pending.capacity() - self.pending.len() < data.len() {
            self.pending.reserve(data.len().max(4 * Self::BYTES));
        }
        self.pending.extend_from_slice(data);
    }

    /// True when the pending bytes should go out now.
    pub(crate) fn due(&self) -> bool {
        self.pending.len() >= Self::BYTES || self.since.is_some_and(|t| t.elapsed() >= Self::WAIT)
    }

    /// The latest moment pending bytes may wait until, if any are pending.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + Self::WAIT)
    }

    pub(crate) fn flush(&mut self, session: &Session) {
        if !self.pending.is_empty() {
            session.push(self.pending.split().freeze());
        }
        self.since = None;
    }
}

/// What the server can tell a listener's task from outside.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    Kill,
    Move(String),
    /// The listener's home mount has a source again: one on a fallback goes back to it.
    Return,
}

/// A listener's control line: the server's side ([`ControlTx`], kept in its entry) and the
/// listener task's ([`ControlRx`]). The last word wins, except that a kill stays and a move is
/// not replaced by a return (a move re-tunes anyway); the task hears `None` once every sender is
/// gone. Hand-written rather than a tokio mpsc channel, whose first block of 32 slots (about
/// 1 KiB) is allocated with it: ten megabytes at ten thousand listeners, for a word that comes
/// once in a listener's life if ever. The waiting task's waker lives in the slot (not in a
/// `Notified` inside the task's future), so a listener's task stays small.
pub(crate) fn control_line() -> (ControlTx, ControlRx) {
    let slot = Arc::new(ControlSlot {
        word: Mutex::new(None),
        senders: std::sync::atomic::AtomicUsize::new(1),
        closed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    (ControlTx(slot.clone()), ControlRx(slot))
}

#[derive(Debug)]
struct ControlSlot {
    word: Mutex<Option<Control>>,
    senders: std::sync::atomic::AtomicUsize,
    closed: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Debug)]
pub(crate) struct ControlTx(Arc<ControlSlot>);

impl ControlTx {
    pub(crate) fn send(&self, word: Control) {
        {
            let mut w = lock(&self.0.word);
            let keep = matches!(
                (&*w, &word),
                (Some(Control::Kill), _) | (Some(Control::Move(_)), Control::Return)
            );
            if !keep {
                *w = Some(word);
            }
        }
        // The word is in the slot before the wake: a task polled after it finds the word.
        self.0.waker.wake();
    }
}

impl Clone for ControlTx {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::AcqRel);
        ControlTx(self.0.clone())
    }
}

impl Drop for ControlTx {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.store(true, Ordering::Release);
            self.0.waker.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) struct ControlRx(Arc<ControlSlot>);

/// Why [`ControlRx::try_recv`] has no word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoWord {
    Empty,
    /// Every sender is gone.
    Closed,
}

impl ControlRx {
    /// The next word, or `None` once every sender is gone. Cancel-safe: a word is taken only
    /// when returned.
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Option<Control> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`ControlRx::recv`] as a poll: registers the task's waker before looking, so a word sent
    /// in between wakes it.
    pub(crate) fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Control>> {
        self.0.waker.register(cx.waker());
        match self.try_recv() {
            Ok(word) => Poll::Ready(Some(word)),
            Err(NoWord::Closed) => Poll::Ready(None),
            Err(NoWord::Empty) => Poll::Pending,
        }
    }

    pub(crate) fn try_recv(&mut self) -> Result<Control, NoWord> {
        if let Some(word) = lock(&self.0.word).take() {
            return Ok(word);
        }
        if self.0.closed.load(Ordering::Acquire) {
            return Err(NoWord::Closed);
        }
        Err(NoWord::Empty)
    }
}

/// A connected listener, as `/admin/listclients` shows it.
#[derive(Debug, Clone)]
pub(crate) struct ListenerEntry {
    pub id: u64,
    pub ip: IpAddr,
    pub user_agent: String,
    pub connected_at: Instant,
    pub control: ControlTx,
    /// A relay edge pulling the mount, not a listener (no limit of the group, no usage).
    pub relay: bool,
    /// Since when this listener's time on the mount is not yet in its usage.
    pub since: Instant,
    /// The group limit this listener holds a place in.
    pub group: Option<Arc<crate::usage::Group>>,
}

/// Why a listener was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The mount's own `max_listeners`.
    MountFull,
    /// The mount's listener group (the station's share on this node).
    GroupFull,
    /// The mount is being removed.
    Removed,
}

#[derive(Debug)]
pub(crate) struct Mount {
    pub path: String,
    config: RwLock<MountConfig>,
    session: RwLock<Option<Arc<Session>>>,
    /// Bumped whenever a source connects or leaves, for the mount's HLS packer. (Listeners
    /// are told by their control lines: a receiver each would cost them memory.)
    pub generation: watch::Sender<u64>,
    pub listeners: Mutex<HashMap<u64, ListenerEntry>>,
    pub counters: Counters,
    pub removed: AtomicBool,
    pub usage: Arc<crate::usage::UsageCell>,
    group: RwLock<Option<Arc<crate::usage::Group>>>,
}

impl Mount {
    pub(crate) fn new(
        config: MountConfig,
        counters: Counters,
        usage: Arc<crate::usage::UsageCell>,
        group: Option<Arc<crate::usage::Group>>,
    ) -> Mount {
        Mount {
            usage,
            group: RwLock::new(group),
            path: config.path.clone(),
            config: RwLock::new(config),
            session: RwLock::new(None),
            generation: watch::channel(0).0,
            listeners: Mutex::new(HashMap::new()),
            counters,
            removed: AtomicBool::new(false),
        }
    }

    pub(crate) fn config(&self) -> MountConfig {
        self.config
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    pub(crate) fn set_group(&self, g: Option<Arc<crate::usage::Group>>) {
        match self.group.write() {
            Ok(mut slot) => *slot = g,
            Err(p) => *p.into_inner() = g,
        }
    }

    fn group(&self) -> Option<Arc<crate::usage::Group>> {
        self.group
            .read()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Whether `key` (an `X-Onda-Relay` header) is this mount's relay key.
    pub(crate) fn is_relay_key(&self, key: &str) -> bool {
        self.config()
            .relay_key
            .as_deref()
            .is_some_and(|k| !k.is_empty() && crate::constant_time_eq(k.as_bytes(), key.as_bytes()))
    }

    pub(crate) fn set_config(&self, c: MountConfig) {
        match self.config.write() {
            Ok(mut g) => *g = c,
            Err(p) => *p.into_inner() = c,
        }
    }

    /// The live session, if a source is connected.
    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        let s = self
            .session
            .read()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone());
        s.filter(|s| !s.is_closed())
    }

    /// Installs a new session unless one is live; returns false if the mount is taken.
    pub(crate) fn attach(&self, session: Arc<Session>) -> bool {
        let mut slot = match self.session.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if slot.as_ref().is_some_and(|s| !s.is_closed()) || self.removed.load(Ordering::Acquire) {
            return false;
        }
        let since = session
            .connected_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        *slot = Some(session);
        drop(slot);
        self.counters.source_connected.set(1);
        self.counters.source_since.set(since);
        self.generation.send_modify(|g| *g += 1);
        // Listeners that heard a fallback while this mount had no source come back.
        self.tell_listeners(&Control::Return);
        true
    }

    /// Sends `word` down the control line of every listener registered here.
    pub(crate) fn tell_listeners(&self, word: &Control) {
        for l in lock(&self.listeners).values() {
            l.control.send(word.clone());
        }
    }

    /// Ends a session (if it is still the mount's); its listeners see it closed.
    pub(crate) fn detach(&self, session: &Arc<Session>) {
        session.close();
        let mut slot = match self.session.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *slot = None;
            self.counters.source_connected.set(0);
            self.counters.source_since.set(0);
        }
        drop(slot);
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn listener_count(&self) -> u64 {
        u64::try_from(self.counters.listeners.get()).unwrap_or(0)
    }

    /// Registers a listener, unless `max_listeners` or the group's limit is reached.
    pub(crate) fn add_listener(&self, mut entry: ListenerEntry) -> Result<(), Refused> {
        let max = self.config().max_listeners;
        let mut table = lock(&self.listeners);
        if self.removed.load(Ordering::Acquire) {
            return Err(Refused::Removed);
        }
        // Relay edges pulling the mount take no listener's place (they are how a full origin
        // scales out); relays are few, so they are counted only when the table looks full.
        if !entry.relay
            && max.is_some_and(|m| {
                table.len() as u64 >= m && table.values().filter(|e| !e.relay).count() as u64 >= m
            })
        {
            self.counters.refused_full.inc();
            return Err(Refused::MountFull);
        }
        entry.group = None;
        if !entry.relay
            && let Some(g) = self.group()
        {
            if !g.try_acquire() {
                self.counters.refused_full.inc();
                return Err(Refused::GroupFull);
            }
            entry.group = Some(g);
        }
        entry.since = Instant::now();
        if !entry.relay {
            self.usage.admit();
        }
        table.insert(entry.id, entry);
        let n = i64::try_from(table.len()).unwrap_or(i64::MAX);
        self.counters.listeners.set(n);
        if n > self.counters.peak.get() {
            self.counters.peak.set(n);
        }
        drop(table);
        self.counters.connections.inc();
        Ok(())
    }

    pub(crate) fn remove_listener(&self, id: u64) -> Option<ListenerEntry> {
        self.remove_listener_at(id, Instant::now())
    }

    /// Removes a listener whose listening ended at `end` (an HLS session, noticed gone after
    /// its timeout): its time counts up to `end`.
    pub(crate) fn remove_listener_at(&self, id: u64, end: Instant) -> Option<ListenerEntry> {
        let mut table = lock(&self.listeners);
        let e = table.remove(&id);
        if let Some(e) = &e {
            if let Some(g) = &e.group {
                g.release();
            }
            if !e.relay {
                self.usage.leave(end.saturating_duration_since(e.since));
            }
        }
        self.counters
            .listeners
            .set(i64::try_from(table.len()).unwrap_or(i64::MAX));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(r: Read) -> Vec<u8> {
        match r {
            Read::Data(v) => v.concat(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn listeners_read_from_their_offset() {
        let s = Session::new(SourceInfo::default(), 4, 100, 0);
        s.push(Bytes::from_static(b"abc"));
        s.push(Bytes::from_static(b"def"));
        let mut a = s.burst_start(4);
        assert_eq!(a, 2, "exactly the burst back");
        assert_eq!(data(s.read(&mut a)), b"cdef");
        assert_eq!(s.burst_start(100), 0, "never before the oldest byte");
        assert!(matches!(s.read(&mut a), Read::Pending));
        let mut b = 4;
        assert_eq!(
            data(s.read(&mut b)),
            b"ef",
            "mid-chunk offsets slice without copying"
        );
        s.push(Bytes::from_static(b"g"));
        assert_eq!(data(s.read(&mut a)), b"g");
        s.close();
        assert!(matches!(s.read(&mut a), Read::Ended));
        let mut late = 0;
        assert_eq!(
            data(s.read(&mut late)),
            b"abcdefg",
            "a closed session still drains"
        );
    }

    #[test]
    fn slow_listener_lags_out_and_memory_stays_bounded() {
        let s = Session::new(SourceInfo::default(), 10, 50, 0);
        let mut slow = 0;
        let mut fast = 0;
        for _ in 0..100 {
            s.push(Bytes::from_static(b"0123456789"));
            assert!(matches!(s.read(&mut fast), Read::Data(_)));
        }
        assert!(matches!(s.read(&mut slow), Read::Lagged));
        let kept: usize = lock(&s.ring).chunks.iter().map(|(_, c)| c.len()).sum();
        assert!(
            kept <= 60,
            "ring keeps about queue_bytes, not everything: {kept}"
        );
        let mut fresh = s.burst_start(10);
        assert_eq!(data(s.read(&mut fresh)).len(), 10);
    }

    /// An Ogg page of `serial` holding one packet.
    fn page(serial: u32, bos: bool, granule: u64, packet: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0".to_vec();
        p.push(if bos { 2 } else { 0 });
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        p.push(1);
        p.push(u8::try_from(packet.len()).expect("small"));
        p.extend_from_slice(packet);
        p
    }

    #[test]
    fn an_ogg_listener_gets_the_headers_of_the_chained_stream_it_starts_in() {
        let info = SourceInfo {
            content_type: "application/ogg".into(),
            ..SourceInfo::default()
        };
        let s = Session::new(info, 0, 1 << 20, 0);
        let link = |serial: u32| {
            let head = [
                page(serial, true, 0, b"OpusHead-0123456789"),
                page(serial, false, 0, b"OpusTags\x04\0\0\0test\0\0\0\0"),
            ]
            .concat();
            let audio: Vec<u8> = (1..6)
                .flat_map(|g| page(serial, false, g * 960, &[0x42; 100]))
                .collect();
            (head, audio)
        };
        let (head1, audio1) = link(1);
        let (head2, audio2) = link(2);
        s.push(Bytes::from([head1.clone(), audio1.clone()].concat()));
        s.push(Bytes::from(head2.clone()));
        s.push(Bytes::from(audio2[..127].to_vec()));
        // A burst reaching back into the first stream: its headers, then its audio, from a
        // page boundary; the second stream's headers follow in the stream itself.
        let (pos, prefix) = s.listener_start(400);
        assert_eq!(prefix.as_deref(), Some(&head1[..]));
        assert!(pos > head1.len() as u64 && pos < (head1.len() + audio1.len()) as u64);
        assert_eq!((pos - head1.len() as u64) % 128, 0, "on a page boundary");
        // A burst starting in the second stream gets the second stream's headers.
        let (pos, prefix) = s.listener_start(10);
        assert_eq!(prefix.as_deref(), Some(&head2[..]));
        assert_eq!(pos, (head1.len() + audio1.len() + head2.len()) as u64);
    }

    #[tokio::test]
    async fn a_control_line_keeps_a_kill_and_a_move_and_closes_with_its_last_sender() {
        let (tx, mut rx) = control_line();
        assert_eq!(rx.try_recv().err(), Some(NoWord::Empty));
        tx.send(Control::Move("/a".into()));
        tx.send(Control::Move("/b".into()));
        assert!(
            matches!(rx.recv().await, Some(Control::Move(d)) if d == "/b"),
            "the last word"
        );
        tx.send(Control::Return);
        tx.send(Control::Move("/b".into()));
        tx.send(Control::Return);
        assert!(
            matches!(rx.recv().await, Some(Control::Move(d)) if d == "/b"),
            "a return does not replace a move"
        );
        tx.send(Control::Return);
        assert!(matches!(rx.recv().await, Some(Control::Return)));
        // A word sent while the task waits wakes it.
        let (tx2, mut rx2) = control_line();
        let waiting = tokio::spawn(async move { rx2.recv().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it waits for a word");
        tx2.send(Control::Return);
        assert!(matches!(
            waiting.await.expect("task"),
            Some(Control::Return)
        ));
        tx.send(Control::Kill);
        tx.send(Control::Move("/c".into()));
        tx.send(Control::Return);
        assert!(
            matches!(rx.recv().await, Some(Control::Kill)),
            "a kill stays"
        );
        let other = tx.clone();
        drop(tx);
        assert_eq!(rx.try_recv().err(), Some(NoWord::Empty), "a sender is left");
        let waiting = tokio::spawn(async move { rx.recv().await.is_none() });
        drop(other);
        assert!(waiting.await.expect("task"), "closed with the last sender");
    }

    /// The source's last flush can land after the close: a reader told there is news gets it
    /// and then `Ended`, never `Pending` (which would make it ask again at once, forever).
    #[test]
    fn a_closed_session_reads_to_its_end_then_ends() {
        let s = Session::new(SourceInfo::default(), 0, 1 << 20, 1 << 20);
        s.push(Bytes::from_static(b"first"));
        s.publish();
        let mut pos = 0;
        assert!(matches!(s.read(&mut pos), Read::Data(_)));
        s.push(Bytes::from_static(b"batched"));
        s.close();
        s.push(Bytes::from_static(b"late"));
        assert!(s.has_news(pos));
        let Read::Data(chunks) = s.read(&mut pos) else {
            panic!("the rest is readable");
        };
        let rest: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(rest, b"batchedlate");
        assert!(matches!(s.read(&mut pos), Read::Ended));
    }

    #[test]
    fn a_new_session_publishes_its_first_burst_at_once_then_batches() {
        let s = Session::new(SourceInfo::default(), 6, 1000, 100);
        let mut pos = 0;
        s.push(Bytes::from_static(b"abc"));
        assert_eq!(data(s.read(&mut pos)), b"abc", "within the first burst");
        s.push(Bytes::from_static(b"def"));
        assert_eq!(data(s.read(&mut pos)), b"def", "up to the burst's end");
        s.push(Bytes::from_static(b"g"));
        assert!(
            matches!(s.read(&mut pos), Read::Pending),
            "past the first burst: batched again"
        );
    }

    #[test]
    fn batched_sessions_publish_at_the_threshold_or_on_demand() {
        let s = Session::new(SourceInfo::default(), 0, 1000, 10);
        s.push(Bytes::from_static(b"abcd"));
        let mut pos = 0;
        assert!(
            matches!(s.read(&mut pos), Read::Pending),
            "below the batch: not yet visible"
        );
        s.push(Bytes::from_static(b"efghijk"));
        assert_eq!(
            data(s.read(&mut pos)),
            b"abcdefghijk",
            "11 >= 10 bytes: published"
        );
        s.push(Bytes::from_static(b"lm"));
        assert!(matches!(s.read(&mut pos), Read::Pending));
        s.publish();
        assert_eq!(data(s.read(&mut pos)), b"lm");
        s.push(Bytes::from_static(b"n"));
        s.close();
        assert_eq!(data(s.read(&mut pos)), b"n", "closing publishes the tail");
        assert!(matches!(s.read(&mut pos), Read::Ended));
    }

    #[tokio::test]
    async fn wait_wakes_on_push_and_close() {
        let s = Arc::new(Session::new(SourceInfo::default(), 0, 100, 0));
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.wait(0).await });
        tokio::task::yield_now().await;
        s.push(Bytes::from_static(b"x"));
        waiter.await.expect("woken by push");
        let s3 = s.clone();
        let waiter = tokio::spawn(async move { s3.wait(1).await });
        tokio::task::yield_now().await;
        s.close();
        waiter.await.expect("woken by close");
    }

    #[test]
    fn attach_is_exclusive_until_detached() {
        let m = Mount::new(
            MountConfig {
                max_listeners: Some(1),
                ..MountConfig::new("/m", "p")
            },
            Counters::detached(),
            Arc::default(),
            None,
        );
        let a = Arc::new(Session::new(SourceInfo::default(), 0, 10, 0));
        let b = Arc::new(Session::new(SourceInfo::default(), 0, 10, 0));
        assert!(m.attach(a.clone()));
        assert!(!m.attach(b.clone()));
        m.detach(&a);
        assert!(m.session().is_none());
        assert!(m.attach(b));
        let (tx, _rx) = control_line();
        let entry = |id| ListenerEntry {
            id,
            ip: IpAddr::from([127, 0, 0, 1]),
            user_agent: String::new(),
            connected_at: Instant::now(),
            control: tx.clone(),
            relay: false,
            since: Instant::now(),
            group: None,
        };
        assert!(m.add_listener(entry(1)).is_ok());
        assert_eq!(
            m.add_listener(entry(2)),
            Err(Refused::MountFull),
            "max_listeners = 1"
        );
        m.remove_listener(1);
        assert!(m.add_listener(entry(3)).is_ok());
        assert_eq!(m.counters.peak.get(), 1);
        // A group shared with another mount limits both together; relays pass.
        let g = Arc::new(crate::usage::Group::new(1));
        let other = Mount::new(
            MountConfig::new("/n", "p"),
            Counters::detached(),
            Arc::default(),
            Some(g.clone()),
        );
        m.set_group(Some(g.clone()));
        m.remove_listener(3);
        assert!(other.add_listener(entry(4)).is_ok());
        assert_eq!(m.add_listener(entry(5)), Err(Refused::GroupFull));
        assert!(
            m.add_listener(ListenerEntry {
                relay: true,
                ..entry(6)
            })
            .is_ok()
        );
        other.remove_listener(4);
        assert!(m.add_listener(entry(7)).is_ok());
        assert_eq!(g.count(), 1);
    }
}
