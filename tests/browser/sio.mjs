// Drives socket.io-client sockets for the gateway tests, as a platform's apps use it. Reads
// JSON commands on stdin, one per line, and writes JSON lines on stdout:
//   {"id":1,"op":"connect","client":"fan","url":"http://…","token":"…"}  → {"id":1,"ok":true}
//                                                                     or {"id":1,"error":"…"}
//   {"id":2,"op":"emit","client":"fan","event":"send-message","data":{…}} → {"id":2,"ack":…}
//   {"id":3,"op":"send","client":"fan","event":"typing-start","data":{…}} → {"id":3,"ok":true}
//   {"id":4,"op":"raw","client":"fan","packet":"42[\"x\"]"}               → {"id":4,"ok":true}
//   {"id":5,"op":"close","client":"fan"}                                  → {"id":5,"ok":true}
// and every event a socket receives: {"client":"fan","event":"receive-message","args":[…]},
// including {"client":"fan","event":"disconnect","args":["reason"]}.
import { io } from "socket.io-client";
import readline from "node:readline";

const sockets = new Map();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function connect({ id, client, url, token, auth }) {
  const socket = io(url, {
    auth: auth ?? { token },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: 10000,
  });
  sockets.set(client, socket);
  socket.onAny((event, ...args) => out({ client, event, args }));
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
