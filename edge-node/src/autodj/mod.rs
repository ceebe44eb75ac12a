//! The AutoDJ: plays a station's playlists into its mounts in real time, in the order its
//! [`schedule`] decides (station IDs, jingles, scheduled shows, weighted rotation). Every track is encoded
//! once per output format and bitrate ([`render`]); playing is paced passthrough of those
//! frames — each frame's duration comes from its header, and an output is kept at most
//! [`LEAD`] ahead of a monotonic clock that started with the AutoDJ, so an hour of AutoDJ is an
//! hour of audio however the timers jitter, and tracks follow each other with no gap. No audio is
//! decoded or encoded while playing.
//!
//! One task per AutoDJ owns one source session per output mount for as long as it runs, so
//! listeners stay connected across tracks. Configuration changes take effect at the next track.
//! A track that cannot be encoded (missing, not audio) is skipped with a warning. A change that
//! arrives while a track plays (a listener's request, an edited playlist) also re-picks the
//! prepared next track when the schedule no longer wants it, so what is announced as next is
//! what plays next.

mod crossfade;
mod live;
mod ogg;
pub(crate) mod order;
pub(crate) mod render;
pub(crate) mod schedule;

use crate::config::{AutoDjConfig, AutoDjOutput, TrackConfig};
use crate::frames::{Frame, Parser};
use crate::mount::{Mount, Session, SourceInfo};
use crate::registry::Feeds;
use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use onda_shared::domain::AudioFormat;
use rand::SeedableRng as _;
use schedule::{Pick, Schedule};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How far ahead of real time an output may be: enough that timer jitter and the short wait at a
/// track change never starve a listener, small enough that a title change lands close to its
/// audio.
pub(crate) const LEAD: Duration = Duration::from_millis(500);
/// Wake-ups per output: one per this much audio.
const TICK: Duration = Duration::from_millis(100);
/// An output further behind than this (the process was stopped, the machine suspended) jumps
/// to now instead of flooding its listeners.
const MAX_BEHIND: Duration = Duration::from_secs(5);

/// A running AutoDJ, as [`AutoDjs`] keeps it.
#[derive(Debug)]
struct Handle {
    config: watch::Sender<AutoDjConfig>,
    stop: CancellationToken,
    now: Arc<Mutex<Option<NowPlaying>>>,
}

/// The AutoDJs running on the node, by name, and the rendition cache they share.
#[derive(Default)]
pub(crate) struct AutoDjs {
    running: Mutex<std::collections::HashMap<String, Handle>>,
    renditions: Mutex<Option<Arc<render::Renditions>>>,
}

impl AutoDjs {
    /// Starts AutoDJs that are new in `config`, stops removed ones and hands changed
    /// configurations to the running ones (they apply them at the next track, so listeners
    /// stay connected).
    pub(crate) fn sync(
        &self,
        config: &crate::config::EdgeConfig,
        feeds: &Feeds,
        shutdown: &CancellationToken,
    ) {
        let renditions = self.renditions(&config.media.cache_dir);
        let mut running = crate::sync::lock(&self.running);
        running.retain(
            |name, h| match config.autodj.iter().find(|a| &a.name == name) {
                Some(a) => {
                    h.config.send_if_modified(|c| {
                        let changed = c != a;
                        if changed {
                            *c = a.clone();
                        }
                        changed
                    });
                    true
                }
                None => {
                    h.stop.cancel();
                    false
                }
            },
        );
        for a in &config.autodj {
            if running.contains_key(&a.name) {
                continue;
            }
            let (tx, rx) = watch::channel(a.clone());
            let stop = shutdown.child_token();
            let now = Arc::new(Mutex::new(None));
            tokio::spawn(run(
                feeds.clone(),
                renditions.clone(),
                rx,
                stop.clone(),
                now.clone(),
            ));
            running.insert(
                a.name.clone(),
                Handle {
                    config: tx,
                    stop,
                    now,
                },
            );
        }
    }

