// The web app in Debian's chromium (playwright-core, which never downloads a browser): a fan and
// a creator, each in a browser context of their own, sign in by link and chat. Prints one JSON
// object with what each step saw; screenshots of every page go to ARTIFACT_DIR. IMAGE is a
// picture the fan attaches.
//
//   node tests/browser/app.mjs APP_URL FAN_TOKEN CREATOR_TOKEN ARTIFACT_DIR IMAGE
//
// Every wait is bounded; a step that times out is recorded with its error and the run goes on
// to print the JSON. The exit code is 0 whenever the JSON was printed: the test judges it.
import { chromium } from "playwright-core";
import path from "node:path";

const [app, fanToken, creatorToken, artifacts, image] = process.argv.slice(2);
if (!image) {
  console.error("usage: app.mjs APP_URL FAN_TOKEN CREATOR_TOKEN ARTIFACT_DIR IMAGE");
  process.exit(2);
}
const WAIT = { timeout: 10000 };
const result = { steps: {}, console: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});

// The creator's WebSockets go through a route the script can cut, as a lost network would: while
// `offline`, new ones are closed at once (socket.io-client keeps retrying).
const link = { offline: false, open: [] };

async function page(name, token, cuttable = false) {
  const context = await browser.newContext();
  const p = await context.newPage();
  if (cuttable) {
    await p.routeWebSocket(/\/socket\.io\//, (ws) => {
      if (link.offline) return ws.close();
      link.open.push({ ws, server: ws.connectToServer() });
    });
  }
  p.on("console", (m) => result.console.push(`${name} ${m.type()}: ${m.text()}`));
  p.on("pageerror", (e) => result.console.push(`${name} pageerror: ${e.message}`));
  await p.goto(`${app}#token=${encodeURIComponent(token)}`, WAIT);
  return p;
}

async function step(name, fn) {
  try {
    result.steps[name] = (await fn()) ?? true;
  } catch (e) {
    result.steps[name] = { error: String(e.message ?? e).split("\n")[0] };
  }
}

/// A series of the control plane's /metrics, as a number.
async function metric(name) {
  const text = await (await fetch(new URL("/metrics", app))).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/// Polls `cond` until it holds, for at most WAIT.
async function until(cond) {
  const deadline = Date.now() + WAIT.timeout;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${WAIT.timeout} ms: ${cond}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const shot = (p, name) => p.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
const open = async (p, user) => {
  await p.fill("[data-testid=start-user]", user);
  await p.click("[data-testid=start] button");
  await p.waitForSelector("[data-testid=compose]", WAIT);
};

try {
  const fan = await page("fan", fanToken);
  const creator = await page("creator", creatorToken, true);
  await step("signed_in", async () => ({
    // The name element is in the page from the start and filled once the profile loads.
    fan: await fan.textContent("[data-testid=me]:not(:empty)", WAIT),
    creator: await creator.textContent("[data-testid=me]:not(:empty)", WAIT),
    address_has_token: fan.url().includes("token="),
  }));
  await step("open", async () => {
    await open(creator, "fan-1");
    await open(fan, "creator-1");
  });
  await step("typing_shows", async () => {
    await fan.type("[data-testid=compose]", "Hi Cleo 🎧", { delay: 20 });
    await creator.waitForSelector("[data-testid=typing]:not([hidden])", WAIT);
    return await creator.textContent("[data-testid=typing]");
  });
  await step("message_arrives", async () => {
    await fan.click("[data-testid=send]");
    const got = creator.locator("[data-testid=message] .text", { hasText: "Hi Cleo 🎧" });
    await got.waitFor(WAIT);
    return await got.textContent();
  });
  await step("typing_goes", async () => {
    await creator.waitForSelector("[data-testid=typing]", { ...WAIT, state: "hidden" });
  });
  await step("read_mark", async () => {
    await fan.waitForSelector("[data-testid=seen]", WAIT);
    await shot(fan, "fan-conversation");
    return await fan.textContent("[data-testid=seen]");
  });
  await step("image_attached", async () => {
    // The attach button opens this input; the picked file is uploaded, then sent.
    await fan.setInputFiles("[data-testid=attach-file]", image);
    // Loaded and decoded: an image that failed to load has no natural width.
    const loaded = (p) =>
      p.waitForFunction(() => {
        const img = document.querySelector("[data-testid=attachment-image]");
        return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : false;
      }, null, WAIT);
    const creatorWidth = await (await loaded(creator)).jsonValue();
    const fanWidth = await (await loaded(fan)).jsonValue();
    await shot(creator, "creator-image");
    return { creator: creatorWidth, fan: fanWidth };
  });
  await step("unread_badge", async () => {
    await fan.goto(`${app}#/`, WAIT);
    await fan.waitForSelector("[data-testid=conversation-creator-1]", WAIT);
    await creator.fill("[data-testid=compose]", "Thanks! See you Friday ✨");
    await creator.click("[data-testid=send]");
    const badge = fan.locator("[data-testid=conversation-creator-1] [data-testid=unread]");
    await badge.waitFor(WAIT);
    await shot(fan, "fan-list");
    await shot(creator, "creator-conversation");
    return await badge.textContent();
  });
  await step("badge_clears", async () => {
    await fan.click("[data-testid=conversation-creator-1] a");
    await fan.locator("[data-testid=message] .text", { hasText: "See you Friday" }).waitFor(WAIT);
    await fan.goto(`${app}#/`, WAIT);
    await fan.waitForSelector("[data-testid=conversation-creator-1]", WAIT);
    // The list is read again on every visit: wait for one without a badge.
    await fan.waitForSelector("[data-testid=conversation-creator-1] [data-testid=unread]", {
      ...WAIT,
      state: "detached",
    });
  });
  await step("bell", async () => {
    const count = fan.locator("[data-testid=bell-count]");
    await count.waitFor(WAIT);
    const before = await count.textContent();
    await fan.click("[data-testid=bell]");
    await fan.waitForSelector("[data-testid=notification]", WAIT);
    await shot(fan, "fan-notifications");
    await fan.waitForSelector("[data-testid=bell-count]", { ...WAIT, state: "hidden" });
    return { before, items: await fan.locator("[data-testid=notification]").count() };
  });
  await step("reconnect_replays", async () => {
    // The creator's tab loses its connection; the server sees it go (only the fan is left).
    link.offline = true;
    for (const { ws, server } of link.open.splice(0)) {
      await server.close();
      await ws.close();
    }
    await until(async () => (await metric("onda_realtime_connections")) === 1);
    await open(fan, "creator-1");
    await fan.fill("[data-testid=compose]", "While you were away 📡");
    await fan.click("[data-testid=send]");
    await fan.locator("[data-testid=message] .text", { hasText: "While you were away" }).waitFor(WAIT);
    // Back online: socket.io-client reconnects with the newest offset it saw.
    link.offline = false;
    const got = creator.locator("[data-testid=message] .text", { hasText: "While you were away" });
    // socket.io-client retries with backoff, and an attempt made while the link was cut can sit
    // for its 20 s connect timeout (a WebSocket the route closes before it opened is not always
    // seen failing at once): the replay may come after more than one attempt.
    await got.waitFor({ timeout: 60000 });
    await shot(creator, "creator-after-reconnect");
    return {
      text: await got.textContent(),
      shown: await got.count(),
      recovered: await metric('onda_realtime_recoveries_total{outcome="complete"}'),
    };
  });
} catch (e) {
  result.error = String(e.message ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
