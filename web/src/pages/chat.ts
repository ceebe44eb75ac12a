// A live stream's chat on the watch page, over the realtime gateway (docs/realtime.md, "Stream
// chat"): `join-stream` answers the last 50 messages, the viewer's role and the room's
// settings; messages, deletions, timeouts, bans, settings, the viewer count and
// whether it is live arrive as room events. The creator and their moderators get delete,
// time-out and ban controls on each message; tips made for the stream show highlighted in every
// viewer's chat. Message text is set as textContent, never parsed.
import type { Socket } from "socket.io-client";
import { el, money, say } from "../ui";

export interface ChatMessage {
  id: string;
  streamId: string;
  userId: string;
  displayName: string;
  content: string;
  kind: "message" | "tip";
  /// A tip's amount, in minor units of the tenant's currency.
  amount?: number;
  createdAt: string;
}

interface Settings {
  slowModeSecs: number;
  subscribersOnly: boolean;
}

type Ack = {
  ok?: boolean;
  error?: { code: string; message: string; retryAfterMs?: number };
  [k: string]: unknown;
};

/// What the emoji button offers.
const EMOJI = ["😀", "😂", "😍", "🔥", "👏", "🎉", "💜", "👋", "😮", "🙏", "💯", "🎶"];

/// How long the time-out control mutes a user.
const TIMEOUT_SECS = 60;

export interface ChatHooks {
  /// The room's viewer count changed.
  viewers(n: number): void;
  /// Whether the stream is live (a publisher streams into it).
  live(on: boolean): void;
}

export class ChatPanel {
  readonly node = el("aside", { class: "chat", "data-testid": "chat" });
  private log = el("ol", { class: "chat-log", "data-testid": "chat-log" });
  private input = el("input", { maxlength: "500", placeholder: "Say hi 👋", "data-testid": "chat-input", autocomplete: "off" });
  private note = el("p", { class: "note", "data-testid": "chat-note" });
  private state = el("p", { class: "chat-state", "data-testid": "chat-state" });
  private role: "viewer" | "moderator" | "creator" = "viewer";
  private joined = false;

