// The wallet page (`/app/wallet`): the balance and the history of the signed-in user's wallet,
// their subscriptions, and for creators their earnings per day and source, a payout request
// form and their payouts. Everything is read from the user-token routes of the money API.
import { Api, ApiError, LedgerTransaction, Profile, newKey } from "../api";
import { amountEl, el, money, say, when } from "../ui";

/// What a ledger source is called on the page.
const SOURCES: Record<string, string> = {
  credit: "Top-up",
  tip: "Tip",
  purchase: "Pay-per-view",
  subscription: "Subscription",
  call: "Call",
  payout: "Payout",
  refund: "Refund",
  adjustment: "Adjustment",
};

export class WalletPage {
  constructor(
    private api: Api,
    private me: Profile,
    private view: HTMLElement,
  ) {}

  async show() {
    const page = el("section", { class: "wallet", "data-testid": "wallet" });
    page.append(el("h1", {}, "Wallet"));
    this.view.replaceChildren(page);
    try {
      const [wallet, history, subs] = await Promise.all([this.api.wallet(), this.api.transactions(), this.api.subscriptions()]);
      const figures = el("p", { class: "figures" });
      figures.append("Balance: ", amountEl("balance", wallet.balance, wallet.currency));
      if (wallet.earnings !== undefined) figures.append("  ·  Earnings: ", amountEl("earnings", wallet.earnings, wallet.currency));
      page.append(figures);
      if (subs.items.length > 0) {
        const list = el("ul", { class: "plain", "data-testid": "subscriptions" });
        for (const s of subs.items) {
          const price = s.price != null ? ` at ${money(s.price, s.currency)}/month` : "";
          const until = s.renews ? `renews ${when(s.endsAt)}` : `until ${when(s.endsAt)}`;
          list.append(el("li", { "data-testid": "subscription" }, `${s.creatorId}${price}: ${s.status}, ${until}`));
        }
        page.append(el("h2", {}, "Subscriptions"), list);
      }
      page.append(el("h2", {}, "History"), this.history(history.items));
      if (this.me.creator) await this.creator(page, wallet.currency, wallet.earnings ?? 0);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      page.append(el("p", { class: "banner" }, e.message));
    }
  }

  /// The wallet's transactions, newest first, each with what it did to this user's accounts.
  private history(items: LedgerTransaction[]): HTMLElement {
    if (items.length === 0) return el("p", { "data-testid": "no-history" }, "Nothing yet.");
    const table = el("table", { class: "history", "data-testid": "history" });
    const head = el("tr");
    for (const h of ["When", "What", "With", "Amount"]) head.append(el("th", {}, h));
    table.append(head);
    const mine = new Set([`wallet:${this.me.id}`, `earnings:${this.me.id}`]);
    for (const t of items) {
      const delta = t.entries.filter((e) => mine.has(e.account)).reduce((sum, e) => sum + e.amount, 0);
      const other = t.user_id === this.me.id ? (t.counterparty_id ?? "") : t.user_id;
      const row = el("tr", { "data-testid": "transaction", "data-source": t.source, "data-delta": String(delta) });
      row.append(
        el("td", {}, when(t.created_at)),
        el("td", {}, SOURCES[t.source] ?? t.source),
        el("td", {}, other),
        el("td", { class: delta < 0 ? "out" : "in" }, `${delta < 0 ? "−" : "+"}${money(Math.abs(delta), t.currency)}`),
      );
      table.append(row);
    }
    return table;
  }

  /// A creator's earnings per day and source, the payout form and their payouts.
  private async creator(page: HTMLElement, currency: string, earnings: number) {
    const [report, payouts] = await Promise.all([this.api.earnings(), this.api.payouts()]);
    page.append(el("h2", {}, "Earnings (last 30 days)"));
    if (report.days.length === 0) {
      page.append(el("p", { "data-testid": "no-earnings" }, "No earnings in these days."));
    } else {
      const sources = [...new Set(report.days.flatMap((d) => Object.keys(d.sources)))].sort();
      const table = el("table", { class: "history", "data-testid": "earnings-days" });
      const head = el("tr");
      for (const h of ["Day", ...sources.map((s) => SOURCES[s] ?? s), "Net"]) head.append(el("th", {}, h));
      table.append(head);
      for (const d of [...report.days].reverse()) {
        const row = el("tr", { "data-testid": "earnings-day", "data-net": String(d.total.net) });
        row.append(el("td", {}, d.day));
        for (const s of sources) row.append(el("td", {}, d.sources[s] ? money(d.sources[s].net, report.currency) : ""));
        row.append(el("td", {}, money(d.total.net, report.currency)));
        table.append(row);
      }
      page.append(table);
    }
    page.append(el("h2", {}, "Payouts"), this.payoutForm(currency, earnings));
    const list = el("ul", { class: "plain", "data-testid": "payouts" });
    for (const p of payouts.items) {
      const why = p.reason ? ` (${p.reason})` : "";
      list.append(el("li", { "data-testid": "payout", "data-status": p.status }, `${when(p.created_at)}: ${money(p.amount, p.currency)} ${p.status}${why}`));
    }
    page.append(list);
  }

  private payoutForm(currency: string, earnings: number): HTMLElement {
    const form = el("form", { class: "row", "data-testid": "payout-form" });
    const amount = el("input", { type: "number", min: "1", step: "1", max: String(earnings), "data-testid": "payout-amount", placeholder: "amount (minor units)" });
    const note = el("p", { class: "note", "data-testid": "payout-note" });
    note.hidden = true;
    const submit = el("button", { type: "submit", "data-testid": "payout-request" }, "Request payout");
    form.append(el("label", {}, `Pay out of ${money(earnings, currency)}: `), amount, submit, note);
    // One key per request: a retry after a lost answer sends it again and pays out once.
    let key = newKey();
    let keyFor = "";
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const value = Number(amount.value);
      if (keyFor !== amount.value) {
        key = newKey();
        keyFor = amount.value;
      }
      submit.disabled = true;
      try {
        const p = await this.api.requestPayout(value, key);
        keyFor = "";
        // The page again, with the lower earnings and the new payout, and the notice.
        await this.show();
        const fresh = this.view.querySelector<HTMLElement>("[data-testid=payout-note]");
        if (fresh) say(fresh, `Payout of ${money(p.amount, p.currency)} requested.`, true);
      } catch (err) {
        if (err instanceof ApiError) keyFor = "";
        say(note, err instanceof ApiError ? err.message : "The request did not get through; try again.");
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }
}
