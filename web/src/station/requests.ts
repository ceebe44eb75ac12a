// Song requests on the station page and the embed: search the station's requestable library
// (`GET /api/station/{slug}/requests?q=`) and request a track
// (`POST /api/station/{slug}/request/{request_id}`); the answer's sentence — accepted, or why
// not (played too recently, the artist too, this address's limit) — is shown as it comes. The
// panel appears only when the station takes requests.

import { el } from "../ui";
import type { Song } from "./view";

interface Requestable {
  request_id: string;
  song: Song;
}

/// The sentence of an answer: a problem's `detail`, or the success's `message`.
async function sentence(resp: Response): Promise<string> {
  try {
    const body = await resp.json();
    return String(body.detail ?? body.message ?? body.title ?? resp.statusText);
  } catch {
    return resp.statusText || `HTTP ${resp.status}`;
  }
}

export class Requests {
  readonly root = el("section", { class: "requests", "data-testid": "requests", hidden: "" });
  private input = el("input", { type: "search", placeholder: "Search songs to request", "data-testid": "request-search" });
  private results = el("ul", { class: "results", "data-testid": "request-results" });
  private message = el("p", { class: "message", "data-testid": "request-message", role: "status" });
  private base: string;
  private seq = 0;
  private debounce: number | undefined;

  constructor(slug: string) {
    this.base = `/api/station/${encodeURIComponent(slug)}`;
    this.root.append(el("h2", {}, "Request a song"), this.input, this.message, this.results);
    this.input.addEventListener("input", () => {
      window.clearTimeout(this.debounce);
      this.debounce = window.setTimeout(() => this.search(), 250);
    });
  }

  /// Shows the panel when the station takes requests (its list answers), with the first page.
  async start(): Promise<void> {
    if (await this.search()) this.root.hidden = false;
  }

  private async search(): Promise<boolean> {
    const seq = ++this.seq;
    const q = this.input.value.trim();
    const resp = await fetch(`${this.base}/requests${q ? `?q=${encodeURIComponent(q)}` : ""}`).catch(() => null);
    if (!resp?.ok || seq !== this.seq) return false;
    const body = await resp.json();
    const items: Requestable[] = Array.isArray(body) ? body : body.items ?? [];
    this.results.replaceChildren(
      ...items.map((r) => {
        const li = el("li", { "data-testid": "request-item" });
        const button = el("button", { type: "button", "data-testid": "request-button" }, "Request");
        button.addEventListener("click", () => this.request(r, button));
        li.append(el("span", { class: "text" }, r.song.text || r.song.title), button);
        return li;
      }),
    );
    if (!items.length) this.results.append(el("li", { class: "none" }, q ? "No song matches." : "No songs to request."));
    return true;
  }

  private async request(r: Requestable, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    const resp = await fetch(`${this.base}/request/${encodeURIComponent(r.request_id)}`, { method: "POST" }).catch(() => null);
    button.disabled = false;
    if (!resp) {
      this.show("The request did not reach the station; try again.", false);
      return;
    }
    this.show(await sentence(resp), resp.ok);
  }

  private show(text: string, ok: boolean): void {
    this.message.textContent = text;
    this.message.className = `message ${ok ? "ok" : "refused"}`;
    this.message.dataset.ok = String(ok);
  }
}