    /// The rendition cache in `dir`, the same one as long as the directory stays.
    fn renditions(&self, dir: &std::path::Path) -> Arc<render::Renditions> {
        let mut slot = crate::sync::lock(&self.renditions);
        match slot.as_ref() {
            Some(r) if r.dir() == dir => r.clone(),
            _ => {
                let r = Arc::new(render::Renditions::new(dir));
                *slot = Some(r.clone());
                r
            }
        }
    }

    /// What each AutoDJ plays now, by AutoDJ name.
    pub(crate) fn now_playing(&self) -> Vec<(String, NowPlaying)> {
        let running = crate::sync::lock(&self.running);
        let mut v: Vec<_> = running
            .iter()
            .filter_map(|(name, h)| Some((name.clone(), crate::sync::lock(&h.now).clone()?)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// What an AutoDJ's outputs carry now: a track of the playlist or a live DJ's show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NowPlaying {
    /// The ICY title: `Artist - Title`, or the DJ's.
    pub title: String,
    pub artist: String,
    pub track_title: String,
    pub file: PathBuf,
    pub sha256: Option<String>,
    pub started_at: SystemTime,
    pub duration: Option<Duration>,
    pub live: bool,
    /// The live DJ's source user.
    pub streamer: String,
    /// The ICY title of the track prepared to play next.
    pub next: Option<String>,
    /// The listener request this track plays for.
    pub request_id: Option<String>,
    /// The listener request the track prepared to play next is.
    pub next_request_id: Option<String>,
}

fn set_now(now: &Mutex<Option<NowPlaying>>, np: NowPlaying) {
    *crate::sync::lock(now) = Some(np);
}

struct Output {
    cfg: AutoDjOutput,
    mount: Arc<Mount>,
    session: Arc<Session>,
    /// Audio pushed so far, on the AutoDJ's clock.
    sent: Duration,
    /// Opus outputs: the tracks' Ogg streams joined into one.
    ogg: Option<ogg::Chain>,
}

impl Drop for Output {
    fn drop(&mut self) {
        self.mount.detach(&self.session);
    }
}

/// Runs one AutoDJ until `stop`.
async fn run(
    feeds: Feeds,
    renditions: Arc<render::Renditions>,
    mut config: watch::Receiver<AutoDjConfig>,
    stop: CancellationToken,
    playing: Arc<Mutex<Option<NowPlaying>>>,
) {
    let clock = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut schedule = Schedule::default();
    let mut outputs: Vec<Output> = Vec::new();
    let mut skipped_in_row = 0usize;
    // The next track, picked and encoding while the current one plays.
    let mut next: Option<(Pick, Prepared)> = None;
    let mut mixer = crossfade::Mixer::default();
    loop {
        if stop.is_cancelled() {
            break;
        }
        let cfg = config.borrow_and_update().clone();
        sync_outputs(&feeds, &cfg, &mut outputs, clock);
        if outputs.is_empty() {
            // Every output mount still has another source (one being replaced by the AutoDJ):
            // try again shortly rather than play to nobody.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = stop.cancelled() => break,
            }
            continue;
        }
        if let Some(session) = live::on_air(&feeds, &cfg) {
            live::play(&mut outputs, session, clock, &stop, &playing).await;
            mixer.reset();
            continue;
        }
        let Some((pick, prepared)) =
            take_next(&mut next, &mut schedule, &cfg, &mut rng, &renditions)
        else {
            tracing::error!(autodj = %cfg.name, "no track to play; the AutoDJ stops");
            break;
        };
        let files = tokio::select! {
            r = prepared => r.map_err(|e| anyhow::anyhow!("the encoder task failed: {e}")).and_then(|f| f),
            () = stop.cancelled() => break,
        };
        let now = jiff::Timestamp::now();
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(
                    autodj = %cfg.name,
                    playlist = %pick.playlist,
                    "skipping track {}: {e:#}",
                    pick.track.file.display()
                );
                schedule.failed(&pick, &cfg, now);
                skipped_in_row += 1;
                let tracks: usize = cfg.all_playlists().iter().map(|p| p.tracks.len()).sum();
                if skipped_in_row >= tracks {
                    tracing::error!(
                        autodj = %cfg.name,
                        "no track of the playlists is playable; trying again in 10 s"
                    );
                    skipped_in_row = 0;
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(10)) => {}
                        () = stop.cancelled() => break,
                    }
                }
                continue;
            }
        };
        skipped_in_row = 0;
        schedule.played(&pick, &cfg, now);
        // While this one plays, the next one is encoded.
        if let Some(p) = schedule.next(&cfg, now, &mut rng) {
            let prepared = prepare(&renditions, &p.track, &cfg, false);
            next = Some((p, prepared));
        }
        let track = &pick.track;
        let title = track.stream_title();
        tracing::info!(autodj = %cfg.name, playlist = %pick.playlist, "playing {title}");
        let duration = track_duration(track, &cfg.outputs, &files).await;
        let mut now_playing = NowPlaying::track(track, duration, pick.request.clone());
        now_playing.set_next(next.as_ref().map(|(p, _)| p));
        set_now(&playing, now_playing);
        let live = || live::on_air(&feeds, &cfg).is_some();
        let playback = async {
            if cfg.crossfade_ms > 0 {
                let fade = Duration::from_millis(cfg.crossfade_ms);
                let ended = mixer
                    .play(&outputs, &track.file, &title, fade, &stop, &live)
                    .await;
                if let crossfade::Ended::Failed(why) = ended {
                    tracing::warn!(autodj = %cfg.name, "skipping track {}: {why}", track.file.display());
                }
            } else {
                play(&mut outputs, &files, &title, clock, &stop, &live).await;
            }
        };
        let mut upcoming = Upcoming {
            next: &mut next,
            schedule: &mut schedule,
            rng: &mut rng,
            renditions: &renditions,
            playing: &playing,
        };
        until_played(playback, &mut config, &mut upcoming).await;
    }
    mixer.shutdown().await;
}

