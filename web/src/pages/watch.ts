// The watch page (`/app/watch/{slug}`): a live stream for a signed-in viewer. The server's one
// membership check decides: an entitled viewer gets a playback token and hls.js plays it in
// low-latency mode; anyone else sees the paywall with what would let them in (subscribe to the
// creator, or buy the stream), paid from their wallet, and then plays. Tips go to the creator
// from the same wallet and show in the stream's chat (pages/chat.ts) beside the player. The
// viewer count and the live state come from the chat room's events (`viewer-count` every 5 s,
// `stream-started` and `stream-ended` at once) and are read again every few seconds.
import type Hls from "hls.js";
import type { Socket } from "socket.io-client";
import { Api, ApiError, AccessGrant, Profile, StreamView, newKey } from "../api";
import { amountEl, el, money, say, whileShown } from "../ui";
import { ChatPanel } from "./chat";

/// Tip amounts offered, in minor units (those under the creator's minimum are left out).
const TIP_AMOUNTS = [100, 200, 500, 1000];

export class WatchPage {
  private stream!: StreamView;
  private hls: Hls | null = null;
  private playing = false;
  private video = el("video", { "data-testid": "video", controls: "", playsinline: "", muted: "" });
  private stage = el("div", { class: "stage", "data-testid": "stage" });
  private viewers = el("span", { class: "viewers", "data-testid": "viewers" });
  private live = el("span", { class: "live-badge", "data-testid": "live-state" });

  private chat: ChatPanel | null = null;

  constructor(
    private api: Api,
    private me: Profile,
    private view: HTMLElement,
    private socket: Socket,
  ) {
    // Autoplay is allowed muted; the viewer unmutes with the controls.
    this.video.muted = true;
  }

  async show(slug: string) {
    this.view.replaceChildren(el("p", {}, "Loading…"));
    try {
      this.stream = await this.api.stream(slug);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      this.view.replaceChildren(el("p", { class: "banner", "data-testid": "watch-error" }, e.message));
      return;
    }
    const s = this.stream;
    const page = el("section", { class: "watch", "data-testid": "watch" });
    const head = el("header", { class: "watch-head" });
    head.append(
      el("h1", { "data-testid": "stream-name" }, s.name),
      this.live,
      this.viewers,
    );
    const by = el("p", { class: "by" });
    if (s.creator) {
      const page = `/app/creator/${encodeURIComponent(s.creator.id)}`;
      by.append("by ", el("a", { href: page, "data-testid": "creator-link" }, s.creator.display_name));
    }
    const main = el("div", { class: "watch-main" });
    main.append(this.stage);
    if (s.creator && s.creator.id !== this.me.id) main.append(this.tipBar(s));
    const body = el("div", { class: "watch-body" });
    body.append(main);
    // Chat needs the stream's creator (moderation is theirs).
    if (s.creator) {
      this.chat = new ChatPanel(this.socket, this.me.id, s.id, s.currency, {
        viewers: (n) => {
          this.stream = { ...this.stream, viewers: n };
          this.figures(this.stream);
        },
        live: (on) => {
          if (on === this.stream.publishing) return;
          this.stream = { ...this.stream, publishing: on };
          this.figures(this.stream);
          if (on && this.stream.entitled && !this.playing) this.play();
        },
      });
      body.append(this.chat.node);
    }
    page.append(head, by, body);
    this.view.replaceChildren(page);
    this.figures(s);
    if (s.entitled) await this.play();
    else this.paywall(s.grant);
    // Joined when entitled; otherwise the chat says what would let the viewer in.
    const closed =
      s.grant?.action === "subscribe"
        ? `Subscribe to ${s.creator?.display_name ?? "the creator"} to watch and chat.`
        : s.grant?.action === "purchase"
          ? "Buy the stream to watch and chat."
          : undefined;
    await this.chat?.join(closed);
    whileShown(page, 5000, () => this.refresh());
  }

  /// The viewer count and live state, and playback once the stream goes live.
  private async refresh() {
    this.stream = await this.api.stream(this.stream.slug);
    this.figures(this.stream);
    if (this.stream.entitled && this.stream.publishing && !this.playing) await this.play();
  }

  private figures(s: StreamView) {
    this.viewers.textContent = `👁 ${s.viewers}`;
    this.viewers.dataset.count = String(s.viewers);
    this.live.textContent = s.publishing ? "LIVE" : "offline";
    this.live.classList.toggle("on", s.publishing);
  }

  // Playback.

