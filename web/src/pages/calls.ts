// The calls page (`/app/calls`): a creator's call settings (available for calls, the price per
// minute, `PATCH /v1/me`), the relay-only setting for strict networks, and everyone's call
// history (`GET /v1/me/calls`): with whom, when, how long, what it cost and how it ended.
import { Api, ApiError, Call, Profile } from "../api";
import { icePolicy, setIcePolicy } from "../calls";
import { reasonText } from "../callview";
import { el, money, say, when } from "../ui";

/// Whether the creator takes calls and at what price per minute.
export function callSettingsForm(api: Api, me: Profile): HTMLElement {
  const form = el("form", { class: "row", "data-testid": "call-settings" });
  const available = el("input", { type: "checkbox", name: "available", "data-testid": "call-available" });
  available.checked = me.available_for_calls;
  const price = el("input", { type: "number", min: "1", step: "1", name: "price", placeholder: "minor units", "data-testid": "call-price" });
  if (me.call_price_per_minute != null) price.value = String(me.call_price_per_minute);
  const note = el("p", { class: "note", "data-testid": "call-settings-note" });
  note.hidden = true;
  const label = el("label", {});
  label.append(available, " Available for calls");
  form.append(label, el("label", {}, "Price per minute (minor units): "), price, el("button", { type: "submit", "data-testid": "call-settings-save" }, "Save"), note);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const perMinute = price.value.trim() === "" ? null : Number(price.value);
    try {
      const u = await api.setCallSettings({ available_for_calls: available.checked, call_price_per_minute: perMinute });
      Object.assign(me, u);
      say(note, u.available_for_calls && u.call_price_per_minute != null ? "Saved: fans can call you while you are online." : "Saved: you take no calls.", true);
    } catch (err) {
      say(note, err instanceof ApiError ? err.message : "Not saved; try again.");
    }
  });
  return form;
}

/// Relay-only calls: every packet through the TURN relay (for networks that block the rest).
function relaySetting(): HTMLElement {
  const box = el("input", { type: "checkbox", "data-testid": "call-relay" });
  box.checked = icePolicy() === "relay";
  box.addEventListener("change", () => setIcePolicy(box.checked ? "relay" : "all"));
  const label = el("label", {});
  label.append(box, " Send my calls through the relay only (for strict networks; ?ice=relay in the address does the same)");
  const p = el("p", {});
  p.append(label);
  return p;
}

export class CallsPage {
  constructor(
    private api: Api,
    private me: Profile,
    private view: HTMLElement,
  ) {}

  async show() {
    const page = el("section", { class: "calls", "data-testid": "calls-page" });
    page.append(el("h1", {}, "Calls"));
    this.view.replaceChildren(page);
    if (this.me.creator) page.append(el("h2", {}, "Taking calls"), callSettingsForm(this.api, this.me));
    page.append(relaySetting(), el("h2", {}, "History"));
    try {
      page.append(this.history((await this.api.myCalls()).items));
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      page.append(el("p", { class: "banner" }, e.message));
    }
  }

  private history(items: Call[]): HTMLElement {
    if (items.length === 0) return el("p", { "data-testid": "no-calls" }, "No calls yet.");
    const table = el("table", { class: "history", "data-testid": "call-history" });
    const head = el("tr");
    for (const h of ["When", "With", "Duration", "Cost", "How it ended"]) head.append(el("th", {}, h));
    table.append(head);
    for (const c of items) {
      const caller = c.callerId === this.me.id;
      const other = caller ? c.calleeId : c.callerId;
      const row = el("tr", { "data-testid": "call-row", "data-id": c.id, "data-amount": String(c.amount), "data-reason": c.reason ?? "" });
      const ended = c.state === "ended" ? reasonText(c.reason, caller ? "caller" : "callee", other, false) : "in progress";
      const mins = Math.floor(c.durationSecs / 60);
      row.append(
        el("td", {}, when(c.createdAt)),
        el("td", {}, `${caller ? "→" : "←"} ${other}`),
        el("td", {}, `${mins}:${String(c.durationSecs % 60).padStart(2, "0")}`),
        el("td", { class: c.amount === 0 ? "" : caller ? "out" : "in" }, money(c.amount, c.currency)),
        el("td", {}, c.reason === "hung_up" ? "Hung up" : ended),
      );
      table.append(row);
    }
    return table;
  }
}
