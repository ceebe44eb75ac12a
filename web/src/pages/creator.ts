// A creator's page (`/app/creator/{id}`): who they are, whether they are online, their
// subscription, and the call button with the price per minute. When a call cannot be made the
// button is disabled and the reason is said in the words the gateway's `initiate-call` refusal
// would use (not taking calls, blocked, subscribers only, offline, not enough credit); the
// gateway still decides when the fan calls. Presence and availability are read again every few
// seconds. A creator opening their own page gets their call settings instead.
import { Api, ApiError, CreatorProfile, Profile } from "../api";
import type { Calls } from "../calls";
import { el, money, whileShown } from "../ui";
import { callSettingsForm } from "./calls";

/// Why `p` cannot be called now (the `initiate-call` error code and its sentence), or null.
export function whyNot(p: CreatorProfile, balance: number | null): [string, string] | null {
  const name = p.display_name;
  const price = p.calls.price_per_minute;
  if (!p.calls.available || price == null) return ["unavailable", `${name} does not take calls now.`];
  if (p.blocked) return ["blocked", `You and ${name} have blocked each other or one of you has: no calls.`];
  if (p.calls.subscribers_only && !p.subscribed) {
    const offer = p.subscription_price != null ? `: subscribe for ${money(p.subscription_price, p.currency)}/month` : "";
    return ["subscription_required", `Only ${name}'s subscribers can call them${offer}.`];
  }
  if (!p.online) return ["offline", `${name} is not online now.`];
  if (balance != null && balance < price) {
    return [
      "insufficient_funds",
      `A call with ${name} costs ${money(price, p.currency)} a minute; your wallet holds ${money(balance, p.currency)}, less than one minute.`,
    ];
  }
  return null;
}

export class CreatorPage {
  private button = el("button", { type: "button", class: "call-button", "data-testid": "call-button" });
  private reason = el("p", { class: "note", "data-testid": "call-reason" });
  private presence = el("span", { class: "presence", "data-testid": "creator-presence" });

  constructor(
    private api: Api,
    private me: Profile,
    private view: HTMLElement,
    private calls: Calls,
  ) {}

  async show(id: string) {
    const page = el("section", { class: "creator", "data-testid": "creator-page" });
    this.view.replaceChildren(page);
    if (id === this.me.id) return this.own(page);
    let p: CreatorProfile;
    try {
      p = await this.api.creator(id);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      page.append(el("p", { class: "banner", "data-testid": "creator-error" }, e.message));
      return;
    }
    const head = el("header", { class: "watch-head" });
    if (p.avatar_url) head.append(el("img", { src: p.avatar_url, alt: "", class: "avatar" }));
    head.append(el("h1", { "data-testid": "creator-name" }, p.display_name), this.presence);
    const facts = el("p", { class: "by" });
    if (p.subscription_price != null) facts.append(`Subscription ${money(p.subscription_price, p.currency)}/month · `);
    facts.append(el("a", { href: `/app/#/c/${encodeURIComponent(p.id)}`, "data-testid": "creator-message" }, "Send a message"));
    const box = el("div", { class: "call-box card" });
    box.append(el("h2", {}, "Video call"), this.button, this.reason);
    this.button.addEventListener("click", () => {
      if (!this.calls.busy()) this.calls.start(p.id, p.display_name);
    });
    page.append(head, facts, box);
    await this.update(p);
    whileShown(page, 3000, async () => this.update(await this.api.creator(id)));
  }

  private async update(p: CreatorProfile) {
    const balance = await this.api.wallet().then(
      (w) => w.balance,
      () => null,
    );
    this.presence.textContent = p.online ? "● online" : "○ offline";
    this.presence.classList.toggle("on", p.online);
    const price = p.calls.price_per_minute;
    this.button.hidden = price == null;
    if (price != null) {
      this.button.textContent = `📞 Call · ${money(price, p.currency)}/min`;
      this.button.dataset.price = String(price);
    }
    const why = whyNot(p, balance);
    this.button.disabled = why !== null;
    this.reason.dataset.code = why?.[0] ?? "";
    this.reason.textContent = why?.[1] ?? (p.calls.billing === "second" ? "Billed by the second." : "Each started minute is billed.");
    this.reason.className = why ? "note error" : "note";
  }

  /// A creator's own page: their call settings.
  private own(page: HTMLElement) {
    page.append(el("h1", { "data-testid": "creator-name" }, this.me.display_name));
    if (!this.me.creator) {
      page.append(el("p", {}, "This page is for creators."));
      return;
    }
    page.append(el("h2", {}, "Your calls"), callSettingsForm(this.api, this.me), el("a", { href: "/app/calls" }, "Your call history"));
  }
}