  constructor(
    private socket: Socket,
    private me: string,
    private streamId: string,
    /// The tenant's currency, which tips are in.
    private currency: string,
    private hooks: ChatHooks,
  ) {
    this.note.hidden = true;
    const form = el("form", { class: "compose" });
    const toggle = el("button", { type: "button", title: "Emoji", "data-testid": "emoji-toggle" }, "🙂");
    const palette = el("div", { class: "emoji", "data-testid": "emoji-palette" });
    palette.hidden = true;
    for (const e of EMOJI) {
      const b = el("button", { type: "button", "data-testid": "emoji" }, e);
      b.addEventListener("click", () => {
        this.input.value += e;
        this.input.focus();
      });
      palette.append(b);
    }
    toggle.addEventListener("click", () => (palette.hidden = !palette.hidden));
    form.append(toggle, this.input, el("button", { type: "submit", "data-testid": "chat-send" }, "Send"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.node.append(el("h2", {}, "Chat"), this.state, this.log, palette, form, this.note);
    const mine = (e: { streamId?: string }) => e?.streamId === this.streamId;
    socket.on("chat-message", (e: { streamId: string; message: ChatMessage }) => mine(e) && this.append(e.message));
    socket.on("chat-message-deleted", (e: { streamId: string; messageId: string }) => {
      if (mine(e)) this.log.querySelector(`[data-id="${CSS.escape(e.messageId)}"]`)?.remove();
    });
    socket.on("chat-user-timed-out", (e: { streamId: string; userId: string; until: string }) => {
      if (mine(e) && e.userId === this.me) say(this.note, `You are timed out until ${new Date(e.until).toLocaleTimeString()}.`);
    });
    socket.on("chat-user-banned", (e: { streamId: string; userId: string }) => {
      if (!mine(e)) return;
      // Their messages go from the screen of everyone who moderates.
      if (e.userId === this.me) {
        this.joined = false;
        say(this.note, "You are banned from this creator's chats.");
      }
    });
    socket.on("chat-settings", (e: { streamId: string; settings: Settings }) => mine(e) && this.settings(e.settings));
    socket.on("viewer-count", (e: { streamId: string; viewers: number; live: boolean }) => {
      if (!mine(e)) return;
      hooks.viewers(e.viewers);
      hooks.live(e.live);
    });
    // The publish starting or ending, at once (the counts come every 5 s).
    socket.on("stream-started", (e: { streamId: string }) => mine(e) && hooks.live(true));
    socket.on("stream-ended", (e: { streamId: string }) => mine(e) && hooks.live(false));
    // A reconnected socket is in no room: join again (messages already shown are kept once).
    socket.on("connect", () => {
      if (this.joined) this.join();
    });
  }

  /// Joins the stream's room; false when refused (the note says why: `closed` when the stream's
  /// access refused it, else the server's sentence).
  async join(closed?: string): Promise<boolean> {
    let ack: Ack;
    try {
      ack = await this.socket.timeout(10000).emitWithAck("join-stream", { streamId: this.streamId });
    } catch {
      say(this.note, "The chat did not answer; reload the page to try again.");
      return false;
    }
    if (!ack.ok) {
      this.joined = false;
      this.node.classList.add("closed");
      const why = ack.error?.code === "forbidden" && closed ? closed : ack.error?.message;
      say(this.note, why ?? "The chat is not open to you.");
      return false;
    }
    this.joined = true;
    this.node.classList.remove("closed");
    this.note.hidden = true;
    this.role = (ack.role as ChatPanel["role"]) ?? "viewer";
    this.node.dataset.role = this.role;
    this.settings(ack.settings as Settings);
    for (const m of (ack.messages as ChatMessage[]) ?? []) this.append(m);
    const stream = ack.stream as { viewers?: number } | undefined;
    if (typeof stream?.viewers === "number") this.hooks.viewers(stream.viewers);
    return true;
  }

  /// An event with its ack; an ack that never came is answered as a refusal.
  private async emit(event: string, payload: object): Promise<Ack> {
    try {
      return await this.socket.timeout(10000).emitWithAck(event, payload);
    } catch {
      return { error: { code: "timeout", message: "The server did not answer; try again." } };
    }
  }

  private settings(s: Settings | undefined) {
    if (!s) return;
    const parts = [];
    if (s.slowModeSecs > 0) parts.push(`slow mode: one message every ${s.slowModeSecs} s`);
    if (s.subscribersOnly) parts.push("subscribers only");
    this.state.textContent = parts.join(" · ");
    this.state.hidden = parts.length === 0;
  }

  private async send() {
    const content = this.input.value.trim();
    if (!content) return;
    const ack = await this.emit("chat-message", { streamId: this.streamId, content });
    if (!ack.ok) {
      const wait = ack.error?.retryAfterMs ? ` (try again in ${Math.ceil(ack.error.retryAfterMs / 1000)} s)` : "";
      say(this.note, `${ack.error?.message ?? "Not sent."}${wait}`);
      return;
    }
    this.note.hidden = true;
    this.input.value = "";
    this.append(ack.message as ChatMessage);
  }

  private append(m: ChatMessage) {
    if (this.log.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    const li = el("li", { "data-testid": "chat-message", "data-id": m.id, "data-kind": m.kind, "data-user": m.userId });
    if (m.kind === "tip") {
      li.classList.add("tip");
      const amount = m.amount != null ? money(m.amount, this.currency) : "";
      li.append(el("strong", { class: "who" }, m.displayName), el("span", { class: "tipped" }, ` tipped ${amount} 💸 `));
    } else {
      li.append(el("strong", { class: "who" }, m.displayName), " ");
    }
    if (m.content) li.append(el("span", { class: "text" }, m.content));
    const moderates = this.role !== "viewer";
    if (moderates || m.userId === this.me) li.append(this.controls(m, moderates && m.userId !== this.me));
    this.log.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  /// Delete for the author and moderators; time-out and ban for moderators, on others' messages.
  private controls(m: ChatMessage, others: boolean): HTMLElement {
    const box = el("span", { class: "mod" });
    const act = (testid: string, label: string, title: string, event: string, payload: object) => {
      const b = el("button", { type: "button", "data-testid": testid, title }, label);
      b.addEventListener("click", async () => {
        const ack = await this.emit(event, { streamId: this.streamId, ...payload });
        if (!ack.ok) say(this.note, ack.error?.message ?? "Refused.");
        else if (event === "delete-chat-message") this.log.querySelector(`[data-id="${CSS.escape(m.id)}"]`)?.remove();
        else say(this.note, event === "ban-user" ? `${m.displayName} is banned.` : `${m.displayName} is timed out for ${TIMEOUT_SECS} s.`, true);
      });
      box.append(b);
    };
    if (m.kind === "message") act("chat-delete", "🗑", "Delete", "delete-chat-message", { messageId: m.id });
    if (others) {
      act("chat-timeout", "⏱", `Time out for ${TIMEOUT_SECS} s`, "timeout-user", { userId: m.userId, seconds: TIMEOUT_SECS });
      act("chat-ban", "⛔", "Ban", "ban-user", { userId: m.userId });
    }
    return box;
  }
}
