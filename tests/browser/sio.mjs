// Drives socket.io-client sockets for the gateway tests, as a platform's apps use it. Reads
// JSON commands on stdin, one per line, and writes JSON lines on stdout:
//   {"id":1,"op":"connect","client":"fan","url":"http://…","token":"…"}  → {"id":1,"ok":true}
//                                                                     or {"id":1,"error":"…"}
//   {"id":2,"op":"emit","client":"fan","event":"send-message","data":{…}} → {"id":2,"ack":…}
//   {"id":3,"op":"send","client":"fan","event":"typing-start","data":{…}} → {"id":3,"ok":true}
//   {"id":4,"op":"raw","client":"fan","packet":"42[\"x\"]"}               → {"id":4,"ok":true}
//   {"id":5,"op":"close","client":"fan"}                                  → {"id":5,"ok":true}
//   {"id":6,"op":"drop","client":"fan"}    the connection is lost (the engine closes)  → ok
//   {"id":8,"op":"offset","client":"fan"}  → {"id":8,"offset":"f_…-000000000003"} (or null)
//   {"id":7,"op":"reconnect","client":"fan"}  reconnects as socket.io-client does after a
//                            drop, the handshake carrying the newest offset seen  → ok or error
// A socket remembers the newest offset it saw (an event's last argument, an ack's `offset`, or
// `recovery`'s) and sends it in its handshake's auth, as docs/realtime.md tells clients to.
// and every event a socket receives: {"client":"fan","event":"receive-message","args":[…]},
// including {"client":"fan","event":"disconnect","args":["reason"]}.
import { io } from "socket.io-client";
import readline from "node:readline";

const sockets = new Map();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const offsets = new Map();
const newer = (a, b) => (typeof b === "string" && (a === undefined || b > a) ? b : a);
const saw = (client, offset) => offsets.set(client, newer(offsets.get(client), offset));

function connect({ id, client, url, token, auth }) {
  const base = auth ?? { token };
  offsets.delete(client); // a new socket under an old name starts from its own auth
  const socket = io(url, {
    // Called at every (re)connect: the newest offset seen so far goes with the token.
    auth: (cb) => {
      const offset = offsets.get(client);
      cb(offset === undefined ? base : { ...base, offset });
    },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: 10000,
  });
  sockets.set(client, socket);
  socket.onAny((event, ...args) => {
    if (event === "recovery") saw(client, args[0]?.offset);
    else if (args.length > 1) saw(client, args[args.length - 1]);
    out({ client, event, args });
  });
  socket.on("disconnect", (reason) => out({ client, event: "disconnect", args: [reason] }));
  socket.once("connect", () => out({ id, ok: true }));
  socket.once("connect_error", (err) => out({ id, error: err.message }));
}

async function run(cmd) {
  const socket = sockets.get(cmd.client);
  switch (cmd.op) {
    case "connect":
      return connect(cmd);
    case "emit":
      try {
        const ack = await socket.timeout(10000).emitWithAck(cmd.event, ...(cmd.args ?? [cmd.data]));
        saw(cmd.client, ack?.offset);
        return out({ id: cmd.id, ack });
      } catch (e) {
        return out({ id: cmd.id, error: String(e.message ?? e) });
      }
    case "send":
      socket.emit(cmd.event, ...(cmd.args ?? [cmd.data]));
      return out({ id: cmd.id, ok: true });
    case "raw":
      socket.io.engine.write(cmd.packet);
      return out({ id: cmd.id, ok: true });
    case "close":
      socket.close();
      sockets.delete(cmd.client);
      return out({ id: cmd.id, ok: true });
    case "offset":
      return out({ id: cmd.id, offset: offsets.get(cmd.client) ?? null });
    case "drop":
      socket.once("disconnect", () => out({ id: cmd.id, ok: true }));
      socket.io.engine.close();
      return;
    case "reconnect":
      socket.once("connect", () => out({ id: cmd.id, ok: true }));
      socket.once("connect_error", (err) => out({ id: cmd.id, error: err.message }));
      socket.connect();
      return;
    default:
      return out({ id: cmd.id, error: `unknown op ${cmd.op}` });
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (line.trim()) run(JSON.parse(line)).catch((e) => out({ error: String(e) }));
});
rl.on("close", () => {
  for (const s of sockets.values()) s.close();
  process.exit(0);
});