/// The track to play now: the one prepared during the previous track while the schedule still
/// agrees (the configuration may have changed since, or the hour turned, or a window opened or
/// closed), else a new pick, the stale one going back to its playlist. None when no playlist
/// has a track.
fn take_next(
    next: &mut Option<(Pick, Prepared)>,
    schedule: &mut Schedule,
    cfg: &AutoDjConfig,
    rng: &mut rand::rngs::StdRng,
    renditions: &Arc<render::Renditions>,
) -> Option<(Pick, Prepared)> {
    let now = jiff::Timestamp::now();
    match next.take() {
        Some((pick, p)) if schedule.confirm(&pick, cfg, now) => Some((pick, p)),
        stale => {
            if let Some((pick, _)) = stale {
                schedule.put_back(pick);
            }
            let pick = schedule.next(cfg, now, rng)?;
            let p = prepare(renditions, &pick.track, cfg, true);
            Some((pick, p))
        }
    }
}

/// What a track that plays may change: the next track, prepared meanwhile.
struct Upcoming<'a> {
    next: &'a mut Option<(Pick, Prepared)>,
    schedule: &'a mut Schedule,
    rng: &'a mut rand::rngs::StdRng,
    renditions: &'a Arc<render::Renditions>,
    playing: &'a Mutex<Option<NowPlaying>>,
}

