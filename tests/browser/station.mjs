// A radio station's public page and its embeddable player in Debian's chromium (playwright-core,
// which never downloads a browser). Prints one JSON object with what each step saw; screenshots
// go to ARTIFACT_DIR. The Rust test (tests/tests/integration/station_pages.rs) judges it.
//
//   node tests/browser/station.mjs CONFIG_JSON ARTIFACT_DIR
//
// CONFIG_JSON: { "api": "http://127.0.0.1:PORT", "slug": "…",
//   "mode": "page" | "failover",
//   "request": "Artist - Title" (page mode, optional: request this song and watch it play),
//   "hls": true (page mode, optional: also play the mount's HLS source through hls.js),
//   "killPid": 1234 (failover mode: the node process carrying the station, SIGKILLed while the
//   page plays) }
//
// Page mode: the page plays (audio.currentTime advances), the title changes at a track change
// without a reload and the track before shows in the history; HLS plays through hls.js; a
// request shows as the next song and then plays, and the same request again is refused with its
// reason; an embed in a page on another origin (a server on 127.0.0.2 started here) plays and
// shows the cover, in the light and the dark theme. Failover mode: the page plays, the carrying
// node is killed, and the player resumes by itself.
//
// Every wait is bounded; a step that fails is recorded with its error and the run goes on.
import { chromium } from "playwright-core";
import http from "node:http";
import path from "node:path";

const [configJson, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error("usage: station.mjs CONFIG_JSON ARTIFACT_DIR");
  process.exit(2);
}
const cfg = JSON.parse(configJson);
const WAIT = { timeout: 20000 };
const result = { steps: {}, console: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});

async function open(name, url) {
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 900, height: 900 } });
  const p = await context.newPage();
  p.on("console", (m) => result.console.push(`${name} ${m.type()}: ${m.text()}`));
  p.on("pageerror", (e) => result.console.push(`${name} pageerror: ${e.message}`));
  await p.goto(url, WAIT);
  return p;
}

async function step(name, fn) {
  try {
    result.steps[name] = (await fn()) ?? true;
  } catch (e) {
    result.steps[name] = { error: String(e.message ?? e).split("\n")[0] };
  }
}

const shot = (p, name) => p.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
const text = (p, id) => p.textContent(`[data-testid=${id}]`, WAIT);

/// The audio's currentTime once it is past `after` seconds.
const playedPast = (frame, after, timeout = WAIT.timeout) =>
  frame
    .waitForFunction(
      (t) => {
        const a = document.querySelector("[data-testid=audio]");
        return a && a.currentTime > t ? a.currentTime : false;
      },
      after,
      { timeout, polling: 200 },
    )
    .then((h) => h.jsonValue());

const currentTime = (frame) => frame.evaluate(() => document.querySelector("[data-testid=audio]").currentTime);

/// The title shown once it differs from `before` (and is not empty).
const titleOtherThan = (p, before, timeout = 40000) =>
  p
    .waitForFunction(
      (b) => {
        const t = document.querySelector("[data-testid=title]")?.textContent ?? "";
        return t && t !== b ? t : false;
      },
      before,
      { timeout, polling: 100 },
    )
    .then((h) => h.jsonValue());

const history = (p) => p.$$eval("[data-testid=history-item] .text", (els) => els.map((e) => e.textContent));

