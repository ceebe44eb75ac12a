// The call screens (calls.ts drives them): the incoming-call screen with accept and reject, and
// the in-call view with both videos (the local preview muted), the microphone, camera and
// speaker switches, hang up, the state in words, the running duration and the cost the server
// charged. Both float over whatever page the tab shows.
import type { Call, CallEndReason, CallState } from "./api";
import { el, money } from "./ui";

/// Why a call ended, as the person reading it would say it.
export function reasonText(reason: CallEndReason | null, role: "caller" | "callee", peer: string, hungUpHere: boolean): string {
  const caller = role === "caller";
  switch (reason) {
    case "rejected":
      return caller ? `${peer} declined the call.` : "You declined the call.";
    case "missed":
      return caller ? `${peer} did not answer.` : "You missed the call.";
    case "cancelled":
      return caller ? "You cancelled the call." : `${peer} cancelled the call.`;
    case "hung_up":
      return hungUpHere ? "You hung up." : `${peer} hung up.`;
    case "busy":
      return caller ? `${peer} is in another call.` : "You were in another call.";
    case "balance_exhausted":
      return caller ? "Your balance ran out." : `${peer}'s balance ran out.`;
    case "connection_lost":
      return "The connection was lost for more than 15 seconds.";
    default:
      return "The call ended.";
  }
}

