// TURN relaying with real WebRTC peers, for the calls benchmark (tests/src/bin/bench-turn.rs):
// PAIRS pairs of RTCPeerConnections in one headless Debian chromium (playwright-core, which never
// downloads a browser), each made relay-only (`iceTransportPolicy: "relay"`) with ICE servers
// of its own (ICE_SERVERS_JSON is a list of iceServers lists, one per connection: a credential
// per user, as in real calls, each within the relay's per-user quota), so every packet crosses
// the TURN relay; both ends of each pair send Chromium's
// fake camera (320×240, 15 fps) and microphone. The pairs signal each other inside the page
// (the gateway's signalling is the other half of the benchmark). After all are connected the
// page reads every connection's stats, prints `window start`, waits SECONDS, reads them again
// and prints `window end` (the benchmark samples CPU at both lines); then it stops the tracks,
// waits a second for the last packets and reads the stats a last time (`final`: everything the
// transports carried, to hold against what the relay counted) before it closes the
// connections. Prints one JSON object as its last line; the exit code is 0 whenever it was
// printed.
//
//   node tests/browser/relay.mjs PAGE_URL ICE_SERVERS_JSON PAIRS SECONDS
//
// PAGE_URL is any page of a loopback server (a secure context, for getUserMedia).
import { chromium } from "playwright-core";

const [pageUrl, iceJson, pairsArg, secondsArg] = process.argv.slice(2);
if (!secondsArg) {
  console.error("usage: relay.mjs PAGE_URL ICE_SERVERS_JSON PAIRS SECONDS");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
});
let result;
try {
  const page = await browser.newPage();
  await page.exposeFunction("mark", (line) => console.log(line));
  await page.goto(pageUrl, { timeout: 15000 });
  result = await page.evaluate(
    async ({ iceServers, pairs, seconds }) => {
      const media = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: 320, height: 240, frameRate: 15 },
      });
      const config = (i) => ({ iceServers: iceServers[i % iceServers.length], iceTransportPolicy: "relay" });
      const peers = [];
      for (let i = 0; i < pairs; i++) {
        const a = new RTCPeerConnection(config(2 * i));
        const b = new RTCPeerConnection(config(2 * i + 1));
        a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
        b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
        for (const t of media.getTracks()) {
          a.addTrack(t, media);
          b.addTrack(t, media);
        }
        await a.setLocalDescription(await a.createOffer());
        await b.setRemoteDescription(a.localDescription);
        await b.setLocalDescription(await b.createAnswer());
        await a.setRemoteDescription(b.localDescription);
        peers.push(a, b);
      }
      const connected = (pc) =>
        new Promise((resolve) => {
          const done = () => {
            if (["connected", "failed", "closed"].includes(pc.connectionState)) resolve(pc.connectionState);
          };
          pc.addEventListener("connectionstatechange", done);
          setTimeout(() => resolve(`${pc.connectionState} after 30 s`), 30000);
          done();
        });
      const states = await Promise.all(peers.map(connected));
      // Each connection's figures: the transport's bytes both ways (DTLS-SRTP packets as sent
      // to and received from the relay), video frames decoded, audio packets received, and the
      // selected candidate pair's types.
      const figures = async (pc) => {
        const r = await pc.getStats();
        const f = { bytes: 0, frames: 0, audio: 0, local: null, remote: null };
        r.forEach((s) => {
          if (s.type === "transport") {
            f.bytes += (s.bytesSent || 0) + (s.bytesReceived || 0);
            const pair = s.selectedCandidatePairId && r.get(s.selectedCandidatePairId);
            if (pair) {
              f.local = r.get(pair.localCandidateId)?.candidateType ?? null;
              f.remote = r.get(pair.remoteCandidateId)?.candidateType ?? null;
            }
          }
          if (s.type === "inbound-rtp" && s.kind === "video") f.frames += s.framesDecoded || 0;
          if (s.type === "inbound-rtp" && s.kind === "audio") f.audio += s.packetsReceived || 0;
        });
        return f;
      };
      const start = await Promise.all(peers.map(figures));
      await window.mark("window start");
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      const end = await Promise.all(peers.map(figures));
      const elapsed = (performance.now() - t0) / 1000;
      await window.mark("window end");
      for (const t of media.getTracks()) t.stop();
      await new Promise((r) => setTimeout(r, 1000));
      const last = await Promise.all(peers.map(figures));
      for (const pc of peers) pc.close();
      return { states, elapsed, start, end, final: last };
    },
    { iceServers: JSON.parse(iceJson), pairs: Number(pairsArg), seconds: Number(secondsArg) },
  );
} catch (e) {
  result = { error: String(e.message ?? e).split("\n")[0] };
}
await browser.close();
console.log(JSON.stringify(result));
