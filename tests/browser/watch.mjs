// The web app's live pages in Debian's chromium (playwright-core, which never downloads a
// browser): a fan opens a subscribers-only stream's watch page, sees the paywall (and the chat
// closed), subscribes from their wallet and the video plays (hls.js, low-latency mode); the
// creator's go-live page shows the RTMP server, the stream key and "live"; on the watch page
// fan and creator chat (with emoji), the fan's tip shows in both chats, and the creator deletes
// a message of the fan's, which goes from the fan's chat; the creator then sells the stream per
// view from the go-live page and the fan buys it ("Buy" on the watch page) and it plays again;
// the fan's wallet page shows the lower
// balance and the history; the creator's wallet shows the earnings and takes a payout request.
// Prints one JSON object with what each step saw; screenshots go to ARTIFACT_DIR.
//
//   node tests/browser/watch.mjs APP_URL SLUG FAN_TOKEN CREATOR_TOKEN ARTIFACT_DIR
//
// Every wait is bounded; a step that fails is recorded with its error and the run goes on to
// print the JSON. The exit code is 0 whenever the JSON was printed: the test judges it.
import { chromium } from "playwright-core";
import path from "node:path";

const [app, slug, fanToken, creatorToken, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error("usage: watch.mjs APP_URL SLUG FAN_TOKEN CREATOR_TOKEN ARTIFACT_DIR");
  process.exit(2);
}
const WAIT = { timeout: 15000 };
const result = { steps: {}, console: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});

