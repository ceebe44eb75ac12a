// What a station page or an embedded player shows, from its URL: `/stations/{slug}` is the full
// public page; `/embed/{slug}?theme=dark&accent=%23e4572e&layout=compact&history=0&requests=1&
// volume=1&cover=1` is the player another site embeds (the panel's
// `GET /v1/stations/{id}/embed` writes that URL and its iframe snippet).

export interface Options {
  slug: string;
  embed: boolean;
  theme: "light" | "dark";
  /// A CSS colour (#rgb or #rrggbb) or null for the default.
  accent: string | null;
  layout: "full" | "compact";
  history: boolean;
  requests: boolean;
  volume: boolean;
  cover: boolean;
}

function flag(q: URLSearchParams, name: string, dflt: boolean): boolean {
  const v = q.get(name);
  if (v === null) return dflt;
  return v === "1" || v === "true" || v === "yes";
}

export function parseOptions(loc: Location): Options {
  const parts = loc.pathname.split("/").filter(Boolean);
  const embed = parts[0] === "embed";
  const slug = decodeURIComponent(parts[1] ?? "");
  const q = new URLSearchParams(loc.search);
  const accent = q.get("accent");
  const layout = q.get("layout") === "compact" ? "compact" : "full";
  return {
    slug,
    embed,
    theme: q.get("theme") === "dark" ? "dark" : "light",
    accent: accent && /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i.test(accent) ? (accent.startsWith("#") ? accent : `#${accent}`) : null,
    layout,
    // The full page shows everything; an embed shows what its options ask for.
    history: flag(q, "history", layout === "full"),
    requests: flag(q, "requests", !embed),
    volume: flag(q, "volume", true),
    cover: flag(q, "cover", true),
  };
}