  private async play() {
    let token;
    try {
      token = await this.api.playback(this.stream.id);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      if (e.problem?.grant) return this.paywall(e.problem.grant);
      this.stage.replaceChildren(el("p", { class: "banner" }, e.message));
      return;
    }
    if (!this.stream.publishing) {
      this.stage.replaceChildren(
        el("p", { class: "offline", "data-testid": "offline" }, "The stream is offline: it starts playing here when the creator goes live."),
      );
      return;
    }
    this.playing = true;
    this.stage.replaceChildren(this.video);
    const { default: Hls } = await import("hls.js");
    if (Hls.isSupported()) {
      this.hls?.destroy();
      const hls = new Hls({ lowLatencyMode: true });
      this.hls = hls;
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (!d.fatal) return;
        if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
          return;
        }
        // A network failure that lasts (the stream ended, the token expired): ask again.
        hls.destroy();
        this.hls = null;
        this.playing = false;
      });
      hls.loadSource(token.watch_path);
      hls.attachMedia(this.video);
    } else {
      // Safari plays HLS itself.
      this.video.src = token.watch_path;
    }
    this.video.play().catch(() => undefined);
  }

  // The paywall.

  private paywall(grant: AccessGrant | null) {
    const s = this.stream;
    const box = el("div", { class: "paywall", "data-testid": "paywall" });
    const name = s.creator?.display_name ?? "the creator";
    const note = el("p", { class: "note", "data-testid": "paywall-note" });
    note.hidden = true;
    const balance = el("p", { class: "balance" });
    if (grant?.action === "subscribe" && grant.price != null && grant.creatorId) {
      const creatorId = grant.creatorId;
      box.append(el("h2", {}, `This stream is for ${name}'s subscribers`));
      const btn = el("button", { "data-testid": "subscribe" }, `Subscribe for ${money(grant.price, grant.currency)}/month`);
      this.payButton(btn, note, (key) => this.api.subscribe(creatorId, key));
      box.append(btn);
    } else if (grant?.action === "purchase" && grant.price != null) {
      box.append(el("h2", {}, "This stream is pay-per-view"));
      const btn = el("button", { "data-testid": "buy" }, `Buy for ${money(grant.price, grant.currency)}`);
      this.payButton(btn, note, (key) => this.api.purchase(s.id, key));
      box.append(btn);
    } else {
      box.append(el("h2", {}, "This stream is not open to you"), el("p", {}, "Only the platform can let you in."));
    }
    box.append(balance, note);
    this.stage.replaceChildren(box);
    this.api.wallet().then(
      (w) => balance.replaceChildren("Your wallet: ", amountEl("paywall-balance", w.balance, w.currency)),
      () => undefined,
    );
  }

  /// A button that pays from the wallet once (one idempotency key per operation, kept for
  /// retries after a network failure) and then plays.
  private payButton(btn: HTMLButtonElement, note: HTMLElement, pay: (key: string) => Promise<unknown>) {
    let key = newKey();
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        await pay(key);
        key = newKey();
        this.stream = await this.api.stream(this.stream.slug);
        this.figures(this.stream);
        await this.play();
        await this.chat?.join();
      } catch (e) {
        if (!(e instanceof ApiError)) {
          say(note, "The request did not get through; try again.");
          btn.disabled = false;
          return;
        }
        // Answered: the next attempt is another operation.
        key = newKey();
        say(note, e.status === 402 ? `${e.message} Add funds to your wallet first.` : e.message);
        btn.disabled = false;
      }
    });
  }

  // Tips.

  private tipBar(s: StreamView): HTMLElement {
    const creator = s.creator!;
    const bar = el("form", { class: "tips", "data-testid": "tips" });
    const message = el("input", { name: "message", maxlength: "200", placeholder: "Say something with your tip 💜", "data-testid": "tip-message" });
    const status = el("p", { class: "note", "data-testid": "tip-status" });
    status.hidden = true;
    const amounts = TIP_AMOUNTS.filter((a) => a >= creator.tip_minimum);
    if (amounts.length === 0) amounts.push(creator.tip_minimum);
    bar.append(el("span", {}, "Tip:"));
    for (const amount of amounts) {
      const b = el("button", { type: "button", "data-testid": `tip-${amount}` }, money(amount, s.currency));
      b.addEventListener("click", () => this.tip(bar, amount, message, status));
      bar.append(b);
    }
    bar.append(message, status);
    bar.addEventListener("submit", (e) => e.preventDefault());
    return bar;
  }

  /// A tip whose answer never came: trying the same tip again sends its key again, so it is
  /// made at most once.
  private unanswered: { amount: number; text: string; key: string } | null = null;

  private async tip(bar: HTMLElement, amount: number, message: HTMLInputElement, status: HTMLElement) {
    const s = this.stream;
    const text = message.value.trim();
    const same = this.unanswered && this.unanswered.amount === amount && this.unanswered.text === text;
    const key = same ? this.unanswered!.key : newKey();
    const buttons = [...bar.querySelectorAll("button")];
    buttons.forEach((b) => (b.disabled = true));
    try {
      this.unanswered = { amount, text, key };
      // With the stream, so the tip shows highlighted in its chat.
      await this.api.tip(s.creator!.id, amount, text, key, s.id);
      this.unanswered = null;
      say(status, `You tipped ${s.creator!.display_name} ${money(amount, s.currency)}. Thank you!`, true);
      message.value = "";
    } catch (e) {
      if (e instanceof ApiError) this.unanswered = null;
      say(status, e instanceof ApiError ? e.message : "The tip did not get through; try again.");
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }
}