async function page(name, url) {
  // Money is written as en-US writes it ("$4.99"), whatever the machine's locale.
  const context = await browser.newContext({ locale: "en-US" });
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
const amount = async (p, testid) => Number(await p.getAttribute(`[data-testid=${testid}]`, "data-amount", WAIT));

/// The video's currentTime once it is past `after` seconds (polled in the page).
const playedPast = (p, after, timeout = WAIT.timeout) =>
  p
    .waitForFunction(
      (t) => {
        const v = document.querySelector("[data-testid=video]");
        return v && v.currentTime > t ? v.currentTime : false;
      },
      after,
      { timeout },
    )
    .then((h) => h.jsonValue());

try {
  const fan = await page("fan", `${app}watch/${slug}#token=${encodeURIComponent(fanToken)}`);
  await step("paywall", async () => {
    await fan.waitForSelector("[data-testid=paywall]", WAIT);
    const r = {
      name: await fan.textContent("[data-testid=stream-name]"),
      subscribe: await fan.textContent("[data-testid=subscribe]"),
      balance: await amount(fan, "paywall-balance"),
      video: await fan.locator("[data-testid=video]").count(),
      address_has_token: fan.url().includes("token="),
      // The chat refused the join: its note says what would let the fan in.
      chat_note: await fan.textContent("[data-testid=chat-note]:not([hidden])", WAIT),
    };
    await shot(fan, "fan-paywall");
    return r;
  });
  await step("subscribe_and_play", async () => {
    await fan.click("[data-testid=subscribe]");
    await fan.waitForSelector("[data-testid=video]", WAIT);
    // Playing: currentTime moves, and keeps moving a second later.
    const first = await playedPast(fan, 0, 30000);
    const later = await playedPast(fan, first + 1);
    await shot(fan, "fan-playing");
    return {
      first,
      later,
      paywall_gone: (await fan.locator("[data-testid=paywall]").count()) === 0,
      live: await fan.textContent("[data-testid=live-state]"),
    };
  });
  const creator = await page("creator", `${app}live#token=${encodeURIComponent(creatorToken)}`);
  await step("go_live", async () => {
    await creator.waitForSelector("[data-testid=my-stream]", WAIT);
    // The page reads its figures again every 3 s: wait for the stream to show live and watched.
    await creator.waitForSelector("[data-testid=live-status].on", WAIT);
    await creator.waitForSelector("[data-testid=live-viewers]:not([data-count='0'])", { timeout: 30000 });
    await creator.click("[data-testid=reveal-key]");
    const r = {
      status: await creator.textContent("[data-testid=live-status]"),
      viewers: Number(await creator.getAttribute("[data-testid=live-viewers]", "data-count")),
      rtmp_url: await creator.textContent("[data-testid=rtmp-url]"),
      stream_key: await creator.inputValue("[data-testid=stream-key]"),
      key_shown_as: await creator.getAttribute("[data-testid=stream-key]", "type"),
      access: await creator.inputValue("[data-testid=access]"),
      nav_live: await creator.isVisible("[data-testid=nav-live]"),
    };
    await shot(creator, "creator-go-live");
    return r;
  });

  // The creator watches too, from the go-live page's link: the chat with moderation controls.
  await step("creator_joins", async () => {
    await creator.click("[data-testid=watch-link]");
    await creator.waitForSelector("[data-testid=chat][data-role=creator]", WAIT);
    await fan.waitForSelector("[data-testid=chat][data-role=viewer]", WAIT);
    return {
      fan_chat_note_hidden: await fan.isHidden("[data-testid=chat-note]"),
    };
  });
  const line = (p, text) => p.locator("[data-testid=chat-message]", { hasText: text });
  await step("chat_round_trip", async () => {
    await fan.fill("[data-testid=chat-input]", "Hello Cleo ");
    await fan.click("[data-testid=emoji-toggle]");
    await fan.click("[data-testid=emoji] >> nth=0");
    await fan.click("[data-testid=chat-send]");
    await line(creator, "Hello Cleo").waitFor(WAIT);
    await creator.fill("[data-testid=chat-input]", "Welcome! 🎉");
    await creator.press("[data-testid=chat-input]", "Enter");
    await line(fan, "Welcome!").waitFor(WAIT);
    return {
      creator_saw: await line(creator, "Hello Cleo").locator(".text").textContent(),
      fan_saw: await line(fan, "Welcome!").locator(".text").textContent(),
      // Moderation controls: the creator has them on the fan's line, the fan none on the creator's.
      creator_ban_controls: await line(creator, "Hello Cleo").locator("[data-testid=chat-ban]").count(),
      fan_ban_controls: await line(fan, "Welcome!").locator("[data-testid=chat-ban]").count(),
    };
  });
  await step("tip", async () => {
    await fan.fill("[data-testid=tip-message]", "Great show 🎉");
    await fan.click("[data-testid=tip-200]");
    const ok = fan.locator("[data-testid=tip-status].ok");
    await ok.waitFor(WAIT);
    const tipLine = (p) => p.locator("[data-testid=chat-message][data-kind=tip]", { hasText: "Great show" });
    await tipLine(fan).waitFor(WAIT);
    await tipLine(creator).waitFor(WAIT);
    await shot(fan, "fan-chat");
    await shot(creator, "creator-chat");
    return {
      status: await ok.textContent(),
      fan_chat: await tipLine(fan).textContent(),
      creator_chat: await tipLine(creator).textContent(),
    };
  });
  await step("moderation_delete", async () => {
    await fan.fill("[data-testid=chat-input]", "spoiler: the ending 🙊");
    await fan.click("[data-testid=chat-send]");
    await line(fan, "spoiler").waitFor(WAIT);
    await line(creator, "spoiler").locator("[data-testid=chat-delete]").click();
    await line(fan, "spoiler").waitFor({ ...WAIT, state: "detached" });
    await line(creator, "spoiler").waitFor({ ...WAIT, state: "detached" });
    // The room's viewer count reached the fan's page (the edges count both players).
    await fan.waitForSelector("[data-testid=viewers]:not([data-count='0'])", { timeout: 20000 });
    return {
      fan_lines: await fan.locator("[data-testid=chat-message]").count(),
      viewers: Number(await fan.getAttribute("[data-testid=viewers]", "data-count")),
    };
  });

  // The creator sells the stream per view from the go-live page; the fan, a subscriber but
  // not a buyer, sees "Buy" on the watch page, buys from their wallet, and it plays again.
  await step("pay_per_view", async () => {
    await creator.click("[data-testid=nav-live]");
    const form = creator.locator("[data-testid=access-form]");
    await form.waitFor(WAIT);
    await form.locator("[data-testid=access]").selectOption("pay_per_view");
    await form.locator("[data-testid=ppv-price]").fill("300");
    await form.locator("button[type=submit]").click();
    await form.locator(".note.ok").waitFor(WAIT);
    await fan.goto(`${app}watch/${slug}`, WAIT);
    const buy = fan.locator("[data-testid=buy]");
    await buy.waitFor(WAIT);
    const offer = await buy.textContent();
    const video_before = await fan.locator("[data-testid=video]").count();
    await shot(fan, "fan-buy");
    await buy.click();
    await fan.waitForSelector("[data-testid=video]", WAIT);
    const first = await playedPast(fan, 0, 30000);
    const later = await playedPast(fan, first + 1);
    return {
      offer,
      video_before,
      first,
      later,
      paywall_gone: (await fan.locator("[data-testid=paywall]").count()) === 0,
    };
  });

  await step("fan_wallet", async () => {
    await fan.click("[data-testid=nav-wallet]");
    await fan.waitForSelector("[data-testid=balance]", WAIT);
    const sources = await fan.$$eval("[data-testid=transaction]", (rows) =>
      rows.map((r) => [r.dataset.source, Number(r.dataset.delta)]),
    );
    await shot(fan, "fan-wallet");
    return {
      balance: await amount(fan, "balance"),
      sources,
      subscriptions: await fan.locator("[data-testid=subscription]").count(),
      nav_live: await fan.isVisible("[data-testid=nav-live]"),
    };
  });
  await step("creator_wallet", async () => {
    await creator.click("[data-testid=nav-wallet]");
    // The earnings per day are read after the balance: the payout form comes once they are shown.
    await creator.waitForSelector("[data-testid=payout-form]", WAIT);
    const before = await amount(creator, "earnings");
    const days = await creator.$$eval("[data-testid=earnings-day]", (rows) => rows.map((r) => Number(r.dataset.net)));
    await creator.fill("[data-testid=payout-amount]", "100");
    await creator.click("[data-testid=payout-request]");
    await creator.waitForSelector("[data-testid=payout-note].ok", WAIT);
    await shot(creator, "creator-wallet");
    return {
      earnings_before: before,
      days,
      earnings_after: await amount(creator, "earnings"),
      payouts: await creator.$$eval("[data-testid=payout]", (rows) => rows.map((r) => r.dataset.status)),
    };
  });
} catch (e) {
  result.error = String(e.message ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
