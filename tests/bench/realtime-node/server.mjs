// The Node.js peer of Onda's realtime gateway in scripts/bench-realtime.sh: Socket.io 4.8 with
// its defaults, doing for the same events what a creator platform's own server does today.
//
// - Handshake: `auth.token` must be an HS256 user token signed with JWT_SECRET, issued by
//   JWT_ISSUER (the tenant), unexpired, with a `sub`; the socket joins its user's room.
// - `send-message` { receiverId, content }: validated like Onda's (an id of the same alphabet,
//   not your own; text of 1–4000 characters, no control characters but line breaks and tabs,
//   not blank), stored in PostgreSQL (table `messages` of DATABASE_URL, made at start), emitted
//   as `receive-message` to both users' rooms but the sending socket, then acknowledged
//   `{ ok, id, createdAt }` (or `{ error: { code, message } }`).
// - `join-stream` { streamId } and `stream-message` { streamId, content }: a stream's chat room
//   (stored, then emitted to the room, then acknowledged); Onda has no such event yet.
//
// Prints `listening on PORT` once it serves (PORT 0 picks a free one).
import { createServer } from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";
import pg from "pg";

const { DATABASE_URL, JWT_SECRET, JWT_ISSUER } = process.env;
if (!DATABASE_URL || !JWT_SECRET || !JWT_ISSUER) {
  console.error("set DATABASE_URL, JWT_SECRET and JWT_ISSUER");
  process.exit(2);
}
// As many connections as Onda's pool (database.max_connections defaults to 10).
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: Number(process.env.PG_POOL ?? 10) });
await pool.query(`CREATE TABLE IF NOT EXISTS messages (
  id BIGSERIAL PRIMARY KEY,
  room TEXT,
  sender_id TEXT NOT NULL,
  receiver_id TEXT,
  content TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`);

const USER_ID = /^[A-Za-z0-9_.:@-]{1,128}$/;
// Control characters but tab, line feed and carriage return.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

function refuse(code, message) {
  return { error: { code, message } };
}

function content(value) {
  if (typeof value !== "string") return [null, "content must be a string."];
  if ([...value].length > 4000) return [null, "content is longer than 4000 characters."];
  if (CONTROL.test(value)) return [null, "content has control characters."];
  if (value.trim() === "") return [null, "content is blank."];
  return [value, null];
}

const httpServer = createServer();
const io = new Server(httpServer);

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (typeof token !== "string") return next(new Error("Connect with the user token."));
  try {
    const claims = jwt.verify(token, JWT_SECRET, { algorithms: ["HS256"], issuer: JWT_ISSUER });
    if (typeof claims.sub !== "string" || !USER_ID.test(claims.sub)) {
      return next(new Error("The token names no user."));
    }
    socket.data.userId = claims.sub;
    next();
  } catch (e) {
    next(new Error(e.message));
  }
});

io.on("connection", (socket) => {
  const me = socket.data.userId;
  socket.join(`user:${me}`);

  socket.on("send-message", async (payload, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      return reply(refuse("invalid_payload", "send-message: not a JSON object."));
    }
    const { receiverId } = payload;
    if (typeof receiverId !== "string" || !USER_ID.test(receiverId) || receiverId === me) {
      return reply(refuse("invalid_payload", "receiverId is not another user's id."));
    }
    const [text, bad] = content(payload.content);
    if (bad) return reply(refuse("invalid_payload", bad));
    let row;
    try {
      const r = await pool.query(
        "INSERT INTO messages (sender_id, receiver_id, content) VALUES ($1, $2, $3) RETURNING id, created_at",
        [me, receiverId, text],
      );
      row = r.rows[0];
    } catch (e) {
      return reply(refuse("internal", `could not store the message: ${e.message}`));
    }
    const message = {
      id: String(row.id),
      senderId: me,
      receiverId,
      content: text,
      createdAt: row.created_at.toISOString(),
    };
    socket.to([`user:${receiverId}`, `user:${me}`]).emit("receive-message", message);
    reply({ ok: true, id: message.id, createdAt: message.createdAt });
  });

  socket.on("join-stream", (payload, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    const streamId = payload?.streamId;
    if (typeof streamId !== "string" || !USER_ID.test(streamId)) {
      return reply(refuse("invalid_payload", "streamId is not an id."));
    }
    socket.join(`stream:${streamId}`);
    reply({ ok: true });
  });

  socket.on("stream-message", async (payload, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    const streamId = payload?.streamId;
    if (typeof streamId !== "string" || !USER_ID.test(streamId)) {
      return reply(refuse("invalid_payload", "streamId is not an id."));
    }
    const [text, bad] = content(payload.content);
    if (bad) return reply(refuse("invalid_payload", bad));
    let row;
    try {
      const r = await pool.query(
        "INSERT INTO messages (room, sender_id, content) VALUES ($1, $2, $3) RETURNING id, created_at",
        [streamId, me, text],
      );
      row = r.rows[0];
    } catch (e) {
      return reply(refuse("internal", `could not store the message: ${e.message}`));
    }
    const message = {
      id: String(row.id),
      streamId,
      senderId: me,
      content: text,
      createdAt: row.created_at.toISOString(),
    };
    socket.to(`stream:${streamId}`).emit("stream-message", message);
    reply({ ok: true, id: message.id, createdAt: message.createdAt });
  });
});

httpServer.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening on ${httpServer.address().port}`);
});
