// The REST half of the app: the public API with the user's token, as any tenant's front end
// would call it.

export interface Profile {
  id: string;
  display_name: string;
  avatar_url: string | null;
  creator: boolean;
  tip_minimum: number;
  subscription_price: number | null;
  available_for_calls: boolean;
  call_price_per_minute: number | null;
  call_billing: CallBilling;
  calls_subscribers_only: boolean;
}

export type CallBilling = "minute" | "second";

/// `GET /v1/me/creators/{id}`: a creator as a signed-in user sees them, with what a call takes.
export interface CreatorProfile {
  id: string;
  display_name: string;
  avatar_url: string | null;
  subscription_price: number | null;
  tip_minimum: number;
  currency: string;
  online: boolean;
  subscribed: boolean;
  blocked: boolean;
  calls: { available: boolean; price_per_minute: number | null; billing: CallBilling; subscribers_only: boolean };
}

export type CallState = "calling" | "ringing" | "in_progress" | "ended";
export type CallEndReason = "rejected" | "missed" | "cancelled" | "hung_up" | "busy" | "balance_exhausted" | "connection_lost";

/// A call's record (camelCase, as in the gateway's events): `GET /v1/me/calls`, `call-state`.
export interface Call {
  id: string;
  callerId: string;
  calleeId: string;
  state: CallState;
  reason: CallEndReason | null;
  pricePerMinute: number;
  billing: CallBilling;
  currency: string;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  durationSecs: number;
  unitsCharged: number;
  amount: number;
  setupMs: number | null;
}

export interface Message {
  id: string;
  conversationId: string;
  senderId: string;
  receiverId: string;
  content: string;
  mediaUrl: string | null;
  mediaType: string | null;
  createdAt: string;
  deletedAt: string | null;
}

/// A file uploaded for a message (`POST /v1/me/attachments`); `url` goes in `mediaUrl`.
export interface Attachment {
  id: string;
  url: string;
  mediaType: "image" | "audio" | "video";
  contentType: string;
  bytes: number;
  width?: number;
  height?: number;
  durationMs?: number;
}

export interface Conversation {
  id: string;
  user: { id: string; displayName: string | null; deleted: boolean; online: boolean; lastSeen: string | null };
  lastMessage: Message | null;
  unreadCount: number;
}

export interface Notification {
  id: string;
  type: string;
  title: string;
  body: string;
  link: string | null;
  read: boolean;
  readAt: string | null;
  createdAt: string;
}

/// What would let a refused viewer in (a 402/403 problem's `grant`, a stream view's `grant`).
export interface AccessGrant {
  action: "subscribe" | "purchase" | "tenant";
  creatorId: string | null;
  streamId: string | null;
  price: number | null;
  currency: string;
}

export type StreamAccess = "public" | "token" | "subscribers" | "pay_per_view";

/// `GET /v1/me/streams/{id}`: a stream as a signed-in viewer sees it.
export interface StreamView {
  id: string;
  slug: string;
  name: string;
  access: StreamAccess;
  price: number | null;
  currency: string;
  creator: {
    id: string;
    display_name: string;
    avatar_url: string | null;
    subscription_price: number | null;
    tip_minimum: number;
  } | null;
  entitled: boolean;
  grant: AccessGrant | null;
  viewers: number;
  publishing: boolean;
}

/// `GET /v1/me/streams`: one of a creator's own streams.
export interface CreatorStream {
  id: string;
  slug: string;
  name: string;
  access: StreamAccess;
  price: number | null;
  currency: string;
  rtmp_url: string | null;
  stream_key: string;
  publish_url: string | null;
  watch_page_path: string;
  viewers: number;
  publishing: boolean;
}

export interface PlaybackToken {
  token: string;
  expires_at: string;
  watch_path: string;
}

export interface Wallet {
  currency: string;
  balance: number;
  earnings?: number;
}

export interface LedgerTransaction {
  id: string;
  source: string;
  user_id: string;
  counterparty_id: string | null;
  amount: number;
  currency: string;
  reference: string | null;
  reason: string | null;
  entries: { account: string; amount: number }[];
  created_at: string;
}

export interface EarningsFigures {
  gross: number;
  fee: number;
  net: number;
  transactions: number;
}

export interface EarningsReport {
  currency: string;
  from: string;
  to: string;
  days: { day: string; sources: Record<string, EarningsFigures>; total: EarningsFigures }[];
  total: EarningsFigures;
}

export interface Payout {
  id: string;
  amount: number;
  currency: string;
  status: "requested" | "paid" | "rejected";
  reason: string | null;
  created_at: string;
}

export interface Subscription {
  id: string;
  creatorId: string;
  status: string;
  price: number | null;
  currency: string;
  renews: boolean;
  endsAt: string;
}