async function pageMode() {
  const page = await open("page", `${cfg.api}/stations/${cfg.slug}`);
  await step("page_shows_the_station", async () => {
    await page.waitForFunction(() => document.querySelector("[data-testid=title]")?.textContent, null, WAIT);
    return {
      document_title: await page.title(),
      name: await text(page, "station-name"),
      title: await text(page, "title"),
      artist: await text(page, "artist"),
      listeners: await text(page, "listeners"),
      art: await page.getAttribute("[data-testid=art]", "src"),
      sources: await page.$$eval("[data-testid=source] option", (os) => os.map((o) => o.textContent)),
    };
  });
  await step("page_plays", async () => {
    await page.click("[data-testid=play]");
    const t = await playedPast(page, 2);
    return { current_time: t, state: await page.getAttribute("[data-testid=station]", "data-state") };
  });
  await shot(page, "page-light-playing");
  await step("title_changes_without_reload", async () => {
    const updates = Number(await page.getAttribute("[data-testid=station]", "data-updates"));
    const before = await text(page, "title");
    const changedAt = Date.now();
    const after = await titleOtherThan(page, before);
    const shownAt = Date.now();
    // When the new track started, as the control plane knows it (Unix seconds).
    const np = await page.evaluate((u) => fetch(u).then((r) => r.json()), `${cfg.api}/api/nowplaying/${cfg.slug}`);
    const lagMs = shownAt - np.now_playing.played_at * 1000;
    // The history lists the track before the one now playing, newest first.
    await page.waitForFunction(
      (b) => [...document.querySelectorAll("[data-testid=history-item] .text")].some((e) => e.textContent.includes(b)),
      before,
      WAIT,
    );
    return {
      before,
      after,
      waited_ms: shownAt - changedAt,
      lag_ms: lagMs,
      history: await history(page),
      updates_before: updates,
      navigations: await page.evaluate(() => performance.getEntriesByType("navigation").length),
      still_playing: await playedPast(page, (await currentTime(page)) + 0.5),
    };
  });
  if (cfg.hls) {
    await step("hls_plays_through_hls_js", async () => {
      const options = await page.$$eval("[data-testid=source] option", (os) => os.map((o) => o.textContent));
      const index = options.findIndex((o) => o.includes("HLS"));
      if (index < 0) throw new Error(`no HLS source among ${JSON.stringify(options)}`);
      await page.selectOption("[data-testid=source]", String(index));
      // hls.js plays through Media Source Extensions: the element's src is a blob: URL.
      await page.waitForFunction(() => document.querySelector("[data-testid=audio]").src.startsWith("blob:"), null, WAIT);
      const start = await currentTime(page);
      const t = await playedPast(page, start + 3, 30000);
      return { source: options[index], current_time: t };
    });
  }
  if (cfg.request) await requests(page);
  await page.click("[data-testid=play]");
  await embeds();
}

async function requests(page) {
  await step("request_shows_as_next_and_plays", async () => {
    await page.waitForSelector("[data-testid=requests]:not([hidden])", WAIT);
    await page.fill("[data-testid=request-search]", cfg.request.split(" - ").pop());
    const item = page.locator("[data-testid=request-item]", { hasText: cfg.request });
    await item.first().waitFor(WAIT);
    await item.first().locator("[data-testid=request-button]").click();
    await page.waitForSelector("[data-testid=request-message][data-ok=true]", WAIT);
    const accepted = await text(page, "request-message");
    await page.waitForFunction(
      (r) => {
        const n = document.querySelector("[data-testid=next]");
        return n && n.textContent.includes(r) && n.dataset.requested === "true";
      },
      cfg.request,
      { timeout: 40000, polling: 100 },
    );
    const next = await text(page, "next");
    await shot(page, "page-request-next");
    await page.waitForFunction(
      (r) => {
        const t = document.querySelector("[data-testid=title]");
        return t && r.endsWith(t.textContent) && t.dataset.requested === "true";
      },
      cfg.request,
      { timeout: 40000, polling: 100 },
    );
    return { accepted, next, playing: await text(page, "title") };
  });
  await step("same_request_inside_the_gap_is_refused", async () => {
    const item = page.locator("[data-testid=request-item]", { hasText: cfg.request });
    await item.first().locator("[data-testid=request-button]").click();
    await page.waitForSelector("[data-testid=request-message][data-ok=false]", WAIT);
    return { refused: await text(page, "request-message") };
  });
}