impl Upcoming<'_> {
    /// The configuration changed: the prepared pick stays if the schedule still wants it,
    /// else it goes back and the schedule picks (and encoding starts) again, and now-playing
    /// names the new next track.
    fn revise(&mut self, cfg: &AutoDjConfig) {
        let now = jiff::Timestamp::now();
        match self.next.take() {
            Some((pick, p)) if self.schedule.confirm(&pick, cfg, now) => {
                *self.next = Some((pick, p));
                return;
            }
            Some((stale, _)) => self.schedule.put_back(stale),
            None => {}
        }
        *self.next = self.schedule.next(cfg, now, self.rng).map(|p| {
            let prepared = prepare(self.renditions, &p.track, cfg, false);
            (p, prepared)
        });
        if let Some(np) = crate::sync::lock(self.playing).as_mut() {
            np.set_next(self.next.as_ref().map(|(p, _)| p));
        }
    }
}

/// Waits for `playback` to end, revising the next track at every configuration change
/// meanwhile.
async fn until_played(
    playback: impl std::future::Future<Output = ()>,
    config: &mut watch::Receiver<AutoDjConfig>,
    upcoming: &mut Upcoming<'_>,
) {
    tokio::pin!(playback);
    let mut open = true;
    loop {
        tokio::select! {
            () = &mut playback => return,
            changed = config.changed(), if open => match changed {
                Ok(()) => {
                    let cfg = config.borrow_and_update().clone();
                    upcoming.revise(&cfg);
                }
                // The AutoDJ is being removed: its stop token ends the playback.
                Err(_) => open = false,
            },
        }
    }
}

impl NowPlaying {
    /// A playlist track (or the listener request `request_id`) starting now.
    fn track(track: &TrackConfig, duration: Option<Duration>, request_id: Option<String>) -> Self {
        NowPlaying {
            title: track.stream_title(),
            artist: track.artist.clone(),
            track_title: track.title.clone(),
            file: track.file.clone(),
            sha256: track.sha256.clone(),
            started_at: SystemTime::now(),
            duration,
            live: false,
            streamer: String::new(),
            next: None,
            request_id,
            next_request_id: None,
        }
    }

    /// Names `pick` as the track prepared to play next.
    fn set_next(&mut self, pick: Option<&Pick>) {
        self.next = pick.map(|p| p.track.stream_title());
        self.next_request_id = pick.and_then(|p| p.request.clone());
    }
}

/// The track's length: as configured, else from the size of its first constant-bitrate
/// rendition.
async fn track_duration(
    track: &TrackConfig,
    outputs: &[AutoDjOutput],
    files: &[(String, render::Rendition)],
) -> Option<Duration> {
    if let Some(ms) = track.duration_ms {
        return Some(Duration::from_millis(ms));
    }
    let out = outputs.first()?;
    let (_, r) = files.iter().find(|(m, _)| m == &out.mount)?;
    if r.partial.is_some() {
        return None;
    }
    let bytes = tokio::fs::metadata(&r.path).await.ok()?.len();
    Some(Duration::from_millis(
        bytes * 8 / u64::from(out.bitrate_kbps.max(1)),
    ))
}

/// Renditions of one track for each output (by mount path), encoding in the background.
type Prepared = tokio::task::JoinHandle<anyhow::Result<Vec<(String, render::Rendition)>>>;

/// Starts the renditions of `track`: made whole ahead of time while another track plays, or,
/// when the track is to play `now` (the AutoDJ's first, or one picked again after a change),
/// followed as they are written so nobody waits for a whole encode.
fn prepare(
    renditions: &Arc<render::Renditions>,
    track: &TrackConfig,
    cfg: &AutoDjConfig,
    now: bool,
) -> Prepared {
    let (r, track, outs) = (renditions.clone(), track.clone(), cfg.outputs.clone());
    // A crossfading AutoDJ decodes the original files as it plays: no renditions.
    let crossfade = cfg.crossfade_ms > 0;
    tokio::spawn(async move {
        if crossfade {
            return Ok(Vec::new());
        }
        let mut files = Vec::with_capacity(outs.len());
        if now {
            // Every output's encode at once: the track starts when the slowest has begun.
            let started: Vec<_> = outs
                .iter()
                .map(|o| {
                    let (r, track, o) = (r.clone(), track.clone(), o.clone());
                    tokio::spawn(async move { r.start(&track, &o).await })
                })
                .collect();
            for (o, s) in outs.iter().zip(started) {
                let rendition = s.await.context("the encoder task failed")??;
                files.push((o.mount.clone(), rendition));
            }
            return Ok(files);
        }
        for o in &outs {
            let path = r.get(&track, o).await?;
            files.push((
                o.mount.clone(),
                render::Rendition {
                    path,
                    partial: None,
                },
            ));
        }
        Ok(files)
    })
}

