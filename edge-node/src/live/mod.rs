//! Live video: publishers push H.264 + AAC over RTMP with a stream key (`rtmp`), the edge remuxes
//! it without re-encoding into MPEG-TS segments (`hls`, `ts`, `flv`), and viewers play
//! `/hls/{name}/index.m3u8`. The part in progress is in memory; each completed part is written
//! to its segment's file (`store`) and read from there once written.
//!
//! Invariants: a stream has at most one publisher, and only a connection that presented the
//! stream's current key; changing a stream's key or removing the stream ends its publisher.
//! A stream's renditions ([`Live`] names them `{stream}/{rendition}`) are fed only by its
//! transcoder, never by an RTMP publish; they use their stream's admission, viewers and
//! counters, and count as streams of their own neither in the publishing gauge nor in
//! [`crate::Edge::live_stats`].

pub(crate) mod flv;
pub(crate) mod hls;
pub(crate) mod pull;
pub(crate) mod rtmp;
pub(crate) mod store;
pub(crate) mod transcode;
mod ts;
pub(crate) mod viewers;

use crate::config::{EdgeConfig, RenditionConfig};
use crate::http::{Answer, Request, reply};
use crate::metrics::{EdgeMetrics, LiveCounters};
use crate::sync::lock;
use bytes::Bytes;
use hls::{Media, Piece, Segmenter};
use onda_shared::playback::{self, TokenError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio_util::sync::CancellationToken;

/// Every live stream of the node, by name; a stream's renditions are streams named
/// `{stream}/{rendition}`.
pub(crate) struct Live {
    streams: Mutex<HashMap<String, Arc<LiveStream>>>,
    /// Connection ids of the renditions' publishes (from the top, apart from RTMP's).
    next_local: std::sync::atomic::AtomicU64,
    /// Where segments' files go; without it every part stays in memory.
    store: Option<store::Store>,
}

/// A stream the configuration asks for: a configured one or one of its renditions.
struct Wanted<'a> {
    name: String,
    key: String,
    playback_secret: Option<&'a String>,
    origin_url: Option<&'a url::Url>,
    parent: Option<&'a str>,
    renditions: &'a [RenditionConfig],
}

fn wanted(config: &EdgeConfig) -> Vec<Wanted<'_>> {
    let mut out = Vec::new();
    for c in &config.live_streams {
        out.push(Wanted {
            name: c.name.clone(),
            key: c.key.clone(),
            playback_secret: c.playback_secret.as_ref(),
            origin_url: c.origin_url.as_ref(),
            parent: None,
            // A relay's copy is the source only.
            renditions: if c.origin_url.is_some() {
                &[]
            } else {
                &c.renditions
            },
        });
        if c.origin_url.is_some() {
            continue;
        }
        for r in &c.renditions {
            out.push(Wanted {
                name: format!("{}/{}", c.name, r.name),
                // Set per publish by start_renditions; until then nothing can claim it.
                key: transcode::unusable_key(),
                playback_secret: None,
                origin_url: None,
                parent: Some(&c.name),
                renditions: &[],
            });
        }
    }
    out
}

pub(crate) struct LiveStream {
    /// Itself, for the segment writer to report back to.
    me: Weak<LiveStream>,
    /// Its segments' files.
    files: Option<store::Files>,
    pub name: String,
    /// A rendition's stream: the stream it is made from, whose admission, viewers and
    /// traffic counters it uses.
    pub parent: Option<String>,
    pub counters: LiveCounters,
    pub viewers: viewers::Viewers,
    state: Mutex<State>,
    /// Bumped whenever a part or segment completes or the playlist ends, for the requests
    /// that wait for one (blocking playlist reloads, preload hints).
    progress: tokio::sync::watch::Sender<u64>,
}

struct State {
    key: String,
    /// What a relay edge presents to be served without a token and not counted as a viewer.
    relay_key: String,
    /// Relays: the origin edge this copy is pulled from, and the task pulling it.
    origin: Option<(url::Url, CancellationToken)>,
    /// Relays: the origin's playlist had segments and had not ended at the last poll.
    pulled: bool,
    /// Playback tokens are required when set.
    playback_secret: Option<String>,
    segment_ms: u64,
    part_ms: u64,
    window: usize,
    segmenter: Segmenter,
    /// The connection publishing now.
    publisher: Option<u64>,
    /// The ABR ladder made while the stream is published, and the ffmpeg making it.
    renditions: Vec<RenditionConfig>,
    transcoder: Option<transcode::Transcoder>,
    /// Cancelled to end the current publisher (its key was changed, the stream removed).
    kick: CancellationToken,
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownKey,
    AlreadyLive,
    /// This node relays the stream from its origin; publishers go to the origin.
    NotOrigin,
}

