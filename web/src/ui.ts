// Small DOM and formatting helpers shared by the app's pages. User text is always set as
// textContent, never parsed as HTML.

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/// Digits after the point of `currency` (2 for USD, 0 for JPY): amounts are integer minor units.
function fractionDigits(currency: string): number {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    return 2;
  }
}

/// `amount` minor units of `currency` as the reader's locale writes money ("$4.99").
export function money(amount: number, currency: string): string {
  const digits = fractionDigits(currency);
  const value = amount / 10 ** digits;
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(value);
  } catch {
    return `${value.toFixed(digits)} ${currency}`;
  }
}

/// A money figure: the formatted text, with the raw minor units in `data-amount` for programs.
export function amountEl(testid: string, amount: number, currency: string): HTMLElement {
  return el("strong", { "data-testid": testid, "data-amount": String(amount) }, money(amount, currency));
}

/// A date and time in the reader's locale.
export function when(iso: string): string {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/// A short error line under a form (replaced by the next one).
export function say(where: HTMLElement, text: string, ok = false) {
  where.textContent = text;
  where.className = ok ? "note ok" : "note error";
  where.hidden = false;
}

/// Repeats `fn` every `ms` while `node` is in the page (it stops once the page moved on).
export function whileShown(node: Node, ms: number, fn: () => Promise<unknown> | unknown) {
  const timer = window.setInterval(async () => {
    if (!node.isConnected) {
      window.clearInterval(timer);
      return;
    }
    try {
      await fn();
    } catch {
      // A missed refresh is retried at the next tick.
    }
  }, ms);
}