/// m:ss (or h:mm:ss).
function clock(secs: number): string {
  const s = Math.max(0, Math.floor(secs));
  const mm = String(Math.floor((s % 3600) / 60));
  const ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm.padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/// Where the screens go: one layer over the page, screens stacked in it.
function layer(): HTMLElement {
  let box = document.getElementById("call-layer");
  if (!box) {
    box = el("div", { id: "call-layer", class: "call-layer" });
    document.body.append(box);
  }
  return box;
}

export class IncomingScreen {
  private node = el("section", { class: "incoming", "data-testid": "incoming-call" });
  private line = el("p", { class: "note", "data-testid": "incoming-note" });

  constructor(
    e: {
      callId: string;
      callerId: string;
      callerName?: string;
      pricePerMinute: number;
      currency: string;
      billing: "minute" | "second";
    },
    busyHere: boolean,
    act: { accept: () => Promise<void>; reject: () => Promise<void> },
  ) {
    this.node.dataset.callId = e.callId;
    const who = el("p", { class: "who" });
    who.append(el("strong", { "data-testid": "incoming-caller" }, e.callerName ?? e.callerId), " is calling you 📞");
    const per = e.billing === "second" ? "billed by the second" : "billed by the minute";
    const price = el("p", { "data-testid": "incoming-price" }, `${money(e.pricePerMinute, e.currency)} a minute, ${per}`);
    const accept = el("button", { type: "button", class: "accept", "data-testid": "incoming-accept" }, "Accept");
    const reject = el("button", { type: "button", class: "reject", "data-testid": "incoming-reject" }, "Reject");
    const buttons = [accept, reject];
    const run = (fn: () => Promise<void>) => async () => {
      buttons.forEach((b) => (b.disabled = true));
      try {
        await fn();
      } finally {
        buttons.forEach((b) => (b.disabled = false));
      }
    };
    accept.addEventListener("click", run(act.accept));
    reject.addEventListener("click", run(act.reject));
    if (busyHere) {
      accept.disabled = true;
      this.note("You are in a call in this tab: hang up first to take this one.");
    } else {
      this.line.hidden = true;
    }
    const row = el("div", { class: "row" });
    row.append(accept, reject);
    this.node.append(who, price, row, this.line);
    layer().append(this.node);
  }

  note(text: string) {
    this.line.textContent = text;
    this.line.hidden = false;
  }

  close() {
    this.node.remove();
  }
}

/// A call of this user's that another tab or device is in, with a way to hang it up from here.
export class ElsewhereBar {
  private node = el("section", { class: "elsewhere", "data-testid": "call-elsewhere" });
  private line = el("span", { class: "note error" });

  constructor(
    readonly callId: string,
    peer: string,
    hangUp: () => Promise<void>,
  ) {
    const b = el("button", { type: "button", class: "hangup", "data-testid": "call-elsewhere-hangup" }, "Hang up");
    b.addEventListener("click", async () => {
      b.disabled = true;
      await hangUp();
      b.disabled = false;
    });
    this.node.append(el("span", {}, `📞 In a call with ${peer} in another tab or device. `), b, this.line);
    layer().append(this.node);
  }

  note(text: string) {
    this.line.textContent = ` ${text}`;
  }

  close() {
    this.node.remove();
  }
}

export class CallView {
  private node = el("section", { class: "call", "data-testid": "call" });
  private status = el("span", { class: "call-status", "data-testid": "call-status" });
  private linkState = el("span", { class: "call-media", "data-testid": "call-media" });
  private remoteVideo = el("video", { class: "remote", "data-testid": "remote-video", autoplay: "", playsinline: "" });
  private localVideo = el("video", { class: "local", "data-testid": "local-video", autoplay: "", playsinline: "", muted: "" });
  private duration = el("span", { "data-testid": "call-duration" }, "0:00");
  private costEl = el("strong", { "data-testid": "call-cost", "data-amount": "0" }, "—");
  private warning = el("p", { class: "call-warning", "data-testid": "call-warning" });
  private line = el("p", { class: "note error", "data-testid": "call-note" });
  private buttons = el("div", { class: "call-controls" });
  private hangup = el("button", { type: "button", class: "hangup", "data-testid": "call-hangup" }, "Hang up");
  private closeBtn = el("button", { type: "button", "data-testid": "call-close" }, "Close");
  private started = 0;
  private timer: number | undefined;

  constructor(
    private peer: string,
    role: "caller" | "callee",
    onHangUp: () => void,
  ) {
    this.node.dataset.role = role;
    this.localVideo.muted = true;
    this.warning.hidden = true;
    this.line.hidden = true;
    this.closeBtn.hidden = true;
    this.hangup.addEventListener("click", onHangUp);
    this.closeBtn.addEventListener("click", () => this.close());
    const head = el("header", { class: "call-head" });
    head.append(el("strong", { "data-testid": "call-peer" }, peer), this.status, this.linkState);
    const videos = el("div", { class: "call-videos" });
    videos.append(this.remoteVideo, this.localVideo);
    const figures = el("p", { class: "call-figures" });
    figures.append("⏱ ", this.duration, " · Cost: ", this.costEl);
    this.buttons.append(this.hangup, this.closeBtn);
    this.node.append(head, videos, figures, this.warning, this.line, this.buttons);
    layer().append(this.node);
  }

  /// The local camera as a muted preview.
  attach(local: MediaStream) {
    this.localVideo.srcObject = local;
    this.localVideo.play().catch(() => undefined);
  }

  remote(stream: MediaStream) {
    if (this.remoteVideo.srcObject === stream) return;
    this.remoteVideo.srcObject = stream;
    this.remoteVideo.play().catch(() => undefined);
  }

  /// The microphone, camera and speaker switches: a disabled track sends silence or black
  /// frames, so the other side sees it at once.
  controls(local: MediaStream) {
    if (this.buttons.querySelector("[data-testid=call-mic]")) return;
    const toggle = (testid: string, on: string, off: string, flip: () => boolean) => {
      const b = el("button", { type: "button", "data-testid": testid, "aria-pressed": "false" }, on);
      b.addEventListener("click", () => {
        const muted = flip();
        b.textContent = muted ? off : on;
        b.setAttribute("aria-pressed", String(muted));
      });
      return b;
    };
    const flipTracks = (tracks: MediaStreamTrack[]) => {
      const muted = tracks.some((t) => t.enabled);
      tracks.forEach((t) => (t.enabled = !muted));
      return muted;
    };
    this.buttons.prepend(
      toggle("call-mic", "🎙 Mute", "🎙 Unmute", () => flipTracks(local.getAudioTracks())),
      toggle("call-camera", "📷 Camera off", "📷 Camera on", () => flipTracks(local.getVideoTracks())),
      toggle("call-speaker", "🔊 Mute speaker", "🔇 Unmute speaker", () => {
        this.remoteVideo.muted = !this.remoteVideo.muted;
        return this.remoteVideo.muted;
      }),
    );
  }

  state(s: CallState) {
    this.node.dataset.state = s;
    const words: Record<CallState, string> = {
      calling: `Calling ${this.peer}…`,
      ringing: `Ringing ${this.peer}…`,
      in_progress: "In call",
      ended: "Call ended",
    };
    this.status.textContent = words[s];
    if (s === "in_progress" && !this.started) {
      // The server bills from acceptance; this tab counts from when it heard of it.
      this.started = Date.now();
      this.timer = window.setInterval(() => (this.duration.textContent = clock((Date.now() - this.started) / 1000)), 1000);
    }
  }

  /// The peer connection's state, once in the call.
  media(state: RTCPeerConnectionState) {
    const words: Partial<Record<RTCPeerConnectionState, string>> = {
      connecting: "connecting media…",
      connected: "connected",
      disconnected: "media interrupted…",
      failed: "no media path between you (a relay may be needed)",
    };
    this.linkState.textContent = words[state] ?? "";
    this.linkState.dataset.state = state;
  }

  /// A note when relaying is forced but the call got no TURN server: media cannot flow then.
  relayNote(policy: RTCIceTransportPolicy, ice: { urls: string[] }[]) {
    const turn = ice.some((s) => s.urls.some((u) => u.startsWith("turn")));
    if (policy === "relay" && !turn) this.note("Calls are set to go through a relay only, but this server offers no TURN relay.");
  }

  /// What the call has cost so far (the server's figure).
  cost(amount: number, currency: string) {
    this.costEl.textContent = money(amount, currency);
    this.costEl.dataset.amount = String(amount);
  }

  warn(secondsLeft: number, caller: boolean) {
    this.warning.textContent = caller
      ? `Your balance pays for ${secondsLeft} s more: the call ends then unless you top up your wallet.`
      : `The caller's balance pays for ${secondsLeft} s more: the call ends then.`;
    this.warning.hidden = false;
  }

  note(text: string) {
    this.line.textContent = text;
    this.line.hidden = false;
  }

  /// Refused before it rang (the gateway's sentence), or no camera.
  refused(text: string, code?: string, callId?: string) {
    this.state("ended");
    this.status.textContent = "Not connected";
    this.node.dataset.reason = code ?? "";
    if (callId) this.node.dataset.callId = callId;
    this.note(text);
    this.done();
  }

  ended(text: string, call: Call | null) {
    this.state("ended");
    this.status.textContent = `Call ended: ${text}`;
    this.node.dataset.reason = call?.reason ?? "";
    this.linkState.textContent = "";
    if (call) {
      this.node.dataset.callId = call.id;
      this.duration.textContent = clock(call.durationSecs);
      this.cost(call.amount, call.currency);
    }
    this.warning.hidden = true;
    this.done();
  }

  private done() {
    window.clearInterval(this.timer);
    this.buttons.querySelectorAll("button").forEach((b) => (b.hidden = b !== this.closeBtn));
    this.closeBtn.hidden = false;
    this.remoteVideo.srcObject = null;
    this.localVideo.srcObject = null;
  }

  close() {
    window.clearInterval(this.timer);
    this.node.remove();
  }
}
