// Onda's web app for fans and creators: sign-in by link (#token=…), the conversation list, a
// conversation (typing indicator, read marks, emoji, image attachments), the notification
// bell, and the live pages: a stream's watch page (/app/watch/{slug}), the creator's go-live
// page (/app/live), the wallet (/app/wallet), a creator's page with the call button
// (/app/creator/{id}) and the calls page (/app/calls), in pages/; paid video calls (calls.ts)
// ring and run over whichever page is open. It uses only
// the public API and the realtime gateway, as a tenant's own front end would. User text is
// always set as textContent, never parsed as HTML; attachments are shown from their own URL. A
// tab that loses its connection for a moment gets what it missed when socket.io-client
// reconnects (docs/realtime.md, "Reconnecting and missed events").
import { io, Socket } from "socket.io-client";
import { Api, ApiError, Conversation, Message, Profile } from "./api";
import { Calls } from "./calls";
import { CallsPage } from "./pages/calls";
import { CreatorPage } from "./pages/creator";
import { LivePage } from "./pages/live";
import { WalletPage } from "./pages/wallet";
import { WatchPage } from "./pages/watch";
import { el } from "./ui";
import "./style.css";

const TOKEN_KEY = "onda.token";

/// The token of a sign-in link (`#token=…`), kept for this tab; the link's hash is cleared so it
/// does not stay in the address bar or the history.
function takeToken(): string | null {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function time(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/// What the attach button offers: the image types the server accepts.
const IMAGE_TYPES = "image/jpeg,image/png,image/webp,image/gif";

/// An attachment in a bubble: an image, or a player for audio and video.
function media(url: string, type: string | null): HTMLElement {
  if (type === "audio") return el("audio", { src: url, controls: "", preload: "metadata", "data-testid": "attachment-audio" });
  if (type === "video") return el("video", { src: url, controls: "", preload: "metadata", "data-testid": "attachment-video" });
  return el("img", { src: url, alt: "Image", class: "attachment", "data-testid": "attachment-image" });
}

/// The list's one line of a conversation's last message.
function preview(m: Message | null): string {
  if (!m) return "";
  if (m.content || !m.mediaUrl) return m.content;
  return m.mediaType === "audio" ? "🎵 Audio" : m.mediaType === "video" ? "🎬 Video" : "📷 Photo";
}

class App {
  private socket: Socket;
  private calls: Calls;
  private view = document.getElementById("view") as HTMLElement;
  /// The conversation on screen (the other user's id), if any.
  private open: string | null = null;
  private typingTimer: number | undefined;
  private typingSent = 0;
  /// The last read mark sent: the list is read after it is stored, so its counts include it.
  private pendingRead: Promise<unknown> = Promise.resolve();
  /// The newest offset of this user's feed seen (an event's last argument, an ack's `offset`,
  /// `recovery`'s): sent at every reconnect, so the server replays what came after it.
  private offset: string | undefined;
  /// Whether the socket connected before: a later `recovery` that is not complete means the
  /// page missed something and reloads from REST.
  private connectedBefore = false;

  constructor(
    private api: Api,
    private me: Profile,
    token: string,
  ) {
    // A function, so every automatic reconnect sends the newest offset.
    const auth = (cb: (data: object) => void) =>
      cb(this.offset === undefined ? { token } : { token, offset: this.offset });
    this.socket = io({ auth, transports: ["websocket", "polling"] });
    this.socket.on("connect_error", (e) => this.banner(`Cannot connect: ${e.message}`));
    this.calls = new Calls(this.socket, this.me.id);
    this.socket.on("recovery", (e: { recovered: boolean; offset: string | null }) => this.onRecovery(e));
    this.socket.on("receive-message", (m: Message, offset?: string) => {
      this.saw(offset);
      this.onMessage(m);
    });
    this.socket.on("typing-start", (e: { senderId: string }) => this.showTyping(e.senderId, true));
    this.socket.on("typing-stop", (e: { senderId: string }) => this.showTyping(e.senderId, false));
    this.socket.on("messages-read", (e: { readerId: string; messageId: string }, offset?: string) => {
      this.saw(offset);
      this.onRead(e);
    });
    this.socket.on("message-edited", (_: Message, offset?: string) => this.saw(offset));
    this.socket.on("message-deleted", (_: unknown, offset?: string) => this.saw(offset));
    this.socket.on("user-online", () => this.refreshList());
    this.socket.on("user-offline", () => this.refreshList());
    this.socket.on("notification", (e: { unreadCount: number }, offset?: string) => {
      this.saw(offset);
      this.setBell(e.unreadCount);
    });
    window.addEventListener("hashchange", () => {
      if (!this.onLivePage()) this.route();
    });
    this.initBell();
  }

  /// Keeps the newest offset (one user's offsets sort as text).
  saw(offset: string | null | undefined) {
    if (typeof offset === "string" && (this.offset === undefined || offset > this.offset)) {
      this.offset = offset;
    }
  }

  /// The end of a (re)connect's replay. Replayed events came before it through their usual
  /// handlers (a message shows once: `append` skips one it has); when they were not all of
  /// what was missed, the page reloads what it shows from REST.
  onRecovery(e: { recovered: boolean; offset: string | null }) {
    if (e.recovered) {
      this.saw(e.offset);
    } else {
      // Where the feed is now (another epoch, if the old offset was not this user's).
      this.offset = e.offset ?? undefined;
      // The live pages read REST themselves; a reload there would restart the player.
      if (this.connectedBefore && !this.onLivePage()) {
        this.route();
        this.api.notifications().then(({ unreadCount }) => this.setBell(unreadCount), () => undefined);
      }
    }
    this.connectedBefore = true;
  }

  /// Whether the address is a page of its own (watch, go-live, wallet, creator, calls) rather
  /// than messaging.
  onLivePage(): boolean {
    return location.pathname.replace(/^\/app\/?/, "") !== "";
  }

  /// The page of the address: a live page by its path under /app/, else the messaging pages by
  /// the hash (#/ the list, #/c/{user} a conversation).
  route() {
    const path = location.pathname.replace(/^\/app\/?/, "");
    const watch = path.match(/^watch\/([^/]+)\/?$/);
    if (watch) return new WatchPage(this.api, this.me, this.view, this.socket).show(decodeURIComponent(watch[1]));
    const creator = path.match(/^creator\/([^/]+)\/?$/);
    if (creator) return new CreatorPage(this.api, this.me, this.view, this.calls).show(decodeURIComponent(creator[1]));
    if (/^calls\/?$/.test(path)) return new CallsPage(this.api, this.me, this.view).show();
    if (/^live\/?$/.test(path)) return new LivePage(this.api, this.me, this.view).show();
    if (/^wallet\/?$/.test(path)) return new WalletPage(this.api, this.me, this.view).show();
    const m = location.hash.match(/^#\/c\/(.+)$/);
    if (m) this.showConversation(decodeURIComponent(m[1]));
    else this.showList();
  }

  banner(text: string) {
    const b = el("p", { class: "banner", "data-testid": "banner" }, text);
    this.view.prepend(b);
  }

  // The conversation list.

  async showList() {
    this.open = null;
    this.view.replaceChildren();
    const start = el("form", { class: "start", "data-testid": "start" });
    const who = el("input", { name: "user", placeholder: "Message a user by id", "data-testid": "start-user" });
    start.append(who, el("button", { type: "submit" }, "Open"));
    start.addEventListener("submit", (e) => {
      e.preventDefault();
      if (who.value.trim()) location.hash = `#/c/${encodeURIComponent(who.value.trim())}`;
    });
    const list = el("ul", { class: "conversations", "data-testid": "conversations" });
    this.view.append(el("h1", {}, "Messages"), start, list);
    await this.refreshList();
  }

  async refreshList() {
    const list = this.view.querySelector<HTMLUListElement>("[data-testid=conversations]");
    if (!list) return;
    await this.pendingRead.catch(() => undefined);
    const { items } = await this.api.conversations();
    list.replaceChildren(...items.map((c) => this.row(c)));
  }

  row(c: Conversation): HTMLLIElement {
    const li = el("li", { "data-testid": `conversation-${c.user.id}` });
    const a = el("a", { href: `#/c/${encodeURIComponent(c.user.id)}` });
    const name = c.user.deleted ? "Deleted user" : (c.user.displayName ?? c.user.id);
    a.append(
      el("span", { class: c.user.online ? "dot online" : "dot", "data-testid": "presence" }),
      el("strong", {}, name),
      el("span", { class: "last" }, preview(c.lastMessage)),
    );
    if (c.unreadCount > 0) {
      a.append(el("span", { class: "badge", "data-testid": "unread" }, String(c.unreadCount)));
    }
    li.append(a);
    return li;
  }

  // One conversation.

  async showConversation(other: string) {
    this.open = other;
    this.view.replaceChildren();
    const log = el("ol", { class: "log", "data-testid": "log" });
    const typing = el("p", { class: "typing", "data-testid": "typing" });
    typing.hidden = true;
    const form = el("form", { class: "compose" });
    const input = el("input", { name: "content", placeholder: "Write a message 🙂", "data-testid": "compose", autocomplete: "off" });
    const file = el("input", { type: "file", accept: IMAGE_TYPES, "data-testid": "attach-file", hidden: "" });
    const attach = el("button", { type: "button", title: "Attach an image", "data-testid": "attach" }, "📎");
    attach.addEventListener("click", () => file.click());
    file.addEventListener("change", async () => {
      const picked = file.files?.[0];
      file.value = "";
      if (!picked) return;
      attach.disabled = true;
      try {
        const a = await this.api.upload(picked);
        if (await this.send(other, input.value, a.url)) input.value = "";
      } catch (e) {
        if (!(e instanceof ApiError)) throw e;
        this.banner(e.message);
      } finally {
        attach.disabled = false;
      }
    });
    form.append(attach, file, input, el("button", { type: "submit", "data-testid": "send" }, "Send"));
    const title = el("header", { class: "watch-head" });
    title.append(el("h1", { "data-testid": "with" }, other), el("a", { href: `/app/creator/${encodeURIComponent(other)}`, class: "profile-link", "data-testid": "with-profile" }, "profile"));
    this.view.append(title, log, typing, form);
    input.addEventListener("input", () => this.typed(other));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      if (await this.send(other, input.value, null)) input.value = "";
    });
    try {
      const { items } = await this.api.history(other);
      for (const m of items.reverse()) this.append(m);
      this.markRead(other, items);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      this.banner(e.message);
    }
    input.focus();
  }

  /// Sends a message (with an attachment's URL, if any) and shows it; false when refused.
  async send(other: string, content: string, mediaUrl: string | null): Promise<boolean> {
    const payload = mediaUrl ? { receiverId: other, content, mediaUrl } : { receiverId: other, content };
    const ack = await this.socket.emitWithAck("send-message", payload);
    this.saw(ack.offset);
    if (!ack.ok) {
      this.banner(ack.error?.message ?? "The message was not sent.");
      return false;
    }
    this.socket.emit("typing-stop", { receiverId: other });
    this.typingSent = 0;
    this.append({
      id: ack.id,
      conversationId: ack.conversationId,
      senderId: this.me.id,
      receiverId: other,
      content,
      mediaUrl,
      mediaType: mediaUrl ? "image" : null,
      createdAt: ack.createdAt,
      deletedAt: null,
    });
    return true;
  }

  append(m: Message) {
    const log = this.view.querySelector<HTMLOListElement>("[data-testid=log]");
    if (!log || log.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    const mine = m.senderId === this.me.id;
    const li = el("li", { class: mine ? "mine" : "theirs", "data-id": m.id, "data-testid": "message" });
    if (m.mediaUrl && !m.deletedAt) li.append(media(m.mediaUrl, m.mediaType));
    if (m.content || m.deletedAt) li.append(el("span", { class: "text" }, m.deletedAt ? "(deleted)" : m.content));
    li.append(el("time", {}, time(m.createdAt)));
    log.append(li);
    li.scrollIntoView({ block: "end" });
  }

  onMessage(m: Message) {
    const other = m.senderId === this.me.id ? m.receiverId : m.senderId;
    if (this.open === other) {
      this.append(m);
      this.showTyping(other, false);
      if (m.senderId === other) this.markRead(other, [m]);
    } else {
      this.refreshList();
    }
  }

  markRead(other: string, seen: Message[]) {
    if (document.visibilityState === "hidden") return;
    if (seen.some((m) => m.senderId === other)) {
      this.pendingRead = this.socket.timeout(5000).emitWithAck("mark-read", { senderId: other });
    }
  }

  onRead(e: { readerId: string; messageId: string }) {
    if (this.open !== e.readerId) return;
    const log = this.view.querySelector("[data-testid=log]");
    log?.querySelectorAll(".seen").forEach((n) => n.remove());
    const at = log?.querySelector(`[data-id="${CSS.escape(e.messageId)}"]`);
    // Everything of mine up to that message is read: mark the newest of mine.
    const mine = log ? [...log.querySelectorAll("li.mine")] : [];
    const upto = at ? mine.filter((n) => n.compareDocumentPosition(at) & Node.DOCUMENT_POSITION_FOLLOWING || n === at) : [];
    upto.at(-1)?.append(el("span", { class: "seen", "data-testid": "seen" }, "Seen"));
  }

  /// Tells the other user we type, at most every 2 s (the indicator expires after 6 s).
  typed(other: string) {
    const now = Date.now();
    if (now - this.typingSent > 2000) {
      this.socket.emit("typing-start", { receiverId: other });
      this.typingSent = now;
    }
  }

  showTyping(sender: string, on: boolean) {
    if (this.open !== sender) return;
    const p = this.view.querySelector<HTMLParagraphElement>("[data-testid=typing]");
    if (!p) return;
    p.textContent = on ? `${sender} is typing…` : "";
    p.hidden = !on;
    window.clearTimeout(this.typingTimer);
    if (on) this.typingTimer = window.setTimeout(() => (p.hidden = true), 7000);
  }

  // The notification bell.

  async initBell() {
    const bell = document.getElementById("bell") as HTMLButtonElement;
    try {
      const { unreadCount } = await this.api.notifications();
      bell.hidden = false;
      this.setBell(unreadCount);
    } catch {
      return; // No notifications on this server: no bell.
    }
    bell.addEventListener("click", () => this.toggleNotifications());
  }

  setBell(n: number) {
    const count = document.getElementById("bell-count") as HTMLElement;
    count.textContent = String(n);
    count.hidden = n === 0;
  }

  async toggleNotifications() {
    const panel = document.getElementById("notifications") as HTMLElement;
    if (!panel.hidden) {
      panel.hidden = true;
      return;
    }
    const { items } = await this.api.notifications();
    panel.replaceChildren(
      ...items.map((n) => {
        const li = el("article", { class: n.read ? "read" : "unread", "data-testid": "notification" });
        li.append(el("strong", {}, n.title), el("p", {}, n.body));
        return li;
      }),
    );
    if (items.length === 0) panel.append(el("p", {}, "Nothing yet."));
    panel.hidden = false;
    await this.api.readAllNotifications();
    this.setBell(0);
  }
}

async function main() {
  const token = takeToken();
  const view = document.getElementById("view") as HTMLElement;
  if (!token) {
    view.replaceChildren(el("p", { "data-testid": "signed-out" }, "Open the sign-in link your app gave you."));
    return;
  }
  const api = new Api(token);
  let me: Profile;
  try {
    const who = await api.me();
    if (!who.user) throw new ApiError(403, "This link is not a user's sign-in link.");
    me = who.user;
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    view.replaceChildren(el("p", { "data-testid": "signed-out" }, (e as Error).message));
    return;
  }
  (document.getElementById("me") as HTMLElement).textContent = me.display_name;
  (document.getElementById("nav-live") as HTMLElement).hidden = !me.creator;
  new App(api, me, token).route();
}

main();
