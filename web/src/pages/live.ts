// The go-live page (`/app/live`): a creator's own streams with what OBS needs (the RTMP server
// and the stream key), who may watch and at what price, and the live figures (publishing,
// viewers), read again every few seconds. Only the creator's own streams are listed: the
// server answers `GET /v1/me/streams` with the streams whose creator the caller is.
import { Api, ApiError, CreatorStream, Profile, StreamAccess } from "../api";
import { el, money, say, whileShown } from "../ui";

export class LivePage {
  constructor(
    private api: Api,
    private me: Profile,
    private view: HTMLElement,
  ) {}

  async show() {
    const page = el("section", { class: "live", "data-testid": "go-live" });
    page.append(el("h1", {}, "Go live"));
    this.view.replaceChildren(page);
    if (!this.me.creator) {
      page.append(el("p", { "data-testid": "not-creator" }, "Going live is for creators."));
      return;
    }
    page.append(this.priceForm());
    let streams: CreatorStream[];
    try {
      streams = (await this.api.myStreams()).items;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      page.append(el("p", { class: "banner" }, e.message));
      return;
    }
    if (streams.length === 0) {
      page.append(el("p", { "data-testid": "no-streams" }, "You have no live stream yet: the platform creates yours."));
      return;
    }
    const cards = streams.map((s) => this.card(s));
    page.append(...cards.map((c) => c.node));
    whileShown(page, 3000, async () => {
      const fresh = (await this.api.myStreams()).items;
      for (const c of cards) {
        const s = fresh.find((f) => f.id === c.id);
        if (s) c.update(s);
      }
    });
  }

  /// The creator's monthly subscription price (`PATCH /v1/me`).
  private priceForm(): HTMLElement {
    const form = el("form", { class: "row", "data-testid": "subscription-form" });
    const input = el("input", { type: "number", min: "1", step: "1", name: "price", "data-testid": "subscription-price" });
    if (this.me.subscription_price != null) input.value = String(this.me.subscription_price);
    const note = el("p", { class: "note" });
    note.hidden = true;
    form.append(el("label", {}, "Subscription per month (minor units): "), input, el("button", { type: "submit" }, "Save"), note);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const price = input.value.trim() === "" ? null : Number(input.value);
      try {
        const u = await this.api.setSubscriptionPrice(price);
        this.me.subscription_price = u.subscription_price;
        say(note, price == null ? "You no longer sell a subscription." : "Saved.", true);
      } catch (err) {
        say(note, err instanceof ApiError ? err.message : "Not saved; try again.");
      }
    });
    return form;
  }

  private card(s: CreatorStream) {
    const node = el("article", { class: "card", "data-testid": "my-stream", "data-id": s.id });
    const state = el("span", { class: "live-badge", "data-testid": "live-status" });
    const viewers = el("span", { class: "viewers", "data-testid": "live-viewers" });
    const server = el("code", { "data-testid": "rtmp-url" });
    const key = el("input", { type: "password", readonly: "", "data-testid": "stream-key", value: s.stream_key, size: "40" });
    const reveal = el("button", { type: "button", "data-testid": "reveal-key" }, "Show");
    reveal.addEventListener("click", () => {
      key.type = key.type === "password" ? "text" : "password";
      reveal.textContent = key.type === "password" ? "Show" : "Hide";
    });
    const watch = el("a", { href: s.watch_page_path, "data-testid": "watch-link" }, "Open the watch page");
    const head = el("header", { class: "watch-head" });
    head.append(el("h2", {}, s.name), state, viewers);
    const step2 = el("li", {}, "Server: ");
    step2.append(server);
    const step3 = el("li", {}, "Stream Key: ");
    step3.append(key, reveal);
    const steps = el("ol", { class: "obs" });
    steps.append(
      el("li", {}, "Settings → Stream → Service: Custom…"),
      step2,
      step3,
      el("li", {}, "Output: keyframe interval 2 s. Then Start Streaming."),
    );
    node.append(head, el("h3", {}, "Stream from OBS"), steps, this.accessForm(s), watch);
    const update = (s: CreatorStream) => {
      server.textContent = s.rtmp_url ?? "not placed on a node yet: wait a moment";
      state.textContent = s.publishing ? "live" : "offline";
      state.classList.toggle("on", s.publishing);
      viewers.textContent = `👁 ${s.viewers} watching`;
      viewers.dataset.count = String(s.viewers);
    };
    update(s);
    return { id: s.id, node, update };
  }

  /// Who may watch: a creator sells a paid stream to subscribers or per view; a public or
  /// token stream is the platform's to change, so it is only shown.
  private accessForm(s: CreatorStream): HTMLElement {
    const paid = s.access === "subscribers" || s.access === "pay_per_view";
    if (!paid) {
      const text = s.access === "public" ? "Anyone may watch this stream." : "The platform lets viewers in with its own tokens.";
      return el("p", { "data-testid": "access" }, text);
    }
    const form = el("form", { class: "row", "data-testid": "access-form" });
    const mode = el("select", { name: "access", "data-testid": "access" });
    for (const [value, label] of [
      ["subscribers", "My subscribers"],
      ["pay_per_view", "Pay per view"],
    ]) {
      const o = el("option", { value }, label);
      o.selected = value === s.access;
      mode.append(o);
    }
    const price = el("input", { type: "number", min: "1", step: "1", name: "price", placeholder: "price (minor units)", "data-testid": "ppv-price" });
    if (s.price != null) price.value = String(s.price);
    const shown = el("span", { class: "price" }, s.price != null ? money(s.price, s.currency) : "");
    const note = el("p", { class: "note" });
    note.hidden = true;
    const sync = () => (price.hidden = mode.value !== "pay_per_view");
    mode.addEventListener("change", sync);
    sync();
    form.append(el("label", {}, "Who may watch: "), mode, price, shown, el("button", { type: "submit" }, "Save"), note);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const change: { access: StreamAccess; price?: number } = { access: mode.value as StreamAccess };
      if (mode.value === "pay_per_view" && price.value) change.price = Number(price.value);
      try {
        const saved = await this.api.updateMyStream(s.id, change);
        shown.textContent = saved.price != null ? money(saved.price, saved.currency) : "";
        say(note, "Saved.", true);
      } catch (err) {
        say(note, err instanceof ApiError ? err.message : "Not saved; try again.");
      }
    });
    return form;
  }
}
