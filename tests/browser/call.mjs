// A paid video call between two real browsers through Onda (docs/calls.md): two Debian
// chromium instances (playwright-core, which never downloads a browser) with Chromium's fake
// camera and microphone, one the fan's and one the creator's. The creator makes themselves
// available at a price on the calls page (with a second tab open); the fan opens the creator's
// page, sees the call button turn on with the price, and calls: first to cancel while it rings,
// then to be rejected, then to ring unanswered until the server ends it as missed, then for real; both creator tabs ring, one accepts and the other's
// screen goes (it offers to hang up the call running elsewhere); the fan's balance pays less
// than a minute more, so both get the warning; both sides' RTCPeerConnection stats show video frames
// decoded and audio packets received rising; the fan mutes the microphone and turns the
// camera off and the creator's side sees it; the fan hangs up; the wallet, earnings and call
// history pages show what was charged. Prints one JSON object with what each step saw;
// screenshots go to ARTIFACT_DIR.
//
//   node tests/browser/call.mjs APP_URL FAN_TOKEN CREATOR_TOKEN CREATOR_ID ARTIFACT_DIR [ICE]
//
// ICE is "relay" to force `iceTransportPolicy: "relay"` (the app's `?ice=relay`), else "all".
// Every wait is bounded; a step that fails is recorded with its error and the run goes on to
// print the JSON. The exit code is 0 whenever the JSON was printed: the test judges it.
import { chromium } from "playwright-core";
import path from "node:path";

const [app, fanToken, creatorToken, creatorId, artifacts, ice = "all"] = process.argv.slice(2);
if (!artifacts) {
  console.error("usage: call.mjs APP_URL FAN_TOKEN CREATOR_TOKEN CREATOR_ID ARTIFACT_DIR [ICE]");
  process.exit(2);
}
const WAIT = { timeout: 15000 };
const result = { steps: {}, console: [] };
const launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
// Two browsers, as two people on two machines: nothing shared but the network.
const browsers = [await launch(), await launch()];

/// Keeps every RTCPeerConnection the page makes (with its configuration) where the test reads
/// its stats; the app itself is unchanged.
function recordPeers() {
  const Original = window.RTCPeerConnection;
  window.__peers = [];
  window.RTCPeerConnection = class extends Original {
    constructor(config) {
      super(config);
      window.__peers.push({ pc: this, config });
    }
  };
}

async function context(browser) {
  // Money is written as en-US writes it ("$6.00"), whatever the machine's locale.
  const c = await browser.newContext({ locale: "en-US", viewport: { width: 1000, height: 800 } });
  await c.addInitScript(recordPeers);
  return c;
}

async function open(c, name, url) {
  const p = await c.newPage();
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// The call's figures from the page's newest RTCPeerConnection: inbound video and audio, the
/// remote video's brightness (0-255; black frames are ~0), and the selected candidate pair's
/// types (a relayed pair has "relay" on our side).
const stats = (p) =>
  p.evaluate(async () => {
    const peer = window.__peers.at(-1);
    if (!peer) return null;
    const report = await peer.pc.getStats();
    const out = {
      policy: peer.config?.iceTransportPolicy ?? "all",
      iceUrls: (peer.config?.iceServers ?? []).flatMap((s) => s.urls),
      connection: peer.pc.connectionState,
    };
    let pairId = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out.framesDecoded = s.framesDecoded ?? 0;
        out.videoPackets = s.packetsReceived ?? 0;
      }
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.audioPackets = s.packetsReceived ?? 0;
        out.audioEnergy = s.totalAudioEnergy ?? 0;
        out.audioLevel = s.audioLevel ?? 0;
      }
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    const pair = pairId && report.get(pairId);
    if (pair) {
      out.localCandidate = report.get(pair.localCandidateId)?.candidateType;
      out.remoteCandidate = report.get(pair.remoteCandidateId)?.candidateType;
      out.bytesSent = pair.bytesSent;
    }
    const v = document.querySelector("[data-testid=remote-video]");
    if (v && v.videoWidth > 0) {
      const c = document.createElement("canvas");
      c.width = 64;
      c.height = 48;
      const g = c.getContext("2d");
      g.drawImage(v, 0, 0, 64, 48);
      const d = g.getImageData(0, 0, 64, 48).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3;
      out.brightness = Math.round(sum / (d.length / 4));
    }
    return out;
  });

/// What rose between two samples a few seconds apart.
async function rising(p, ms) {
  const a = await stats(p);
  await sleep(ms);
  const b = await stats(p);
  return {
    frames: b.framesDecoded - a.framesDecoded,
    audio_packets: b.audioPackets - a.audioPackets,
    audio_energy: b.audioEnergy - a.audioEnergy,
    brightness: b.brightness,
    policy: b.policy,
    ice_urls: b.iceUrls,
    local_candidate: b.localCandidate,
    remote_candidate: b.remoteCandidate,
  };
}

