// Paid 1-to-1 video calls in the browser (docs/calls.md): one `Calls` per tab listens to the
// gateway's call events. A fan starts a call from a creator's page (`start`); every open tab of
// the creator shows the incoming-call screen, and the tab that accepts is the one in the call:
// it alone answers the peer's signals, the others drop the screen when the call is answered
// there, cancelled or missed. Media goes peer to peer: the caller makes the WebRTC offer once
// the call is in progress, ICE candidates trickle through `signal`, and the first tab to see
// `connectionState === "connected"` reports `call-connected`. Billing is the server's: the
// view shows the cost `call-billed` reports and the warning `call-warning` gives.
//
// `iceTransportPolicy: "relay"` (every packet through the TURN relay, for networks that allow
// nothing else) is chosen with `?ice=relay` in the app's address (kept for later visits;
// `?ice=all` goes back) or the setting on the Calls page.
import type { Socket } from "socket.io-client";
import type { Call, CallEndReason, CallState } from "./api";
import { CallView, ElsewhereBar, IncomingScreen, reasonText } from "./callview";

/// `RTCIceServer` as the gateway sends it.
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

type Ack = {
  ok?: boolean;
  error?: { code: string; message: string; retryAfterMs?: number };
  [k: string]: unknown;
};

/// What `signal` carries between the two devices in the call.
type Signal =
  | { type: "offer" | "answer"; sdp: string }
  | { type: "candidate"; candidate: RTCIceCandidateInit };

interface Incoming {
  callId: string;
  callerId: string;
  /// The caller's display name.
  callerName?: string;
  pricePerMinute: number;
  currency: string;
  billing: "minute" | "second";
  iceServers: IceServer[];
}

const ICE_KEY = "onda.ice";

/// The ICE transport policy calls use: "relay" when the address says `?ice=relay` (remembered)
/// or the Calls page's setting is on, else "all".
export function icePolicy(): RTCIceTransportPolicy {
  const asked = new URLSearchParams(location.search).get("ice");
  if (asked === "relay" || asked === "all") localStorage.setItem(ICE_KEY, asked);
  return localStorage.getItem(ICE_KEY) === "relay" ? "relay" : "all";
}

export function setIcePolicy(policy: RTCIceTransportPolicy) {
  localStorage.setItem(ICE_KEY, policy);
}

/// The call this tab is in.
class Active {
  id = "";
  state: CallState = "calling";
  pc: RTCPeerConnection | null = null;
  /// Candidates that came before the remote description.
  pending: RTCIceCandidateInit[] = [];
  offered = false;
  connected = false;
  /// This device hung up (the reason then reads "You hung up").
  hungUpHere = false;
  ended = false;

  constructor(
    readonly role: "caller" | "callee",
    /// Who is at the other end, as the screens name them.
    readonly peer: string,
    readonly view: CallView,
    readonly local: MediaStream,
    public ice: IceServer[],
  ) {}
}

export class Calls {
  private active: Active | null = null;
  private incoming = new Map<string, IncomingScreen>();
  /// The last call's view, kept to show how it ended until the next call.
  private lastView: CallView | null = null;
  /// A call of this user's that another tab or device is in (this one can hang it up).
  private elsewhere: ElsewhereBar | null = null;

  constructor(
    private socket: Socket,
    /// The signed-in user's id.
    private me: string,
  ) {
    socket.on("incoming-call", (e: Incoming) => this.onIncoming(e));
    socket.on("call-state", (e: { callId: string; state: CallState; reason: CallEndReason | null; call: Call }) =>
      this.onState(e.callId, e.state, e.call),
    );
    socket.on("signal", (e: { callId: string; from: string; signal: Signal }) => this.onSignal(e));
    socket.on("call-billed", (e: { callId: string; amount: number; currency: string }) => {
      if (this.active?.id === e.callId) this.active.view.cost(e.amount, e.currency);
    });
    socket.on("call-warning", (e: { callId: string; endsAt: string; secondsLeft: number }) => {
      if (this.active?.id === e.callId) this.active.view.warn(e.secondsLeft, this.active.role === "caller");
    });
    // `?ice=` is kept from the address the tab opened with.
    icePolicy();
    // Leaving the page would leave the call running (and billed) with no one in it here.
    window.addEventListener("beforeunload", (e) => {
      if (this.busy()) e.preventDefault();
    });
  }