/// Attaches a session to each configured output that has none (a live source may hold the
/// mount: then it is tried again at the next track) and lets go of outputs no longer wanted.
fn sync_outputs(feeds: &Feeds, cfg: &AutoDjConfig, outputs: &mut Vec<Output>, clock: Instant) {
    outputs.retain(|o| {
        !o.session.is_closed()
            && cfg.outputs.iter().any(|c| c == &o.cfg)
            && feeds
                .mount(&o.cfg.mount)
                .is_some_and(|m| Arc::ptr_eq(&m, &o.mount))
    });
    for c in &cfg.outputs {
        if outputs.iter().any(|o| o.cfg.mount == c.mount) {
            continue;
        }
        let Some(mount) = feeds.mount(&c.mount) else {
            continue;
        };
        let info = SourceInfo {
            content_type: render::content_type(c.format).to_string(),
            name: cfg.name.clone(),
            bitrate: c.bitrate_kbps,
            audio_info: format!("bitrate={}", c.bitrate_kbps),
            user_agent: "Onda AutoDJ".to_string(),
            ip: "autodj".to_string(),
            ..SourceInfo::default()
        };
        let session = feeds.session(info);
        if !mount.attach(session.clone()) {
            tracing::debug!(autodj = %cfg.name, mount = %c.mount, "the mount has another source");
            continue;
        }
        outputs.push(Output {
            cfg: c.clone(),
            mount,
            session,
            sent: clock.elapsed(),
            ogg: (c.format == AudioFormat::Opus).then(ogg::Chain::default),
        });
    }
}

