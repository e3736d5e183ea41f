// The example, end to end: the Express app posts through ssehub, two
// EventSource clients receive each message with their own ids, and a client
// that was away comes back with Last-Event-ID and gets exactly what it missed.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { EventSource } from "eventsource";
import { freePort, startStack, token, uid, until, vhost } from "../../../clients/node/test/stack.mjs";

const SERVER = fileURLToPath(new URL("../dist/server.js", import.meta.url));
let broker;
let stack;
let app;
let appUrl;

before(async () => {
  broker = vhost();
  stack = await startStack(broker.url);
  const port = await freePort();
  appUrl = `http://127.0.0.1:${port}`;
  app = spawn(process.execPath, [SERVER], {
    env: { ...process.env, PORT: String(port), SSEHUB_RABBITMQ_URL: broker.url },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise((resolve, reject) => {
    app.stdout.on("data", (d) => String(d).includes("express-chat on") && resolve());
    app.once("exit", (code) => reject(new Error(`the example exited (${code})`)));
  });
});

after(async () => {
  if (app && app.exitCode === null) {
    const exited = new Promise((resolve) => app.once("exit", resolve));
    app.kill("SIGTERM");
    await exited;
  }
  await stack?.stop();
  broker?.drop();
});

async function post(path, body) {
  const res = await fetch(appUrl + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** An EventSource of `user`; `lastEventId`: sent as the Last-Event-ID header. */
function client(user, lastEventId = null) {
  const got = { connected: [], messages: [] };
  const es = new EventSource(`${stack.edge}/sse/connect?token=${token(user)}`, {
    fetch: (url, init) =>
      fetch(url, {
        ...init,
        headers: { ...init.headers, ...(lastEventId === null ? {} : { "Last-Event-ID": lastEventId }) },
      }),
  });
  es.addEventListener("connected", (e) => got.connected.push(JSON.parse(e.data)));
  es.addEventListener("message:new", (e) =>
    got.messages.push({ ...JSON.parse(e.data).message, eventId: e.lastEventId }));
  got.close = () => es.close();
  got.ready = () => until(() => got.connected.length > 0, 20_000, `${user} connected`);
  got.count = (n) => until(() => got.messages.length >= n, 20_000, `${n} messages for ${user}`);
  return got;
}

test("a message reaches both members; one away comes back and gets what it missed", async () => {
  const [conversationId, alice, bob] = [uid("conv"), uid("alice"), uid("bob")];
  assert.equal((await post("/conversations", { conversationId, members: [alice, bob] })).status, 200);
  const a = client(alice);
  const b = client(bob);
  await Promise.all([a.ready(), b.ready()]);

  const first = await post("/messages", { conversationId, senderId: alice, text: "hello" });
  assert.equal(first.status, 200);
  assert.equal(first.body.success, true);
  await Promise.all([a.count(1), b.count(1)]);
  for (const c of [a, b]) {
    assert.deepEqual(c.messages.map((m) => [m.eventId, m.text, m.senderId]), [["1", "hello", alice]]);
    assert.equal(typeof c.messages[0].id, "string"); // the stored message's own id
  }
  assert.equal(a.messages[0].createdAt, first.body.message.createdAt);

  b.close(); // bob goes away; two messages while he is
  await post("/messages", { conversationId, senderId: alice, text: "are you there?" });
  await post("/messages", { conversationId, senderId: alice, text: "bob?" });
  await a.count(3);

  const back = client(bob, "1");
  await back.ready();
  await back.count(2);
  assert.equal(back.connected[0].recovered, true);
  assert.deepEqual(back.messages.map((m) => [m.eventId, m.text]), [["2", "are you there?"], ["3", "bob?"]]);
  await post("/messages", { conversationId, senderId: bob, text: "here" });
  await Promise.all([a.count(4), back.count(3)]);
  assert.deepEqual(back.messages.map((m) => m.eventId), ["2", "3", "4"]); // nothing twice
  a.close();
  back.close();
});

test("a call ssehub refuses is a 400 with the reason; the next one goes through", async () => {
  const [conversationId, carol] = [uid("conv"), uid("carol")];
  const bad = await post("/messages", { conversationId: "has space", senderId: carol, text: "x" });
  assert.deepEqual(bad, {
    status: 400,
    body: { error: "conversation_id: character ' ' is not allowed (printable, no spaces)" },
  });
  await post("/conversations", { conversationId, members: [carol] });
  const c = client(carol);
  await c.ready();
  assert.equal((await post("/messages", { conversationId, senderId: carol, text: "ok" })).status, 200);
  await c.count(1);
  assert.deepEqual(c.messages.map((m) => [m.eventId, m.text]), [["1", "ok"]]);
  c.close();
});