  /// Whether this tab is in a call (a second one is refused).
  busy(): boolean {
    return this.active !== null && !this.active.ended;
  }

  /// Calls creator `creatorId` (`name` for the screen): the in-call view shows each state.
  async start(creatorId: string, name: string) {
    if (this.busy()) return;
    const local = await this.media();
    const view = this.view(name, "caller");
    if (!local.stream) {
      view.refused(local.error);
      return;
    }
    const a = new Active("caller", name, view, local.stream, []);
    this.active = a;
    view.attach(local.stream);
    view.state("calling");
    const ack = await this.emit("initiate-call", { receiverId: creatorId });
    if (!ack.ok) {
      this.finish(a);
      const id = typeof ack.callId === "string" ? ack.callId : "";
      view.refused(ack.error?.message ?? "The call was refused.", ack.error?.code, id);
      return;
    }
    a.id = ack.callId as string;
    if (a.hungUpHere) return void this.hangUp();
    a.ice = (ack.iceServers as IceServer[]) ?? [];
    a.pc = this.peer(a);
    view.relayNote(icePolicy(), a.ice);
    // The ringing state may have come before the ack (then it was not yet known as ours).
    if (a.state === "calling" && ack.state === "ringing") this.onState(a.id, "ringing", null);
  }

  /// A new call's view, in place of the last one's.
  private view(peer: string, role: "caller" | "callee"): CallView {
    this.lastView?.close();
    this.lastView = new CallView(peer, role, () => this.hangUp());
    return this.lastView;
  }

