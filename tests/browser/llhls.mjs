// hls.js (lowLatencyMode) in Debian's chromium, on a page of another origin, plays PLAYLIST for
// SECONDS and prints one JSON object: parts and segments loaded, the playlist requests and the
// blocking-reload directives hls.js sent, its errors, how often the video waited, and where it
// played at the end against the live edge.
//
//   node tests/browser/llhls.mjs PAGE PLAYLIST SECONDS ARTIFACT_DIR
import { chromium } from 'playwright-core';
import path from 'node:path';

const [page_url, playlist, seconds, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error('usage: llhls.mjs PAGE PLAYLIST SECONDS ARTIFACT_DIR');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'],
});
const result = { console: [] };
try {
  const page = await browser.newPage();
  page.on('console', (m) => result.console.push(`${m.type()}: ${m.text()}`));
  const reloads = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.endsWith('.m3u8')) reloads.push(u.search);
  });
  const failed = [];
  page.on('response', (r) => {
    if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}${new URL(r.url()).search}`);
  });
  await page.goto(page_url, { timeout: 10000 });
  result.play = await page.evaluate(async ([url, secs]) => {
    const video = document.createElement('video');
    video.muted = true;
    document.body.appendChild(video);
    // eslint-disable-next-line no-undef
    const hls = new Hls({ lowLatencyMode: true });
    const r = { frags: 0, parts: 0, errors: [], waiting: 0 };
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
      if (d.part) r.parts += 1; else r.frags += 1;
    });
    hls.on(Hls.Events.ERROR, (_, d) => r.errors.push(`${d.fatal ? 'fatal ' : ''}${d.details}`));
    video.addEventListener('waiting', () => { if (video.currentTime > 0) r.waiting += 1; });
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, secs * 1000));
    r.currentTime = video.currentTime;
    r.latency = hls.latency;
    hls.destroy();
    return r;
  }, [playlist, Number(seconds)]);
  result.reloads = reloads;
  result.failed_requests = failed;
  if (result.play.errors.length || !(result.play.currentTime > 0)) {
    await page.screenshot({ path: path.join(artifacts, 'llhls-page.png') }).catch(() => {});
  }
} catch (e) {
  result.exception = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
