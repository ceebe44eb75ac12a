// A radio station's public page (/stations/{slug}) and its embeddable player (/embed/{slug}):
// what plays now (cover, title, artist, progress, the live DJ), what comes next, what played
// before, how many listen, song requests, and the player itself. Everything shown arrives from
// the station's now-playing feed (`/api/nowplaying/{slug}/events`, Server-Sent Events: the
// whole state at once and again on every change), never by polling. Small on purpose: no app
// code, no socket.io; hls.js is fetched only when the station is played over HLS.

import { el } from "../ui";
import { parseOptions } from "./options";
import { Player, Source, State, playsProgressive } from "./player";
import { Requests } from "./requests";
import { NowPlaying, View } from "./view";
import "./station.css";

const opts = parseOptions(location);
const mount = document.getElementById("station") as HTMLElement;
document.documentElement.classList.add(opts.theme, opts.embed ? "embedded" : "page");

const view = new View(opts);
const status = el("span", { class: "status", "data-testid": "status" }, "Press play");
const play = el("button", { type: "button", class: "play", "data-testid": "play", "aria-label": "Play" }, "▶");
const select = el("select", { "data-testid": "source", "aria-label": "Stream" });
const volume = el("input", { type: "range", min: "0", max: "1", step: "0.05", value: "1", "data-testid": "volume", "aria-label": "Volume" });

const player = new Player((s: State) => {
  mount.dataset.state = s;
  mount.dataset.reconnects = String(player.reconnects);
  play.textContent = s === "stopped" ? "▶" : "❚❚";
  play.setAttribute("aria-label", s === "stopped" ? "Play" : "Pause");
  status.textContent = { stopped: "Press play", connecting: "Connecting…", playing: "Playing", reconnecting: "Reconnecting…" }[s];
});
view.controls.append(play, player.audio, select, status);
if (opts.volume) view.controls.append(volume);
mount.append(view.root);

let sources: Source[] = [];

/// The ways this browser can play the station: each mount straight (where it plays that format)
/// and over HLS (where the mount has it); HLS first when the station prefers it, or asked for
/// with `?hls=1`.
function sourcesOf(np: NowPlaying): Source[] {
  const direct: Source[] = [];
  const hls: Source[] = [];
  for (const m of np.station.mounts) {
    const name = `${m.bitrate} kbps ${m.format.toUpperCase()}`;
    if (playsProgressive(m.format)) direct.push({ label: name, url: m.url, hls: false });
    if (m.hls_url) hls.push({ label: `${name} (HLS)`, url: m.hls_url, hls: true });
  }
  const preferHls = np.station.hls_preferred || new URLSearchParams(location.search).get("hls") === "1";
  return preferHls ? [...hls, ...direct] : [...direct, ...hls];
}

function updateSources(np: NowPlaying): void {
  const next = sourcesOf(np);
  if (JSON.stringify(next) === JSON.stringify(sources)) return;
  const chosen = sources[select.selectedIndex]?.label;
  sources = next;
  select.replaceChildren(...sources.map((s, i) => el("option", { value: String(i) }, s.label)));
  const keep = sources.findIndex((s) => s.label === chosen);
  select.selectedIndex = keep >= 0 ? keep : 0;
  select.hidden = sources.length < 2;
  play.disabled = sources.length === 0;
}

play.addEventListener("click", () => {
  if (player.playing) player.stop();
  else player.play(sources[select.selectedIndex]);
});
select.addEventListener("change", () => {
  if (player.playing) player.play(sources[select.selectedIndex]);
});
volume.addEventListener("input", () => {
  player.audio.volume = Number(volume.value);
});

if (opts.requests) {
  const requests = new Requests(opts.slug);
  view.root.append(requests.root);
  requests.start();
}

// EventSource reconnects by itself and is sent the whole state again when it does.
const feed = new EventSource(`/api/nowplaying/${encodeURIComponent(opts.slug)}/events`);
feed.addEventListener("nowplaying", (e) => {
  const np = JSON.parse((e as MessageEvent<string>).data) as NowPlaying;
  view.update(np);
  updateSources(np);
  mount.dataset.updates = String(Number(mount.dataset.updates ?? "0") + 1);
});
