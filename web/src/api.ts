// The REST half of the app: the public API with the user's token, as any tenant's front end
// would call it.

export interface Profile {
  id: string;
  display_name: string;
  avatar_url: string | null;
  creator: boolean;
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

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

export class Api {
  constructor(private token: string) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await fetch(path, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return this.answer<T>(r, `${method} ${path}`);
  }

  private async answer<T>(r: Response, what: string): Promise<T> {
    const text = await r.text();
    const json = text ? JSON.parse(text) : null;
    if (!r.ok) throw new ApiError(r.status, json?.detail ?? `${what}: ${r.status}`);
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
}