export interface Tip {
  id: string;
  amount: number;
  currency: string;
  creatorId: string;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    /// The problem document, when the server sent one.
    public problem: { detail?: string; grant?: AccessGrant } | null = null,
  ) {
    super(message);
  }
}

/// A fresh `Idempotency-Key`: 128 random bits as hex (crypto.getRandomValues works on plain
/// http too, where randomUUID does not).
export function newKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export class Api {
  constructor(private token: string) {}

  /// A request with the user's token; `key` is sent as the `Idempotency-Key` of a request
  /// that moves value (the caller keeps it for retries of the same operation).
  async call<T>(method: string, path: string, body?: unknown, key?: string): Promise<T> {
    const r = await fetch(path, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...(key === undefined ? {} : { "Idempotency-Key": key }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return this.answer<T>(r, `${method} ${path}`);
  }

  private async answer<T>(r: Response, what: string): Promise<T> {
    const text = await r.text();
    const json = text ? JSON.parse(text) : null;
    if (!r.ok) throw new ApiError(r.status, json?.detail ?? `${what}: ${r.status}`, json);
    return json as T;
  }

  /// Uploads a file as the raw body with its own type; the server checks it is what it says.
  async upload(file: File): Promise<Attachment> {
    const r = await fetch("/v1/me/attachments", {
      method: "POST",
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": file.type },
      body: file,
    });
    return this.answer<Attachment>(r, "POST /v1/me/attachments");
  }

  me() {
    return this.call<{ role: string; user: Profile | null }>("GET", "/v1/me");
  }

  conversations() {
    return this.call<{ items: Conversation[]; unreadTotal: number }>("GET", "/v1/me/conversations");
  }

  history(userId: string) {
    return this.call<{ items: Message[]; nextBefore: string | null }>(
      "GET",
      `/v1/me/conversations/${encodeURIComponent(userId)}/messages?limit=100`,
    );
  }

  notifications() {
    return this.call<{ items: Notification[]; unreadCount: number }>("GET", "/v1/me/notifications?limit=20");
  }

  readAllNotifications() {
    return this.call<{ unreadCount: number }>("POST", "/v1/me/notifications/read-all");
  }

  // Live streams.

  stream(idOrSlug: string) {
    return this.call<StreamView>("GET", `/v1/me/streams/${encodeURIComponent(idOrSlug)}`);
  }

  myStreams() {
    return this.call<{ items: CreatorStream[] }>("GET", "/v1/me/streams");
  }

  updateMyStream(id: string, change: { access?: StreamAccess; price?: number }) {
    return this.call<CreatorStream>("PATCH", `/v1/me/streams/${encodeURIComponent(id)}`, change);
  }

  playback(id: string) {
    return this.call<PlaybackToken>("POST", `/v1/me/streams/${encodeURIComponent(id)}/playback`);
  }

  purchase(id: string, key: string) {
    return this.call<unknown>("POST", `/v1/me/streams/${encodeURIComponent(id)}/purchase`, undefined, key);
  }

  // Money.

  subscribe(creatorId: string, key: string) {
    return this.call<Subscription>("POST", "/v1/me/subscriptions", { creatorId }, key);
  }

  subscriptions() {
    return this.call<{ items: Subscription[] }>("GET", "/v1/me/subscriptions");
  }

  /// A tip; with `streamId` it also shows in that stream's chat.
  tip(creatorId: string, amount: number, message: string, key: string, streamId?: string) {
    return this.call<Tip>("POST", "/v1/me/tips", { creatorId, amount, message, ...(streamId ? { streamId } : {}) }, key);
  }

  wallet() {
    return this.call<Wallet>("GET", "/v1/me/wallet");
  }

  transactions() {
    return this.call<{ items: LedgerTransaction[] }>("GET", "/v1/me/transactions?limit=50");
  }

  earnings() {
    return this.call<EarningsReport>("GET", "/v1/me/earnings");
  }

  payouts() {
    return this.call<{ items: Payout[] }>("GET", "/v1/me/payouts?limit=20");
  }

  requestPayout(amount: number, key: string) {
    return this.call<Payout>("POST", "/v1/me/payouts", { amount }, key);
  }

  setSubscriptionPrice(price: number | null) {
    return this.call<Profile>("PATCH", "/v1/me", { subscription_price: price });
  }

  // Calls (made over the gateway; see calls.ts).

  creator(id: string) {
    return this.call<CreatorProfile>("GET", `/v1/me/creators/${encodeURIComponent(id)}`);
  }

  /// A creator's own call settings; a field left out stays as it is (`null` price: no calls).
  setCallSettings(change: { available_for_calls?: boolean; call_price_per_minute?: number | null }) {
    return this.call<Profile>("PATCH", "/v1/me", change);
  }

  myCalls() {
    return this.call<{ items: Call[]; next_cursor: string | null }>("GET", "/v1/me/calls?limit=50");
  }
}