/// A page on another origin (127.0.0.2, a port of its own) that embeds the player.
function otherOrigin() {
  const server = http.createServer((req, res) => {
    const q = new URL(req.url, "http://x").searchParams;
    const src = `${cfg.api}/embed/${cfg.slug}?theme=${q.get("theme")}&layout=full&history=1&cover=1&volume=1`;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html><head><meta charset="utf-8"><title>A listener's site</title></head>
      <body style="font-family:sans-serif;background:#eee"><h1>My station on my site</h1>
      <iframe id="player" src="${src}" width="560" height="600" style="border:0" allow="autoplay"></iframe></body></html>`);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.2", () => resolve(server)));
}

async function embeds() {
  const server = await otherOrigin();
  const site = `http://127.0.0.2:${server.address().port}/`;
  for (const theme of ["light", "dark"]) {
    await step(`embed_${theme}_plays_and_shows_the_cover`, async () => {
      const p = await open(`embed-${theme}`, `${site}?theme=${theme}`);
      const frame = await (await p.waitForSelector("#player", WAIT)).contentFrame();
      await frame.waitForFunction(() => document.querySelector("[data-testid=title]")?.textContent, null, WAIT);
      // The cover has loaded (a picture with a size), not merely been named.
      await frame.waitForFunction(() => {
        const img = document.querySelector("[data-testid=art]");
        return img && img.complete && img.naturalWidth > 0;
      }, null, WAIT);
      await frame.click("[data-testid=play]");
      const t = await playedPast(frame, 2);
      const sizes = await frame.evaluate(() =>
        [performance.getEntriesByType("navigation")[0], ...performance.getEntriesByType("resource")]
          .filter((e) => !e.name.includes("/listen/") && !e.name.includes("/art/") && !e.name.includes("/api/"))
          .map((e) => ({ name: e.name.replace(/^https?:\/\/[^/]+/, ""), encoded: e.encodedBodySize })),
      );
      await shot(p, `embed-${theme}`);
      return {
        current_time: t,
        art: await frame.getAttribute("[data-testid=art]", "src"),
        art_width: await frame.evaluate(() => document.querySelector("[data-testid=art]").naturalWidth),
        theme: await frame.evaluate(() => document.documentElement.className),
        page_bytes: sizes.reduce((n, e) => n + e.encoded, 0),
        files: sizes,
      };
    });
  }
  server.close();
}

async function failoverMode() {
  const page = await open("page", `${cfg.api}/stations/${cfg.slug}`);
  await step("page_plays", async () => {
    await page.waitForFunction(() => document.querySelector("[data-testid=title]")?.textContent, null, WAIT);
    await page.click("[data-testid=play]");
    return { current_time: await playedPast(page, 2) };
  });
  await step("player_resumes_after_the_node_is_killed", async () => {
    const before = await currentTime(page);
    process.kill(cfg.killPid, "SIGKILL");
    const killedAt = Date.now();
    // The gap: the player notices and reconnects through the redirector by itself.
    await page.waitForFunction(() => Number(document.querySelector("[data-testid=station]").dataset.reconnects) > 0, null, {
      timeout: 30000,
      polling: 100,
    });
    const reconnectedAfterMs = Date.now() - killedAt;
    await page.waitForSelector("[data-testid=station][data-state=playing]", { timeout: 30000 });
    const resumedAt = await currentTime(page);
    const t = await playedPast(page, resumedAt + 2, 30000);
    await shot(page, "page-after-failover");
    return {
      current_time_at_kill: before,
      reconnected_after_ms: reconnectedAfterMs,
      resumed_after_ms: Date.now() - killedAt,
      reconnects: Number(await page.getAttribute("[data-testid=station]", "data-reconnects")),
      current_time: t,
    };
  });
}

try {
  if (cfg.mode === "failover") await failoverMode();
  else await pageMode();
} catch (e) {
  result.error = String(e.message ?? e);
} finally {
  await browser.close();
  console.log(JSON.stringify(result));
}
