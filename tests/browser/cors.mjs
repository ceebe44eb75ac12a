// A web player on another origin, in Debian's chromium (driven by playwright-core, which never
// downloads a browser): loads PAGE (served by the test from another origin) and tries what web
// players do with Onda's public URLs, then prints one JSON object with what each attempt got.
//
//   node tests/browser/cors.mjs PAGE EDGE_MOUNT LISTEN WATCH NOWPLAYING ARTIFACT_DIR
//
//   fetch   fetch(EDGE_MOUNT) with `Icy-MetaData: 1` (a preflight): status, icy-metaint, bytes read
//   listen_fetch  the same through LISTEN (preflights at the control plane, then at the edge)
//   audio   <audio crossorigin="anonymous" src=LISTEN> (the control plane's redirect): readyState,
//           currentTime
//   hls     hls.js on WATCH (the redirect to a live stream's playlist): fragments loaded,
//           currentTime, hls.js errors
//   nowplaying  fetch(NOWPLAYING) (the control plane's public JSON): status, the station's name
//
// Each attempt is bounded; on a failed attempt a screenshot goes to ARTIFACT_DIR. The exit code
// is 0 whenever the JSON was printed: the test judges it.
import { chromium } from 'playwright-core';
import path from 'node:path';

const [page_url, edge_url, listen_url, watch_url, nowplaying_url, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error('usage: cors.mjs PAGE EDGE_MOUNT LISTEN WATCH NOWPLAYING ARTIFACT_DIR');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // As root chromium needs --no-sandbox; media may start without a user gesture.
  args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'],
});
const result = { console: [] };
try {
  const page = await browser.newPage();
  page.on('console', (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  await page.goto(page_url, { timeout: 10000 });
  result.origin = await page.evaluate(() => location.origin);

  const icy_fetch = async (url) => {
    try {
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), 8000);
      const r = await fetch(url, { headers: { 'Icy-MetaData': '1' }, signal: ctl.signal });
      const reader = r.body.getReader();
      let bytes = 0;
      while (bytes < 32768) {
        const { value, done } = await reader.read();
        if (done) break;
        bytes += value.length;
      }
      clearTimeout(timer);
      await reader.cancel();
      return { status: r.status, metaint: r.headers.get('icy-metaint'), bytes };
    } catch (e) {
      return { error: String(e) };
    }
  };
  result.fetch = await page.evaluate(icy_fetch, edge_url);
  result.listen_fetch = await page.evaluate(icy_fetch, listen_url);

  result.audio = await page.evaluate(async (url) => {
    const audio = document.createElement('audio');
    audio.crossOrigin = 'anonymous';
    audio.muted = true;
    document.body.appendChild(audio);
    const outcome = await new Promise((resolve) => {
      const done = (how) => resolve(how);
      const timer = setTimeout(() => done('timeout'), 10000);
      audio.addEventListener('error', () => { clearTimeout(timer); done('error'); });
      audio.addEventListener('timeupdate', () => {
        if (audio.currentTime > 0.5) { clearTimeout(timer); done('playing'); }
      });
      audio.src = url;
      audio.play().catch(() => {});
    });
    const r = {
      outcome,
      readyState: audio.readyState,
      currentTime: audio.currentTime,
      error: audio.error ? `${audio.error.code} ${audio.error.message}` : null,
    };
    audio.pause();
    audio.removeAttribute('src');
    audio.load();
    return r;
  }, listen_url);

  result.hls = await page.evaluate(async (url) => {
    const video = document.createElement('video');
    video.muted = true;
    document.body.appendChild(video);
    // eslint-disable-next-line no-undef
    const hls = new Hls({ lowLatencyMode: true });
    const r = { frags: 0, parts: 0, errors: [] };
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
      r.frags += 1;
      if (d.part) r.parts += 1;
    });
    hls.on(Hls.Events.ERROR, (_, d) => r.errors.push(`${d.fatal ? 'fatal ' : ''}${d.details}`));
    r.outcome = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), 15000);
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (d.fatal) { clearTimeout(timer); resolve('fatal error'); }
      });
      video.addEventListener('timeupdate', () => {
        if (video.currentTime > 1.5) { clearTimeout(timer); resolve('playing'); }
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      video.play().catch(() => {});
    });
    r.currentTime = video.currentTime;
    hls.destroy();
    return r;
  }, watch_url);

  result.nowplaying = await page.evaluate(async (url) => {
    try {
      const r = await fetch(url);
      const body = await r.json();
      return { status: r.status, station: body.station?.name ?? null };
    } catch (e) {
      return { error: String(e) };
    }
  }, nowplaying_url);

  const failed = !(result.fetch.status === 200 && result.listen_fetch.status === 200 && result.audio.outcome === 'playing'
    && result.hls.outcome === 'playing' && result.nowplaying.status === 200);
  if (failed) {
    await page.screenshot({ path: path.join(artifacts, 'cors-page.png') }).catch(() => {});
  }
} catch (e) {
  result.exception = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