/// Plays one track on every output; returns when every output has sent all of it, when a live
/// DJ comes on the air (`live`), or on `stop`.
async fn play(
    outputs: &mut [Output],
    files: &[(String, render::Rendition)],
    title: &str,
    clock: Instant,
    stop: &CancellationToken,
    live: &(dyn Fn() -> bool + Sync),
) {
    let mut readers: Vec<Option<FrameReader>> = Vec::with_capacity(outputs.len());
    for o in outputs.iter() {
        let file = files
            .iter()
            .find(|(m, _)| m == &o.cfg.mount)
            .map(|(_, p)| p);
        let reader = match file {
            Some(r) => match FrameReader::open(r, o.cfg.format).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(mount = %o.cfg.mount, "cannot read {}: {e}", r.path.display());
                    None
                }
            },
            None => None,
        };
        if reader.is_some() {
            o.session.set_title(title, "");
        }
        readers.push(reader);
    }
    loop {
        if live() {
            return;
        }
        let now = clock.elapsed();
        let mut wake: Option<Duration> = None;
        for (o, slot) in outputs.iter_mut().zip(readers.iter_mut()) {
            let Some(reader) = slot else { continue };
            if o.session.is_closed() {
                *slot = None;
                continue;
            }
            if now.saturating_sub(o.sent) > MAX_BEHIND {
                tracing::warn!(mount = %o.cfg.mount, "AutoDJ fell {:?} behind; skipping ahead", now - o.sent);
                o.sent = now;
            }
            let mut chunk = BytesMut::new();
            while o.sent < now + LEAD {
                // A rendition still being written may keep the reader waiting: stopping must
                // not wait for it.
                let next = tokio::select! {
                    r = reader.next() => r,
                    () = stop.cancelled() => return,
                };
                match next {
                    Ok(Some((bytes, frame))) => {
                        match &mut o.ogg {
                            Some(chain) => {
                                if let Some(page) = chain.rewrite(&bytes) {
                                    chunk.extend_from_slice(&page);
                                }
                            }
                            None => chunk.extend_from_slice(&bytes),
                        }
                        o.sent += Duration::from_nanos(frame.duration_ns());
                    }
                    Ok(None) => {
                        *slot = None;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(mount = %o.cfg.mount, "reading a rendition failed: {e}");
                        *slot = None;
                        break;
                    }
                }
            }
            if !chunk.is_empty() {
                o.session.push(chunk.freeze());
            }
            if slot.is_some() {
                let at = o.sent.saturating_sub(LEAD) + TICK;
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        let Some(wake) = wake else { return };
        tokio::select! {
            () = tokio::time::sleep_until(clock + wake) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Reads a rendition one frame (MP3, ADTS) or Ogg page (Opus) at a time, resynchronising past
/// anything that is not one. An Ogg page's duration is the growth of its granule position
/// (48 kHz for Opus); header pages have none and are passed on as they are.
struct FrameReader {
    file: tokio::fs::File,
    buf: BytesMut,
    parse: Parser,
    ogg: bool,
    /// Granule position of the last Ogg page with one.
    granule: Option<u64>,
    /// The first MP3/ADTS frame is still to be dropped: it holds the encoder's priming
    /// (silence). The last is dropped too (the encoder's flush; see `render::gapless_length`),
    /// so frames are held back by one.
    skip_first: bool,
    held: Option<(Bytes, Frame)>,
    eof: bool,
    /// The file's name while an encoder still writes it (see [`render::Rendition::partial`]).
    growing: Option<PathBuf>,
    /// How long the reader has waited at the end of a rendition being written.
    waited: Duration,
}

/// How long a rendition being written may stop growing before its reader gives up on it (an
/// encoder runs many times faster than real time; one this slow is stuck).
const GROWING_STALL: Duration = Duration::from_secs(10);

/// How often a reader at the end of a rendition being written looks for more: the encoder is
/// many times faster than real time, so it is rarely there.
const GROWING_POLL: Duration = Duration::from_millis(20);

impl FrameReader {
    async fn open(r: &render::Rendition, format: AudioFormat) -> std::io::Result<FrameReader> {
        let (file, growing) = match &r.partial {
            Some(p) => match tokio::fs::File::open(p).await {
                Ok(f) => (f, Some(p.clone())),
                // Finished meanwhile: renamed to its final name.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (tokio::fs::File::open(&r.path).await?, None)
                }
                Err(e) => return Err(e),
            },
            None => (tokio::fs::File::open(&r.path).await?, None),
        };
        Ok(FrameReader {
            file,
            growing,
            waited: Duration::ZERO,
            buf: BytesMut::with_capacity(64 * 1024),
            parse: render::parser(format),
            ogg: format == AudioFormat::Opus,
            granule: None,
            skip_first: format != AudioFormat::Opus,
            held: None,
            eof: false,
        })
    }

    async fn next(&mut self) -> std::io::Result<Option<(Bytes, Frame)>> {
        loop {
            if let Some(f) = (self.parse)(&self.buf) {
                if self.buf.len() >= f.len && (self.ogg || f.duration_ns() > 0) {
                    let bytes = self.buf.split_to(f.len).freeze();
                    if self.ogg {
                        let f = self.ogg_duration(&bytes, f);
                        return Ok(Some((bytes, f)));
                    }
                    if std::mem::take(&mut self.skip_first) {
                        continue;
                    }
                    // Hand out the previous frame: the one read now may be the last.
                    match self.held.replace((bytes, f)) {
                        Some(previous) => return Ok(Some(previous)),
                        None => continue,
                    }
                }
                if !self.ogg && f.duration_ns() == 0 {
                    let _ = self.buf.split_to(1);
                    continue;
                }
            } else if (self.ogg && self.buf.len() >= 27 + 255 || !self.buf.starts_with(b"OggS"))
                && self.buf.len() >= if self.ogg { 27 } else { 8 }
            {
                // Not a frame here: skip to the next possible start.
                let skip = if self.ogg {
                    self.buf[1..]
                        .windows(4)
                        .position(|w| w == b"OggS")
                        .map_or(self.buf.len().saturating_sub(3), |i| i + 1)
                } else {
                    self.buf[1..]
                        .iter()
                        .position(|&b| b == 0xFF)
                        .map_or(self.buf.len(), |i| i + 1)
                };
                let _ = self.buf.split_to(skip.max(1));
                continue;
            }
            if self.eof {
                return Ok(None);
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.file.read_buf(&mut self.buf).await? > 0 {
                self.waited = Duration::ZERO;
            } else {
                match &self.growing {
                    // Renamed or removed: the encoder is done, and a last read takes what it
                    // wrote before that.
                    Some(p) if !tokio::fs::try_exists(p).await.unwrap_or(false) => {
                        self.growing = None;
                    }
                    Some(p) if self.waited >= GROWING_STALL => {
                        tracing::warn!(
                            "{} has not grown for {GROWING_STALL:?}: its encoder is stuck; the track ends here",
                            p.display()
                        );
                        self.growing = None;
                        self.eof = true;
                    }
                    Some(_) => {
                        tokio::time::sleep(GROWING_POLL).await;
                        self.waited += GROWING_POLL;
                    }
                    None => self.eof = true,
                }
            }
        }
    }

    /// An Ogg page with its duration: the growth of the granule position since the last page
    /// that had one (a new stream, the next track, starts counting again).
    fn ogg_duration(&mut self, page: &[u8], f: Frame) -> Frame {
        let granule = page
            .get(6..14)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(u64::MAX);
        let bos = page.get(5).is_some_and(|flags| flags & 0x02 != 0);
        if bos {
            self.granule = None;
        }
        // -1 marks a page on which no packet ends.
        if granule == u64::MAX {
            return Frame {
                samples: 0,
                rate: 0,
                ..f
            };
        }
        let before = self.granule.replace(granule).unwrap_or(granule);
        Frame {
            samples: u32::try_from(granule.saturating_sub(before)).unwrap_or(0),
            rate: 48_000,
            ..f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unpadded 417-byte MP3 frame numbered `n` (its fill, so its last byte).
    fn frame(n: u8) -> Vec<u8> {
        crate::frames::test_frames::mp3(false, n)
    }

    /// A reader of a rendition still being written waits at its end instead of ending the
    /// track, takes what the encoder writes, and ends once the file has its final name; the
    /// priming frame and the flush frame are dropped as from a finished file.
    #[tokio::test]
    async fn a_growing_rendition_is_read_to_its_end_once_renamed() {
        let dir = tempfile::tempdir().expect("dir");
        let tmp = dir.path().join("r.mp3.part-1");
        let done = dir.path().join("r.mp3");
        std::fs::write(&tmp, [frame(1), frame(2)].concat()).expect("write");
        let r = render::Rendition {
            path: done.clone(),
            partial: Some(tmp.clone()),
        };
        let mut reader = FrameReader::open(&r, AudioFormat::Mp3).await.expect("open");
        // Frame 1 is the priming and frame 2 may be the last: nothing to hand out yet.
        let early = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
        assert!(early.is_err(), "waits for the encoder rather than ending");
        let more = [frame(3), frame(4), frame(5)].concat();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&tmp)
            .expect("append");
        std::io::Write::write_all(&mut f, &more).expect("append");
        std::fs::rename(&tmp, &done).expect("rename");
        let mut got = Vec::new();
        while let Some((bytes, _)) = reader.next().await.expect("read") {
            got.push(bytes[416]);
        }
        assert_eq!(got, [2, 3, 4], "all but the priming and the flush frame");
    }
}