/// The key relay edges present for a stream (derived from its stream key, which every carrier
/// of the stream knows).
pub(crate) fn relay_key(stream_key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        format!("onda-live-relay\0{stream_key}").as_bytes(),
    ))
}

fn start_pull(
    stream: &Arc<LiveStream>,
    origin: &url::Url,
    key: &str,
    poll_ms: u64,
) -> CancellationToken {
    let stop = CancellationToken::new();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(pull::run(
            stream.clone(),
            origin.clone(),
            relay_key(key),
            std::time::Duration::from_millis((poll_ms / 2).max(250)),
            stop.clone(),
        ));
    }
    stop
}

impl Live {
    /// Makes the configured streams current: new ones appear, removed ones and ones whose key
    /// changed lose their publisher; segments of unchanged streams are kept.
    pub(crate) fn sync(&self, config: &EdgeConfig, metrics: &EdgeMetrics) {
        let wanted = wanted(config);
        let mut streams = lock(&self.streams);
        streams.retain(|name, s| {
            let keep = wanted.iter().any(|c| &c.name == name);
            if !keep {
                let st = lock(&s.state);
                st.kick.cancel();
                if let Some((_, stop)) = &st.origin {
                    stop.cancel();
                }
                metrics.forget_live(name);
            }
            keep
        });
        let (segment_ms, part_ms, window) = (
            config.hls.segment_ms,
            config.hls.part_ms,
            usize::try_from(config.hls.window).unwrap_or(6),
        );
        for c in &wanted {
            match streams.get(&c.name) {
                Some(s) => {
                    let mut st = lock(&s.state);
                    // A rendition's key is its publish's own (start_renditions).
                    if c.parent.is_none() && st.key != c.key {
                        st.key = c.key.clone();
                        st.relay_key = relay_key(&c.key);
                        st.kick.cancel();
                        st.kick = CancellationToken::new();
                    }
                    let same_origin = st.origin.as_ref().map(|(o, _)| o) == c.origin_url;
                    if !same_origin {
                        // Origin and relay swap roles when the stream moves.
                        if let Some((_, stop)) = st.origin.take() {
                            stop.cancel();
                        }
                        st.pulled = false;
                        if let Some(o) = c.origin_url {
                            st.kick.cancel();
                            st.kick = CancellationToken::new();
                            let stop = start_pull(s, o, &c.key, segment_ms);
                            st.origin = Some((o.clone(), stop));
                        }
                    }
                    st.playback_secret = c.playback_secret.cloned();
                    // New HLS settings and ladders apply from the next publish.
                    st.renditions = c.renditions.to_vec();
                    st.segment_ms = segment_ms;
                    st.part_ms = part_ms;
                    st.window = window;
                }
                None => {
                    let stream = Arc::new_cyclic(|me| LiveStream {
                        me: me.clone(),
                        files: self.store.as_ref().map(store::Store::stream),
                        name: c.name.clone(),
                        parent: c.parent.map(str::to_string),
                        counters: metrics.live_counters(&c.name),
                        viewers: viewers::Viewers::new(std::time::Duration::from_millis(
                            config.hls.viewer_timeout_ms,
                        )),
                        state: Mutex::new(State {
                            key: c.key.clone(),
                            relay_key: relay_key(&c.key),
                            origin: None,
                            pulled: false,
                            playback_secret: c.playback_secret.cloned(),
                            segment_ms,
                            part_ms,
                            window,
                            segmenter: Segmenter::new(segment_ms, part_ms, window),
                            publisher: None,
                            renditions: c.renditions.to_vec(),
                            transcoder: None,
                            kick: CancellationToken::new(),
                        }),
                        progress: tokio::sync::watch::Sender::new(0),
                    });
                    if let Some(o) = c.origin_url {
                        let stop = start_pull(&stream, o, &c.key, segment_ms);
                        lock(&stream.state).origin = Some((o.clone(), stop));
                    }
                    streams.insert(c.name.clone(), stream);
                }
            }
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<LiveStream>> {
        lock(&self.streams).get(name).cloned()
    }

    /// Starts the renditions of `stream`, just claimed by a publisher, if it has any: one
    /// ffmpeg makes them all, and each rendition is claimed for this publish only (an older
    /// publish of it is cut off) and fed from ffmpeg's output, numbered on from the source.
    pub(crate) fn start_renditions(&self, stream: &LiveStream) {
        let (renditions, next_seq) = {
            let st = lock(&stream.state);
            if st.renditions.is_empty() || st.publisher.is_none() {
                return;
            }
            (st.renditions.clone(), st.segmenter.next_seq())
        };
        let mut rungs = Vec::new();
        for r in &renditions {
            let Some(child) = self.get(&format!("{}/{}", stream.name, r.name)) else {
                continue;
            };
            let key = transcode::unusable_key();
            let mut cs = lock(&child.state);
            cs.key = key.clone();
            cs.kick.cancel();
            cs.kick = CancellationToken::new();
            cs.segmenter.continue_from(next_seq);
            drop(cs);
            rungs.push((r.clone(), child, key));
        }
        let configs: Vec<RenditionConfig> = rungs.iter().map(|(r, _, _)| r.clone()).collect();
        let (transcoder, outputs) = match transcode::Transcoder::start(&stream.name, &configs) {
            Ok(t) => t,
            Err(e) => return tracing::error!(stream = %stream.name, "renditions not made: {e}"),
        };
        lock(&stream.state).transcoder = Some(transcoder);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for ((_, child, key), output) in rungs.into_iter().zip(outputs) {
            let conn = self
                .next_local
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            rt.spawn(feed_rendition(child, key, conn, output));
        }
    }

    /// The publisher of `stream` left: its renditions' publishes end with it (their keys
    /// become unusable), so a quick republish starts a new ladder at once.
    pub(crate) fn end_renditions(&self, stream: &LiveStream) {
        let renditions = lock(&stream.state).renditions.clone();
        for r in &renditions {
            if let Some(child) = self.get(&format!("{}/{}", stream.name, r.name)) {
                let mut cs = lock(&child.state);
                cs.key = transcode::unusable_key();
                cs.kick.cancel();
                cs.kick = CancellationToken::new();
            }
        }
    }

    /// The master playlist of `stream`: the source and each rendition that plays now, with
    /// their peak bitrates over the window and codecs. None while the source does not play.
    pub(crate) fn master(&self, stream: &LiveStream, query: &str) -> Option<String> {
        let (source, renditions) = {
            let st = lock(&stream.state);
            (st.segmenter.variant()?, st.renditions.clone())
        };
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        let mut add = |v: &hls::Variant, uri: &str| {
            out.push_str(&format!("#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth));
            if let Some(c) = &v.codecs {
                out.push_str(&format!(",CODECS=\"{c}\""));
            }
            out.push_str(&format!("\n{uri}{query}\n"));
        };
        add(&source, "index.m3u8");
        // While the source is live, only the renditions being made now.
        let source_live = stream.is_live();
        for r in &renditions {
            let Some(child) = self.get(&format!("{}/{}", stream.name, r.name)) else {
                continue;
            };
            if source_live && !child.is_live() {
                continue;
            }
            let v = lock(&child.state).segmenter.variant();
            if let Some(v) = v {
                add(&v, &format!("{}/index.m3u8", r.name));
            }
        }
        Some(out)
    }

    /// The stream whose key this is; every key is compared in constant time.
    pub(crate) fn by_key(&self, key: &str) -> Option<Arc<LiveStream>> {
        let streams = lock(&self.streams);
        let mut found = None;
        for s in streams.values() {
            if crate::constant_time_eq(lock(&s.state).key.as_bytes(), key.as_bytes()) {
                found = Some(s.clone());
            }
        }
        found
    }

    /// Sets each stream's viewers gauge to the sessions active now.
    pub(crate) fn refresh_viewers(&self) {
        let now = std::time::Instant::now();
        for s in lock(&self.streams).values() {
            s.counters
                .viewers
                .set(i64::try_from(s.viewers.current(now)).unwrap_or(i64::MAX));
        }
    }

    /// What each stream's viewers used since the previous call, as usage of the edge path
    /// `/hls/{name}` (streams with nothing to report left out).
    pub(crate) fn take_usage(&self) -> Vec<crate::usage::MountUsage> {
        let now = std::time::Instant::now();
        let mut out: Vec<crate::usage::MountUsage> = lock(&self.streams)
            .values()
            .map(|s| {
                let u = s.viewers.take(now);
                crate::usage::MountUsage {
                    path: format!("/hls/{}", s.name),
                    listener_ms: u.viewer_ms,
                    peak_listeners: u.peak,
                    sessions: u.sessions,
                    bytes_sent: u.bytes,
                }
            })
            .filter(|u| !u.is_empty())
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Every stream, by name.
    pub(crate) fn streams(&self) -> Vec<Arc<LiveStream>> {
        let mut v: Vec<_> = lock(&self.streams).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

impl Live {
    /// Live streams whose completed parts go to `store` (or stay in memory without one).
    pub(crate) fn new(store: Option<store::Store>) -> Live {
        Live {
            streams: Mutex::default(),
            next_local: std::sync::atomic::AtomicU64::new(u64::MAX),
            store,
        }
    }
}

/// Publishes one rendition from ffmpeg's FLV output until its publish is ended (the source's
/// publisher left, the stream changed or went away) or ffmpeg's output ends (ffmpeg exited).
async fn feed_rendition(
    child: Arc<LiveStream>,
    key: String,
    conn: u64,
    mut output: transcode::Output,
) {
    /// Releases the rendition however the feeding ends.
    struct Claimed(Arc<LiveStream>, u64);
    impl Drop for Claimed {
        fn drop(&mut self) {
            self.0.release(self.1);
        }
    }
    let Ok(kick) = child.claim(conn, &key) else {
        return;
    };
    let claimed = Claimed(child, conn);
    let feed = async {
        output.header().await?;
        loop {
            let tag = output.tag().await?;
            if let Err(e) = claimed.0.media(conn, tag.kind, tag.ms, &tag.body) {
                tracing::debug!(stream = %claimed.0.name, "rendition tag skipped: {e}");
            }
        }
    };
    let ended: std::io::Result<()> = tokio::select! {
        () = kick.cancelled() => Ok(()),
        r = feed => r,
    };
    if let Err(e) = ended {
        tracing::warn!(stream = %claimed.0.name, "rendition output ended: {e}");
    }
}

impl LiveStream {
    /// Makes connection `conn` the publisher if it presents the current key and nobody else
    /// publishes; returns the token that ends it.
    pub(crate) fn claim(&self, conn: u64, key: &str) -> Result<CancellationToken, Refusal> {
        let mut st = lock(&self.state);
        if !crate::constant_time_eq(st.key.as_bytes(), key.as_bytes()) {
            return Err(Refusal::UnknownKey);
        }
        if st.origin.is_some() {
            return Err(Refusal::NotOrigin);
        }
        if st.publisher.is_some() {
            return Err(Refusal::AlreadyLive);
        }
        st.publisher = Some(conn);
        if st.kick.is_cancelled() {
            st.kick = CancellationToken::new();
        }
        let (ms, part_ms, window) = (st.segment_ms, st.part_ms, st.window);
        st.segmenter.restart();
        if st.segmenter.target() != ms
            || st.segmenter.part_target() != part_ms
            || st.segmenter.window() != window
        {
            let old = std::mem::replace(&mut st.segmenter, Segmenter::new(ms, part_ms, window));
            st.segmenter = Segmenter::replacing(old, ms, part_ms, window);
        }
        self.store_parts(&mut st);
        if self.parent.is_none() {
            self.counters.publishing.set(1);
        }
        Ok(st.kick.clone())
    }

    /// The publisher `conn` left: the playlist ends.
    pub(crate) fn release(&self, conn: u64) {
        let mut st = lock(&self.state);
        if st.publisher == Some(conn) {
            st.publisher = None;
            // Its ffmpeg's input ends: the renditions end too.
            st.transcoder = None;
            st.segmenter.end();
            self.store_parts(&mut st);
            if self.parent.is_none() {
                self.counters.publishing.set(0);
            }
            drop(st);
            self.progressed();
        }
    }

    fn progressed(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until `ready` says the segmenter holds what a request asks for, or `timeout`.
    async fn wait_for(
        &self,
        timeout: std::time::Duration,
        ready: impl Fn(&Segmenter) -> hls::Ready,
    ) -> hls::Ready {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Subscribed before looking, so a completion in between is not missed.
            let mut rx = self.progress.subscribe();
            let r = ready(&lock(&self.state).segmenter);
            if r != hls::Ready::Later {
                return r;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return hls::Ready::Later,
            }
        }
    }

    /// A publisher streams into it, or (a relay's copy) the origin's playlist goes on.
    pub(crate) fn is_live(&self) -> bool {
        let st = lock(&self.state);
        st.publisher.is_some() || st.pulled
    }

    /// Whether a request presenting `header` as the relay header comes from a relay edge.
    pub(crate) fn is_relay(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| {
            crate::constant_time_eq(h.as_bytes(), lock(&self.state).relay_key.as_bytes())
        })
    }

    fn push_segment(&self, segment: hls::Segment) {
        let mut st = lock(&self.state);
        // A pull still under way when the stream stopped being a relay's copy.
        if st.origin.is_none() || st.publisher.is_some() {
            return;
        }
        st.segmenter.push(segment);
        self.store_parts(&mut st);
        drop(st);
        self.counters.segments.inc();
        self.progressed();
    }

    fn last_seq(&self) -> Option<u64> {
        lock(&self.state).segmenter.last_seq()
    }

    fn set_ended(&self, ended: bool) {
        let mut st = lock(&self.state);
        if st.segmenter.ended() != ended {
            st.segmenter.set_ended(ended);
            drop(st);
            self.progressed();
        }
    }

    fn set_pulled(&self, pulled: bool) {
        lock(&self.state).pulled = pulled;
        self.counters.publishing.set(i64::from(pulled));
    }

    /// Feeds a tag of the publisher `conn` (anyone else's is ignored).
    pub(crate) fn media(
        &self,
        conn: u64,
        kind: flv::TagKind,
        ms: u32,
        tag: &Bytes,
    ) -> Result<(), flv::FlvError> {
        self.counters.ingest_bytes.inc_by(tag.len() as u64);
        let mut st = lock(&self.state);
        if st.publisher != Some(conn) {
            return Ok(());
        }
        if let Some(t) = st.transcoder.as_mut() {
            t.send(kind, ms, tag);
        }
        let cut = if kind == flv::TagKind::Video {
            st.segmenter.video(ms, tag)?
        } else {
            st.segmenter.audio(ms, tag)?
        };
        if cut.part || cut.segment {
            self.store_parts(&mut st);
        }
        drop(st);
        if cut.segment {
            self.counters.segments.inc();
        }
        if cut.part || cut.segment {
            self.progressed();
        }
        Ok(())
    }

    /// Checks a viewer's request: Ok with the query to carry into the playlist's URIs and the
    /// token's viewer id.
    pub(crate) fn admit(&self, query: &str, now_unix: u64) -> Result<(String, String), TokenError> {
        let secret = lock(&self.state).playback_secret.clone();
        let Some(secret) = secret else {
            return Ok((String::new(), String::new()));
        };
        let token = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let viewer = playback::verify(&secret, &self.name, &token, now_unix)?.to_string();
        // Only the token travels on: it is URL-safe as signed.
        Ok((format!("?token={token}"), viewer))
    }

    pub(crate) fn playlist(&self, query: &str) -> Option<String> {
        lock(&self.state).segmenter.playlist(query)
    }

    fn target_ms(&self) -> u64 {
        lock(&self.state).segmenter.target()
    }

    /// A part and its duration in milliseconds, once complete.
    pub(crate) async fn part(&self, seq: u64, idx: usize) -> std::io::Result<(Bytes, u64)> {
        let found = lock(&self.state).segmenter.part(seq, idx);
        self.bytes(found).await
    }

    /// A segment and its duration in milliseconds.
    pub(crate) async fn segment(&self, seq: u64) -> std::io::Result<(Bytes, u64)> {
        let found = lock(&self.state).segmenter.segment(seq);
        self.bytes(found).await
    }

    /// The bytes of what the segmenter found: from memory, read from the file, or both joined
    /// (NotFound when it found nothing, or the segment left the window and its file went
    /// meanwhile).
    async fn bytes(&self, found: Option<(Media, u64)>) -> std::io::Result<(Bytes, u64)> {
        let Some((media, ms)) = found else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        if let [Piece::Bytes(b)] = &media.pieces[..] {
            return Ok((b.clone(), ms));
        }
        let mut out = Vec::new();
        for piece in media.pieces {
            match (piece, &self.files) {
                (Piece::Bytes(b), _) => out.extend_from_slice(&b),
                (Piece::File(range), Some(files)) => {
                    out.extend_from_slice(&files.read(media.seq, range).await?);
                }
                (Piece::File(_), None) => return Err(std::io::ErrorKind::NotFound.into()),
            }
        }
        Ok((Bytes::from(out), ms))
    }

    /// Hands the parts completed since the last call to the writer, and has the files of the
    /// segments that left the window deleted.
    fn store_parts(&self, st: &mut State) {
        let Some(files) = &self.files else {
            return;
        };
        for seq in st.segmenter.take_evicted() {
            files.remove(seq);
        }
        for hls::ToStore { seq, at, data } in st.segmenter.to_store() {
            let me = self.me.clone();
            let queued = files.write(
                seq,
                at,
                data,
                Box::new(move |r| {
                    if let Some(s) = me.upgrade() {
                        s.written(seq, at, r);
                    }
                }),
            );
            if !queued {
                st.segmenter.store_failed(seq, at);
                self.counters.unstored.inc();
            }
        }
    }

    /// The writer's report on the bytes at `at` of segment `seq`'s file.
    fn written(&self, seq: u64, at: u64, r: std::io::Result<()>) {
        let mut st = lock(&self.state);
        match r {
            Ok(()) => {
                if !st.segmenter.stored(seq, at)
                    && let Some(files) = &self.files
                {
                    // The segment left the window while this was being written.
                    files.remove(seq);
                }
            }
            Err(e) => {
                st.segmenter.store_failed(seq, at);
                drop(st);
                self.counters.unstored.inc();
                tracing::warn!(stream = %self.name, "part of segment {seq} stays in memory: {e}");
            }
        }
    }
}

const NO_SEGMENT: &str = "No such segment (it may have left the playlist window)";

/// What a request under `/hls/{name}/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    /// `master.m3u8`: the source and its renditions.
    Master,
    Playlist,
    /// `{seq}.ts`
    Segment(u64),
    /// `{seq}.{part}.ts`
    Part(u64, usize),
}

fn parse_file(file: &str) -> Option<File> {
    match file {
        "index.m3u8" => return Some(File::Playlist),
        "master.m3u8" => return Some(File::Master),
        _ => {}
    }
    let stem = file.strip_suffix(".ts")?;
    match stem.split_once('.') {
        None => stem.parse().ok().map(File::Segment),
        Some((seq, part)) => Some(File::Part(seq.parse().ok()?, part.parse().ok()?)),
    }
}

/// A blocking playlist reload's `_HLS_msn` and `_HLS_part`, if asked for.
fn blocking_reload(query: &str) -> Result<Option<(u64, Option<u64>)>, String> {
    let (mut msn, mut part) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "_HLS_msn" => &mut msn,
            "_HLS_part" => &mut part,
            _ => continue,
        };
        *slot = Some(
            v.parse::<u64>()
                .map_err(|_| format!("{k}={v:?} is not a whole number"))?,
        );
    }
    match (msn, part) {
        (None, Some(_)) => Err("_HLS_part needs _HLS_msn".into()),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

/// A segment or part that could not be had: gone from the window (404), or its file unreadable
/// (500, logged).
async fn unreadable(req: &mut Request, stream: &LiveStream, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::NotFound {
        return plain(req, 404, NO_SEGMENT).await;
    }
    tracing::error!(stream = %stream.name, "cannot read a segment's file: {e}");
    plain(req, 500, "The segment's file could not be read").await;
}

async fn plain(req: &mut Request, status: u16, msg: &str) {
    let body = format!("{msg}\n");
    let answer = Answer {
        status,
        content_type: "text/plain",
        cache_control: "no-cache",
        headers: &[],
        body: body.as_bytes(),
        head_only: req.head.method == "HEAD",
    };
    let _ = reply(req, &answer).await;
}

/// `GET /hls/{name}/index.m3u8` (with `_HLS_msn`/`_HLS_part`: a blocking reload),
/// `GET /hls/{name}/{seq}.ts` and `GET /hls/{name}/{seq}.{part}.ts`.
pub(crate) async fn serve_hls(req: &mut Request, live: &Live) {
    let head_only = req.head.method == "HEAD";
    let path = req.head.path.clone();
    let rest = path.trim_start_matches("/hls/");
    let (name, file) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(owner) = live.get(name).filter(|s| s.parent.is_none()) else {
        return plain(req, 404, "No such live stream").await;
    };
    // `{rendition}/{file}`: a rendition's media, under its stream's admission and accounting.
    let (stream, file) = match file.split_once('/') {
        Some((r, f)) => match live.get(&format!("{name}/{r}")) {
            Some(s) => (s, f),
            None => return plain(req, 404, "No such rendition").await,
        },
        None => (owner.clone(), file),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Token streams: every playlist and segment request carries a valid token, which the
    // playlist passes on in its segment URIs.
    // A relay edge pulling the stream needs no token and is no viewer.
    let relay = owner.is_relay(req.head.header(pull::RELAY_HEADER));
    let admitted = if relay {
        Ok((String::new(), String::new()))
    } else {
        owner.admit(&req.head.query, now)
    };
    let (query, viewer) = match admitted {
        Ok(v) => v,
        Err(e) => return plain(req, 403, &e.to_string()).await,
    };
    let wait = std::time::Duration::from_millis(3 * stream.target_ms());
    let is_rendition = !Arc::ptr_eq(&stream, &owner);
    let (ctype, cache, body, media_ms) = match parse_file(file) {
        Some(File::Master) if !is_rendition => match live.master(&owner, &query) {
            Some(p) => (
                "application/vnd.apple.mpegurl",
                "no-cache",
                Bytes::from(p),
                0,
            ),
            None => return plain(req, 404, "The stream is not live yet").await,
        },
        Some(File::Playlist) => {
            match blocking_reload(&req.head.query) {
                Err(msg) => return plain(req, 400, &msg).await,
                Ok(None) => {}
                Ok(Some((msn, part))) => {
                    match stream.wait_for(wait, |s| s.ready(msn, part)).await {
                        hls::Ready::Now => {}
                        hls::Ready::TooFar => {
                            let msg = format!(
                                "_HLS_msn={msn} (_HLS_part={}) is too far ahead of the playlist \
                                 (more than two segments, or three parts)",
                                part.map_or("-".to_string(), |p| p.to_string())
                            );
                            return plain(req, 400, &msg).await;
                        }
                        hls::Ready::Later => {
                            let msg = format!("Segment {msn} did not come in time");
                            return plain(req, 503, &msg).await;
                        }
                    }
                }
            }
            match stream.playlist(&query) {
                // Live playlists change every part or segment.
                Some(p) => (
                    "application/vnd.apple.mpegurl",
                    "no-cache",
                    Bytes::from(p),
                    0,
                ),
                None => return plain(req, 404, "The stream is not live yet").await,
            }
        }
        Some(File::Segment(seq)) => match stream.segment(seq).await {
            // A segment never changes once listed.
            Ok((seg, duration_ms)) => ("video/mp2t", "max-age=3600", seg, duration_ms),
            Err(e) => return unreadable(req, &stream, &e).await,
        },
        Some(File::Part(seq, idx)) => {
            // The preload hint names the part being built: it is answered once complete.
            stream
                .wait_for(wait, |s| {
                    if s.part_pending(seq, idx) {
                        hls::Ready::Later
                    } else {
                        hls::Ready::Now
                    }
                })
                .await;
            match stream.part(seq, idx).await {
                Ok((part, duration_ms)) => ("video/mp2t", "max-age=3600", part, duration_ms),
                Err(e) => return unreadable(req, &stream, &e).await,
            }
        }
        Some(File::Master) | None => return plain(req, 404, NO_SEGMENT).await,
    };
    owner.counters.requests.inc();
    let answer = Answer {
        status: 200,
        content_type: ctype,
        cache_control: cache,
        headers: &[],
        body: &body,
        head_only,
    };
    if reply(req, &answer).await.is_ok() && !head_only && !relay {
        owner.counters.bytes_sent.inc_by(body.len() as u64);
        let ua = req.head.header("user-agent").unwrap_or_default();
        let key = viewers::session_key(&viewer, req.peer.ip(), ua);
        owner
            .viewers
            .request(key, std::time::Instant::now(), body.len() as u64, media_ms);
    }
}
