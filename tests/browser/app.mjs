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

async function page(name, token) {
  const context = await browser.newContext();
  const p = await context.newPage();
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

const shot = (p, name) => p.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
const open = async (p, user) => {
  await p.fill("[data-testid=start-user]", user);
  await p.click("[data-testid=start] button");
  await p.waitForSelector("[data-testid=compose]", WAIT);
};

try {
  const fan = await page("fan", fanToken);
  const creator = await page("creator", creatorToken);
  await step("signed_in", async () => ({
    fan: await fan.textContent("[data-testid=me]", WAIT),
    creator: await creator.textContent("[data-testid=me]", WAIT),
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
} catch (e) {
  result.error = String(e.message ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
