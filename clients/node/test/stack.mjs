// A real ssehub for the Node tests: a private vhost of the test RabbitMQ (or a
// private broker, for restarts), a dispatcher and an edge started from the
// repository's virtualenv, a temporary SQLite store, tokens signed here, and
// SSE read over a real socket. Every wait is on a signal, with a timeout.

import { spawn, spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../../../", import.meta.url));
export const SSEHUB = process.env.SSEHUB_BIN ?? path.join(REPO, ".venv/bin/ssehub");
export const PYTHON = path.join(REPO, ".venv/bin/python");
export const BROKER = process.env.SSEHUB_TEST_RABBITMQ_URL ?? "amqp://guest:guest@127.0.0.1:5672/";
export const SECRET = "test-secret-0123456789abcdef0123456789abcdef";

export const uid = (prefix = "t") => `${prefix}-${randomBytes(4).toString("hex")}`;

/** Resolves when `check()` is truthy; rejects after `ms` with `what`. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25)); // polling a condition, not settling
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A fresh vhost of the local broker (names never collide between runs). */
export function vhost(base = BROKER) {
  const url = new URL(base);
  const name = uid("ssehub-node");
  const ctl = (...args) => {
    const done = spawnSync("rabbitmqctl", ["-q", ...args], { encoding: "utf8" });
    if (done.status !== 0) throw new Error(`rabbitmqctl ${args.join(" ")}: ${done.stderr}`);
  };
  ctl("add_vhost", name);
  ctl("set_permissions", "-p", name, decodeURIComponent(url.username || "guest"), ".*", ".*", ".*");
  url.pathname = "/" + encodeURIComponent(name);
  return { url: url.href, drop: () => ctl("delete_vhost", name) };
}

/** A private RabbitMQ node (tests/faults/broker_cli.py): restart() it at will. */
export async function privateBroker() {
  const child = spawn(PYTHON, ["-m", "tests.faults.broker_cli"], {
    cwd: REPO,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: child.stdout });
  const next = () =>
    new Promise((resolve, reject) => {
      lines.once("line", resolve);
      child.once("exit", (code) => reject(new Error(`private broker exited (${code})`)));
    });
  const url = await next();
  return {
    url,
    async restart() {
      child.stdin.write("restart\n");
      const answer = await next();
      if (answer !== "ok restart") throw new Error(`private broker: ${answer}`);
    },
    async close() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin.end();
      await exited;
    },
  };
}

function httpGet(url, headers = {}) {
  return new Promise((resolve) => {
    const req = http.get(url, { headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", () => resolve(0));
    req.setTimeout(2000, () => req.destroy());
  });
}

function start(name, args, env, dir) {
  const log = path.join(dir, `${name}.log`);
  const out = createWriteStream(log);
  const child = spawn(SSEHUB, args, { env, cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  return { name, child, log };
}

/** A dispatcher and an edge on `amqpUrl`; stop() ends both. */
export async function startStack(amqpUrl, extraEnv = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "ssehub-node-"));
  const env = {
    ...process.env,
    SSEHUB_RABBITMQ_URL: amqpUrl,
    SSEHUB_DATABASE_URL: `sqlite:///${path.join(dir, "ssehub.db")}`,
    SSEHUB_JWT_SECRET: SECRET,
    SSEHUB_LOG_FORMAT: "text",
    ...extraEnv,
  };
  const [dport, eport] = [await freePort(), await freePort()];
  const procs = [
    start("dispatcher", ["dispatcher", "--port", String(dport)], env, dir),
    start("edge", ["edge", "--port", String(eport)], env, dir),
  ];
  const stack = {
    dir,
    env,
    edge: `http://127.0.0.1:${eport}`,
    logs: () => procs.map((p) => `--- ${p.name}\n${readFileSync(p.log, "utf8")}`).join("\n"),
    async stop() {
      await Promise.all(
        procs.map(
          (p) =>
            new Promise((resolve) => {
              if (p.child.exitCode !== null) return resolve();
              p.child.once("exit", resolve);
              p.child.kill("SIGTERM");
            }),
        ),
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const [p, port] of [[procs[0], dport], [procs[1], eport]]) {
      await until(
        async () => {
          if (p.child.exitCode !== null) throw new Error(`${p.name} exited:\n${stack.logs()}`);
          return (await httpGet(`http://127.0.0.1:${port}/readyz`)) === 200;
        },
        60_000,
        `${p.name} ready`,
      );
    }
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}

const b64url = (data) => Buffer.from(data).toString("base64url");

/** An HS256 token for `user`, as the deployment's identity provider would sign it. */
export function token(user, ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub: user, iat: now, exp: now + ttl }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** One SSE stream of `user`, read over a socket; reopened with Last-Event-ID
 *  when the edge ends it (as an EventSource does) unless `reconnect` is false. */
export function openStream(edge, user, { lastEventId = null, reconnect = true } = {}) {
  const stream = { events: [], lastId: lastEventId, opened: 0, ended: false, closed: false };
  let req = null;
  const connect = () => {
    const headers = { Authorization: `Bearer ${token(user)}`, Accept: "text/event-stream" };
    if (stream.lastId !== null) headers["Last-Event-ID"] = String(stream.lastId);
    req = http.get(`${edge}/sse/connect`, { headers }, (res) => {
      stream.status = res.statusCode;
      stream.opened += 1;
      res.setEncoding("utf8");
      let buffer = "";
      res.on("data", (chunk) => {
        buffer += chunk;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = { event: "message", id: null, data: "" };
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") event.event = value;
            else if (field === "id") event.id = value;
            else if (field === "data") data.push(value);
          }
          if (!data.length && event.id === null && event.event === "message") continue;
          event.data = JSON.parse(data.join("\n") || "null");
          if (event.id !== null && event.event !== "connected") stream.lastId = event.id;
          stream.events.push(event);
        }
      });
      res.on("end", () => {
        if (stream.closed || !reconnect) stream.ended = true;
        else setTimeout(connect, 200); // as an EventSource does, after its retry
      });
    });
    req.on("error", () => {
      if (!stream.closed && reconnect) setTimeout(connect, 200);
      else stream.ended = true;
    });
  };
  connect();
  stream.named = (name) => stream.events.filter((e) => e.event === name);
  stream.waitFor = (name, count, ms = 20_000) =>
    until(() => stream.named(name).length >= count, ms,
      `${count} "${name}" events for ${user} (have ${stream.named(name).length})`);
  stream.close = () => {
    stream.closed = true;
    req?.destroy();
  };
  return stream;
}
