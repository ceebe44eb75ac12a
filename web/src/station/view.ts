// The station's now-playing view: cover, title, artist, progress, the live DJ, the next song,
// the history and the listener count, redrawn from each now-playing event the control plane
// pushes (SSE); between events only the progress bar moves, by the clock. Text from the
// station is always set as textContent.

import { el } from "../ui";
import type { Options } from "./options";

export interface Song {
  id: string;
  text: string;
  artist: string;
  title: string;
  album: string;
  art: string;
}

export interface Mount {
  name: string;
  url: string;
  format: string;
  bitrate: number;
  hls_url?: string | null;
}

export interface NowPlaying {
  station: { id: string; name: string; shortcode: string; listen_url: string; mounts: Mount[]; hls_preferred?: boolean };
  listeners: { total: number; current: number };
  live: { is_live: boolean; streamer_name: string; broadcast_start: number | null };
  now_playing: { played_at: number; duration: number; elapsed: number; remaining: number; source: string; song: Song; is_request?: boolean } | null;
  playing_next: { song: Song; is_request?: boolean } | null;
  song_history: { played_at: number; duration: number; source: string; song: Song; is_request?: boolean }[];
  is_online: boolean;
}

/// The 100 px picture of a 500 px cover URL (the built-in picture has one size).
export function smallArt(url: string): string {
  return url.replace(/\/500\.jpg$/, "/100.jpg");
}

function clock(secs: number): string {
  const s = Math.max(0, Math.floor(secs));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export class View {
  readonly root: HTMLElement;
  readonly controls: HTMLElement;
  private art = el("img", { class: "cover", alt: "", "data-testid": "art" });
  private title = el("div", { class: "title", "data-testid": "title" });
  private artist = el("div", { class: "artist", "data-testid": "artist" });
  private live = el("div", { class: "live", "data-testid": "live", hidden: "" });
  private bar = el("progress", { class: "progress", max: "1", value: "0", "data-testid": "progress" });
  private elapsed = el("span", { "data-testid": "elapsed" });
  private duration = el("span", { "data-testid": "duration" });
  private listeners = el("span", { class: "listeners", "data-testid": "listeners" });
  private next = el("div", { class: "next", "data-testid": "next" });
  private history = el("ol", { class: "history", "data-testid": "history" });
  private offline = el("div", { class: "offline", "data-testid": "offline", hidden: "" }, "Off the air");
  /// When the current track started, by this browser's clock, and how long it is.
  private started = 0;
  private length = 0;

  constructor(private readonly opts: Options) {
    const name = el("h1", { class: "name", "data-testid": "station-name" });
    this.controls = el("div", { class: "controls" });
    const meta = el("div", { class: "meta" }, undefined);
    meta.append(name, this.title, this.artist, this.live, this.controls);
    const progress = el("div", { class: "time" });
    progress.append(this.elapsed, this.bar, this.duration);
    const top = el("div", { class: "top" });
    if (opts.cover) top.append(this.art);
    top.append(meta);
    this.root = el("div", { class: `player ${opts.layout} ${opts.theme}` });
    this.root.append(top, progress, this.offline);
    const foot = el("div", { class: "foot" });
    foot.append(this.listeners, this.next);
    this.root.append(foot);
    if (opts.history) {
      const h = el("section", { class: "past" });
      h.append(el("h2", {}, "Recently played"), this.history);
      this.root.append(h);
    }
    if (opts.accent) this.root.style.setProperty("--accent", opts.accent);
    window.setInterval(() => this.tick(), 1000);
  }

  update(np: NowPlaying): void {
    this.root.querySelector<HTMLElement>("[data-testid=station-name]")!.textContent = np.station.name;
    if (!this.opts.embed) document.title = np.station.name;
    this.offline.hidden = np.is_online;
    const cur = np.now_playing;
    this.title.textContent = cur ? cur.song.title || cur.song.text : "";
    this.artist.textContent = cur?.song.artist ?? "";
    this.title.dataset.requested = cur?.is_request ? "true" : "false";
    if (cur?.song.art && this.art.getAttribute("src") !== cur.song.art) {
      this.art.src = cur.song.art;
      this.art.alt = cur.song.album || cur.song.text;
    }
    this.live.hidden = !np.live.is_live;
    this.live.textContent = np.live.is_live ? `Live: ${np.live.streamer_name}` : "";
    this.started = Date.now() - (cur?.elapsed ?? 0) * 1000;
    this.length = cur?.duration ?? 0;
    this.tick();
    const n = np.listeners.current;
    this.listeners.textContent = `${n} ${n === 1 ? "listener" : "listeners"}`;
    this.listeners.dataset.count = String(n);
    const next = np.playing_next;
    this.next.hidden = !next;
    this.next.textContent = next ? `Next: ${next.song.text}${next.is_request ? " (requested)" : ""}` : "";
    this.next.dataset.requested = next?.is_request ? "true" : "false";
    this.history.replaceChildren(
      ...np.song_history.slice(0, 10).map((h) => {
        const li = el("li", { "data-testid": "history-item" });
        if (this.opts.cover && h.song.art) li.append(el("img", { src: smallArt(h.song.art), alt: "", loading: "lazy" }));
        const when = new Date(h.played_at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        li.append(el("time", {}, when), el("span", { class: "text" }, h.song.text));
        if (h.is_request) li.append(el("span", { class: "tag", "data-testid": "requested" }, "requested"));
        return li;
      }),
    );
  }

  private tick(): void {
    const secs = (Date.now() - this.started) / 1000;
    const shown = this.length ? Math.min(secs, this.length) : secs;
    this.elapsed.textContent = clock(shown);
    this.duration.textContent = this.length ? clock(this.length) : "live";
    this.bar.value = this.length ? shown / this.length : 0;
  }
}