const q = ice === "relay" ? "?ice=relay" : "?ice=all";
try {
  const [fanCtx, creatorCtx] = [await context(browsers[0]), await context(browsers[1])];
  const creator = await open(creatorCtx, "creator", `${app}calls${q}#token=${encodeURIComponent(creatorToken)}`);
  await creator.waitForSelector("[data-testid=call-settings]", WAIT);
  const fan = await open(fanCtx, "fan", `${app}creator/${encodeURIComponent(creatorId)}${q}#token=${encodeURIComponent(fanToken)}`);

  await step("not_available", async () => {
    // Online (the calls page is open) but not taking calls: no button, and why.
    await fan.waitForSelector("[data-testid=call-reason][data-code=unavailable]", WAIT);
    const r = {
      name: await fan.textContent("[data-testid=creator-name]"),
      button_hidden: await fan.locator("[data-testid=call-button]").isHidden(),
      reason: await fan.textContent("[data-testid=call-reason]"),
    };
    await shot(fan, "fan-creator-unavailable");
    return r;
  });

  await step("creator_goes_available", async () => {
    await creator.check("[data-testid=call-available]");
    await creator.fill("[data-testid=call-price]", "600");
    await creator.click("[data-testid=call-settings-save]");
    const note = await creator.textContent("[data-testid=call-settings-note].ok", WAIT);
    await shot(creator, "creator-call-settings");
    return { note };
  });

  // A second tab of the creator's, on another page: it rings too.
  const creator2 = await open(creatorCtx, "creator-tab2", `${app}${q}#token=${encodeURIComponent(creatorToken)}`);
  await creator2.waitForSelector("[data-testid=conversations]", { ...WAIT, state: "attached" });

  await step("call_button", async () => {
    // The page reads the profile again every 3 s: the button turns on with the price.
    const button = fan.locator("[data-testid=call-button]:not([disabled])");
    await button.waitFor(WAIT);
    const r = {
      text: await button.textContent(),
      price: Number(await button.getAttribute("data-price")),
      reason: await fan.textContent("[data-testid=call-reason]"),
    };
    await shot(fan, "fan-creator-page");
    return r;
  });

  /// Rings both creator tabs; the fan's view says it rings.
  const ring = async () => {
    await fan.click("[data-testid=call-button]");
    await fan.waitForSelector("[data-testid=call][data-state=ringing]", WAIT);
    for (const p of [creator, creator2]) await p.waitForSelector("[data-testid=incoming-call]", WAIT);
  };
  /// Both creator tabs stop ringing, and the fan's view says how the call ended.
  const ended = async (wait = WAIT) => {
    for (const p of [creator, creator2]) await p.waitForSelector("[data-testid=incoming-call]", { ...wait, state: "detached" });
    await fan.waitForSelector("[data-testid=call][data-state=ended]", wait);
    const r = {
      fan_status: await fan.textContent("[data-testid=call-status]"),
      reason: await fan.getAttribute("[data-testid=call]", "data-reason"),
    };
    await fan.click("[data-testid=call-close]");
    return r;
  };

  await step("cancelled", async () => {
    await ring();
    await fan.click("[data-testid=call-hangup]");
    return await ended();
  });

  await step("rejected", async () => {
    await ring();
    await creator2.click("[data-testid=incoming-reject]");
    return await ended();
  });

  await step("missed", async () => {
    await ring();
    // Nobody answers: the server ends the call after its 30 s of ringing, and Cleo's bell has
    // the missed call.
    const r = await ended({ timeout: 45000 });
    await creator2.click("#bell");
    await creator2.waitForSelector("[data-testid=notification] >> text=Missed call", WAIT);
    r.notification = await creator2.textContent("[data-testid=notification]");
    await creator2.click("#bell");
    return r;
  });

  await step("ringing", async () => {
    await fan.click("[data-testid=call-button]");
    await fan.waitForSelector("[data-testid=call][data-state=ringing]", WAIT);
    const tabs = [];
    for (const p of [creator, creator2]) {
      await p.waitForSelector("[data-testid=incoming-call]", WAIT);
      tabs.push({
        caller: await p.textContent("[data-testid=incoming-caller]"),
        price: await p.textContent("[data-testid=incoming-price]"),
      });
    }
    await shot(fan, "fan-ringing");
    await shot(creator2, "creator-incoming");
    return { fan_status: await fan.textContent("[data-testid=call-status]"), tabs };
  });

  await step("accepted", async () => {
    await creator.click("[data-testid=incoming-accept]");
    // Answered in the first tab: the second tab's screen goes, and it is not in the call.
    await creator2.waitForSelector("[data-testid=incoming-call]", { ...WAIT, state: "detached" });
    for (const p of [fan, creator]) await p.waitForSelector("[data-testid=call][data-state=in_progress]", WAIT);
    for (const p of [fan, creator]) await p.waitForSelector("[data-testid=call-media][data-state=connected]", WAIT);
    await creator2.waitForSelector("[data-testid=call-elsewhere]", WAIT);
    await shot(creator2, "creator-tab2-elsewhere");
    return {
      fan_status: await fan.textContent("[data-testid=call-status]"),
      creator_status: await creator.textContent("[data-testid=call-status]"),
      tab2_in_call: await creator2.locator("[data-testid=call]").count(),
      tab2_elsewhere: await creator2.textContent("[data-testid=call-elsewhere]"),
      tab2_peers: await creator2.evaluate(() => window.__peers.length),
    };
  });

  await step("media_flows", async () => {
    // Let the decoders start, then measure both directions over the same 3 s.
    await sleep(1500);
    const [fanSide, creatorSide] = await Promise.all([rising(fan, 3000), rising(creator, 3000)]);
    await shot(fan, "fan-in-call");
    await shot(creator, "creator-in-call");
    return { fan: fanSide, creator: creatorSide };
  });

  await step("fan_mutes", async () => {
    await fan.click("[data-testid=call-mic]");
    await fan.click("[data-testid=call-camera]");
    // What was in flight when the switches moved has arrived by then.
    await sleep(1500);
    const creatorSide = await rising(creator, 3000);
    const fanSide = await rising(fan, 3000);
    await shot(creator, "creator-sees-fan-muted");
    return {
      mic: await fan.getAttribute("[data-testid=call-mic]", "aria-pressed"),
      camera: await fan.getAttribute("[data-testid=call-camera]", "aria-pressed"),
      creator: creatorSide,
      fan: fanSide,
    };
  });

  await step("warning", async () => {
    // The fan's wallet pays less than a minute more: both are told when the call would end.
    const shown = "[data-testid=call-warning]:not([hidden])";
    const r = { fan: await fan.textContent(shown, WAIT), creator: await creator.textContent(shown, WAIT) };
    await shot(fan, "fan-warning");
    return r;
  });

  await step("cost_runs", async () => ({
    fan: await amount(fan, "call-cost"),
    creator: await amount(creator, "call-cost"),
    duration: await fan.textContent("[data-testid=call-duration]"),
  }));

  await step("hang_up", async () => {
    await fan.click("[data-testid=call-hangup]");
    for (const p of [fan, creator]) await p.waitForSelector("[data-testid=call][data-state=ended]", WAIT);
    const r = {
      fan_status: await fan.textContent("[data-testid=call-status]"),
      creator_status: await creator.textContent("[data-testid=call-status]"),
      reason: await fan.getAttribute("[data-testid=call]", "data-reason"),
      call_id: await fan.getAttribute("[data-testid=call]", "data-call-id"),
      fan_cost: await amount(fan, "call-cost"),
      creator_cost: await amount(creator, "call-cost"),
      fan_duration: await fan.textContent("[data-testid=call-duration]"),
      peer_closed: await fan.evaluate(() => window.__peers.at(-1).pc.connectionState),
    };
    await creator2.waitForSelector("[data-testid=call-elsewhere]", { ...WAIT, state: "detached" });
    await shot(fan, "fan-call-ended");
    await shot(creator, "creator-call-ended");
    return r;
  });

  await step("fan_after", async () => {
    await fan.goto(`${app}wallet`, WAIT);
    const balance = await amount(fan, "balance");
    // One ledger transaction per unit charged (a second here): their sum is what the call cost.
    const rows = fan.locator("[data-testid=transaction][data-source=call]");
    await rows.first().waitFor(WAIT);
    const deltas = await rows.evaluateAll((rs) => rs.map((r) => Number(r.dataset.delta)));
    const charged = deltas.reduce((a, b) => a + b, 0);
    await shot(fan, "fan-wallet");
    await fan.goto(`${app}calls`, WAIT);
    const row = fan.locator("[data-testid=call-row]").first();
    await row.waitFor(WAIT);
    await shot(fan, "fan-call-history");
    return {
      balance,
      charged,
      history_amount: Number(await row.getAttribute("data-amount")),
      history_reason: await row.getAttribute("data-reason"),
      history_rows: await fan.locator("[data-testid=call-row]").count(),
    };
  });

  await step("creator_after", async () => {
    await creator.goto(`${app}wallet`, WAIT);
    const earnings = await amount(creator, "earnings");
    await shot(creator, "creator-wallet");
    await creator.goto(`${app}calls`, WAIT);
    const row = creator.locator("[data-testid=call-row]").first();
    await row.waitFor(WAIT);
    await shot(creator, "creator-call-history");
    return {
      earnings,
      history_amount: Number(await row.getAttribute("data-amount")),
      history_with: (await row.locator("td").nth(1).textContent()).trim(),
      available_checked: await creator.isChecked("[data-testid=call-available]"),
    };
  });
} catch (e) {
  result.error = String(e.message ?? e);
} finally {
  await Promise.all(browsers.map((b) => b.close()));
}
console.log(JSON.stringify(result));
