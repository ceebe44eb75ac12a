// The station's audio: one <audio> element fed either straight from the redirector's Icecast
// URL (MP3, AAC, Ogg) or from the mount's HLS playlist (natively where the browser plays HLS,
// otherwise hls.js, loaded only then). A listener who pressed play keeps listening: a network
// drop, an edge that dies or a node failover shows as a gap, and the player reconnects by itself
// through the redirector (which sends it to whichever edge carries the station now), backing off
// from half a second to eight. A stream that stops advancing without an error (a dead TCP
// connection) is caught by a watchdog.

import type HlsType from "hls.js";

export interface Source {
  /// What the listener picks ("128 kbps MP3", "HLS").
  label: string;
  url: string;
  hls: boolean;
}

export type State = "stopped" | "connecting" | "playing" | "reconnecting";

/// No progress for this long while playing is a dead stream.
const STALL_MS = 8000;
const MAX_BACKOFF_MS = 8000;

/// Whether this browser plays a progressive MP3/AAC stream itself (Chromium, Firefox, Safari
/// do; some embedded web views do not).
export function playsProgressive(format: string): boolean {
  const a = document.createElement("audio");
  const type = format === "aac" ? "audio/aac" : format === "ogg" || format === "opus" ? "audio/ogg" : "audio/mpeg";
  return a.canPlayType(type) !== "";
}

export class Player {
  readonly audio: HTMLAudioElement;
  /// Times the player reconnected by itself (shown to tests as `data-reconnects`).
  reconnects = 0;
  private wanted = false;
  private source: Source | null = null;
  private hls: HlsType | null = null;
  private backoff = 500;
  private timer: number | undefined;
  private lastTime = -1;
  private lastProgress = 0;

  constructor(private readonly onState: (s: State) => void) {
    this.audio = document.createElement("audio");
    this.audio.preload = "none";
    this.audio.setAttribute("data-testid", "audio");
    this.audio.addEventListener("error", () => this.trouble());
    this.audio.addEventListener("ended", () => this.trouble());
    this.audio.addEventListener("playing", () => {
      this.backoff = 500;
      this.onState("playing");
    });
    this.audio.addEventListener("timeupdate", () => {
      if (this.audio.currentTime !== this.lastTime) {
        this.lastTime = this.audio.currentTime;
        this.lastProgress = performance.now();
      }
    });
    window.setInterval(() => this.watchdog(), 2000);
  }

  get playing(): boolean {
    return this.wanted;
  }

  /// Plays `source` (or the current one), replacing whatever plays.
  play(source?: Source): void {
    if (source) this.source = source;
    if (!this.source) return;
    this.wanted = true;
    this.onState("connecting");
    this.connect();
  }

  stop(): void {
    this.wanted = false;
    window.clearTimeout(this.timer);
    this.detach();
    this.onState("stopped");
  }

  private detach(): void {
    this.hls?.destroy();
    this.hls = null;
    this.audio.pause();
    this.audio.removeAttribute("src");
    // Drops the connection: a live stream paused would go on downloading.
    this.audio.load();
  }

  private async connect(): Promise<void> {
    const source = this.source;
    if (!source) return;
    this.detach();
    this.lastProgress = performance.now();
    // hls.js wherever Media Source Extensions exist (as its authors advise: the same player,
    // timed metadata and recovery in every browser); the browser's own HLS only without them
    // (an iPhone before iOS 17.1).
    const mse = "MediaSource" in window || "ManagedMediaSource" in window;
    const Hls = source.hls && mse ? (await import("hls.js")).default : null;
    if (source !== this.source || !this.wanted) return;
    if (Hls?.isSupported()) {
      const hls = new Hls({ lowLatencyMode: false, liveSyncDurationCount: 2 });
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) this.trouble();
      });
      hls.loadSource(source.url);
      hls.attachMedia(this.audio);
      this.hls = hls;
    } else {
      // A fresh URL each time: nothing between us and the redirector may answer from a cache.
      const sep = source.url.includes("?") ? "&" : "?";
      this.audio.src = `${source.url}${sep}t=${Date.now()}`;
    }
    this.audio.play().catch(() => {
      // Autoplay refused or the source failed: `error` (or the watchdog) takes it from here.
    });
  }

  /// The stream broke: try again after the backoff, which doubles up to its ceiling.
  private trouble(): void {
    if (!this.wanted || this.timer !== undefined) return;
    this.onState("reconnecting");
    this.timer = window.setTimeout(() => {
      this.timer = undefined;
      if (!this.wanted) return;
      this.reconnects += 1;
      this.connect();
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  private watchdog(): void {
    if (this.wanted && this.timer === undefined && performance.now() - this.lastProgress > STALL_MS) {
      this.trouble();
    }
  }
}