  /// The camera and microphone, or why not.
  private async media(): Promise<{ stream?: MediaStream; error: string }> {
    try {
      return { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video: true }), error: "" };
    } catch (e) {
      return { error: `A call needs your camera and microphone: ${(e as Error).message}` };
    }
  }

  /// An event with its ack; an ack that never came is answered as a refusal.
  private async emit(event: string, payload: object): Promise<Ack> {
    try {
      return await this.socket.timeout(10000).emitWithAck(event, payload);
    } catch {
      return { error: { code: "timeout", message: "The server did not answer; try again." } };
    }
  }

  // The callee's side.

  private onIncoming(e: Incoming) {
    // The gateway sends it again to a device that connects while it rings.
    if (this.incoming.has(e.callId) || this.active?.id === e.callId) return;
    const screen = new IncomingScreen(e, this.busy(), {
      accept: () => this.accept(e),
      reject: async () => {
        const ack = await this.emit("reject-call", { callId: e.callId });
        if (!ack.ok) screen.note(ack.error?.message ?? "Not rejected.");
      },
    });
    this.incoming.set(e.callId, screen);
  }

  private async accept(e: Incoming) {
    const screen = this.incoming.get(e.callId);
    if (this.busy()) return;
    const local = await this.media();
    if (!local.stream) {
      screen?.note(local.error);
      return;
    }
    const view = this.view(e.callerId, "callee");
    const a = new Active("callee", e.callerId, view, local.stream, e.iceServers);
    a.id = e.callId;
    // Ready for the caller's offer before the server hears of the answer.
    a.pc = this.peer(a);
    this.active = a;
    const ack = await this.emit("accept-call", { callId: e.callId });
    if (!ack.ok) {
      this.finish(a);
      view.close();
      screen?.note(ack.error?.message ?? "The call could not be answered.");
      return;
    }
    this.dismiss(e.callId);
    view.attach(local.stream);
    view.relayNote(icePolicy(), a.ice);
    this.onState(a.id, (ack.call as Call).state, ack.call as Call);
  }

  private dismiss(callId: string) {
    this.incoming.get(callId)?.close();
    this.incoming.delete(callId);
  }

  // Both sides.

  private onState(callId: string, state: CallState, call: Call | null) {
    // Another tab answered, or the caller gave up, or nobody answered in time.
    if (state !== "ringing" && state !== "calling") this.dismiss(callId);
    const a = this.active;
    if (a?.id !== callId) return this.other(callId, state, call);
    if (a.ended) return;
    a.state = state;
    a.view.state(state);
    if (call && call.amount > 0) a.view.cost(call.amount, call.currency);
    if (state === "in_progress" && a.role === "caller" && !a.offered) {
      a.offered = true;
      this.offer(a);
    }
    if (state === "ended") {
      this.finish(a);
      a.view.ended(reasonText(call?.reason ?? null, a.role, a.peer, a.hungUpHere), call);
    }
  }

  /// A call of this user's that this tab is not in: one answered or made in another tab or on
  /// another device, or one this tab was in before it reloaded. It can be hung up from here.
  private other(callId: string, state: CallState, call: Call | null) {
    if (this.elsewhere?.callId === callId && state === "ended") {
      this.elsewhere.close();
      this.elsewhere = null;
    } else if (state === "in_progress" && call && this.elsewhere?.callId !== callId) {
      this.elsewhere?.close();
      const peer = call.callerId === this.me ? call.calleeId : call.callerId;
      this.elsewhere = new ElsewhereBar(callId, peer, async () => {
        const ack = await this.emit("end-call", { callId });
        if (!ack.ok) this.elsewhere?.note(ack.error?.message ?? "The call did not end; try again.");
      });
    }
  }

  /// Hangs up (or cancels a call that rings); before the call has its id, once it has.
  private async hangUp() {
    const a = this.active;
    if (!a || a.ended) return;
    a.hungUpHere = true;
    if (!a.id) return;
    const ack = await this.emit("end-call", { callId: a.id });
    if (ack.ok) this.onState(a.id, "ended", ack.call as Call);
    else a.view.note(ack.error?.message ?? "The call did not end; try again.");
  }

  /// Stops the media and the peer connection; the view stays to show the end.
  private finish(a: Active) {
    a.ended = true;
    a.pc?.close();
    a.local.getTracks().forEach((t) => t.stop());
    if (this.active === a) this.active = null;
  }

  // WebRTC.

  private peer(a: Active): RTCPeerConnection {
    const pc = new RTCPeerConnection({ iceServers: a.ice, iceTransportPolicy: icePolicy() });
    for (const t of a.local.getTracks()) pc.addTrack(t, a.local);
    pc.addEventListener("track", (e) => a.view.remote(e.streams[0] ?? new MediaStream([e.track])));
    pc.addEventListener("icecandidate", (e) => {
      if (e.candidate) this.send(a, { type: "candidate", candidate: e.candidate.toJSON() });
    });
    pc.addEventListener("connectionstatechange", () => {
      a.view.media(pc.connectionState);
      if (pc.connectionState === "connected" && !a.connected) {
        a.connected = true;
        this.emit("call-connected", { callId: a.id });
      }
    });
    a.view.controls(a.local);
    return pc;
  }

  private send(a: Active, signal: Signal) {
    if (a.ended) return;
    this.emit("signal", { callId: a.id, signal }).then((ack) => {
      if (!ack.ok && !a.ended) a.view.note(ack.error?.message ?? "A signal was not sent.");
    });
  }

  private async offer(a: Active) {
    const pc = a.pc!;
    await pc.setLocalDescription(await pc.createOffer());
    this.send(a, { type: "offer", sdp: pc.localDescription!.sdp });
  }

  /// The peer's offer, answer or candidate: only the device in the call takes it.
  private async onSignal(e: { callId: string; signal: Signal }) {
    const a = this.active;
    if (!a || a.id !== e.callId || a.ended || !a.pc) return;
    const pc = a.pc;
    const s = e.signal;
    try {
      if (s.type === "candidate") {
        if (pc.remoteDescription) await pc.addIceCandidate(s.candidate);
        else a.pending.push(s.candidate);
        return;
      }
      await pc.setRemoteDescription({ type: s.type, sdp: s.sdp });
      for (const c of a.pending.splice(0)) await pc.addIceCandidate(c);
      if (s.type === "offer") {
        await pc.setLocalDescription(await pc.createAnswer());
        this.send(a, { type: "answer", sdp: pc.localDescription!.sdp });
      }
    } catch (err) {
      a.view.note(`The other side's media offer did not fit: ${(err as Error).message}`);
    }
  }
}
