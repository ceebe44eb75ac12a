// hls.js in Debian's chromium, on a page of another origin, plays an audio HLS URL (the
// redirector's `.m3u8`, which answers 302 to an edge) in an <audio> element for SECONDS and
// prints one JSON object: segments loaded, ID3 samples hls.js found (with the text of their
// frames), date ranges of the playlist, errors, and where the audio played at the end.
//
//   node tests/browser/audiohls.mjs PAGE URL SECONDS ARTIFACT_DIR
import { chromium } from 'playwright-core';
import path from 'node:path';

const [page_url, url, seconds, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error('usage: audiohls.mjs PAGE URL SECONDS ARTIFACT_DIR');
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
  const failed = [];
  page.on('response', (r) => {
    if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(page_url, { timeout: 10000 });
  result.play = await page.evaluate(async ([src, secs]) => {
    const audio = document.createElement('audio');
    document.body.appendChild(audio);
    // eslint-disable-next-line no-undef
    const hls = new Hls();
    const r = { frags: 0, id3: [], dateRanges: [], errors: [], url: '' };
    hls.on(Hls.Events.FRAG_LOADED, () => { r.frags += 1; });
    hls.on(Hls.Events.FRAG_PARSING_METADATA, (_, d) => {
      for (const s of d.samples) {
        // The frames' text, bytes outside printable ASCII dropped (the PRIV timestamp).
        r.id3.push(Array.from(s.data, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '')).join(''));
      }
    });
    hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
      r.url = d.details.url;
      for (const id of Object.keys(d.details.dateRanges || {})) {
        const dr = d.details.dateRanges[id];
        r.dateRanges.push(`${id}=${dr.attr['X-TITLE'] || ''}`);
      }
    });
    hls.on(Hls.Events.ERROR, (_, d) => r.errors.push(`${d.fatal ? 'fatal ' : ''}${d.details}`));
    hls.loadSource(src);
    hls.attachMedia(audio);
    audio.play().catch((e) => r.errors.push(`play: ${e}`));
    await new Promise((resolve) => setTimeout(resolve, secs * 1000));
    r.currentTime = audio.currentTime;
    r.paused = audio.paused;
    hls.destroy();
    return r;
  }, [url, Number(seconds)]);
  result.failed_requests = failed;
  await page.screenshot({ path: path.join(artifacts, 'audiohls-page.png') }).catch(() => {});
} catch (e) {
  result.exception = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
