// Every call's messages arrive as the contract says, through a real dispatcher
// and edge, read from SSE streams over real sockets.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import amqp from "amqplib";
import { Publisher } from "../dist/index.js";
import { openStream, startStack, uid, vhost } from "./stack.mjs";

let broker;
let stack;
let hub;
const streams = [];

before(async () => {
  broker = vhost();
  stack = await startStack(broker.url);
  hub = new Publisher(broker.url);
});

after(async () => {
  for (const s of streams) s.close();
  await hub?.close();
  await stack?.stop();
  broker?.drop();
});

async function listen(user, options) {
  const stream = openStream(stack.edge, user, options);
  streams.push(stream);
  await stream.waitFor("connected", 1);
  return stream;
}

test("sendEventToUser: the user's streams get it, numbered from 1", async () => {
  const user = uid("u");
  const [a, b] = [await listen(user), await listen(user)];
  const key = await hub.sendEventToUser(user, "note:new", { text: "hi" });
  assert.match(key, /^[0-9a-f]{32}$/);
  await hub.sendEventToUser(user, "note:new", { text: "again" }, { key: "k-" + user });
  for (const s of [a, b]) {
    await s.waitFor("note:new", 2);
    assert.deepEqual(s.named("note:new").map((e) => [e.id, e.data]),
      [["1", { text: "hi" }], ["2", { text: "again" }]]);
  }
});

test("an idempotency key makes a repeated call one event", async () => {
  const user = uid("u");
  const s = await listen(user);
  const key = "order-" + user;
  assert.equal(await hub.sendEventToUser(user, "paid", 1, { key }), key);
  assert.equal(await hub.sendEventToUser(user, "paid", 1, { key }), key);
  await hub.sendEventToUser(user, "shipped", 2);
  await s.waitFor("shipped", 1);
  assert.deepEqual(s.events.filter((e) => e.id !== null && e.event !== "connected").map((e) => [e.event, e.id]),
    [["paid", "1"], ["shipped", "2"]]);
});

test("broadcastToConversation after setMembers: every member but the excluded", async () => {
  const conv = uid("c");
  const [alice, bob, carol] = [uid("alice"), uid("bob"), uid("carol")];
  const streamsOf = Object.fromEntries(
    await Promise.all([alice, bob, carol].map(async (u) => [u, await listen(u)])),
  );
  await hub.setMembers(conv, [alice, bob]);
  await hub.addMembers(conv, [carol]);
  await hub.broadcastToConversation(conv, "message:new", { body: "hello" }, { exclude: [alice] });
  await hub.removeMembers(conv, [bob]);
  await hub.broadcastToConversation(conv, "message:new", { body: "bye" });
  await streamsOf[carol].waitFor("message:new", 2);
  await streamsOf[alice].waitFor("message:new", 1);
  await streamsOf[bob].waitFor("message:new", 1);
  const bodies = (u) => streamsOf[u].named("message:new").map((e) => e.data.body);
  assert.deepEqual(bodies(carol), ["hello", "bye"]);
  assert.deepEqual(bodies(bob), ["hello"]);
  assert.deepEqual(bodies(alice), ["bye"]);
});

test("sendEventToUsers, ephemeral and receipts", async () => {
  const [x, y] = [uid("x"), uid("y")];
  const [sx, sy] = [await listen(x), await listen(y)];
  await hub.sendEventToUsers([x, y], "ping:all", { n: 1 });
  await hub.sendEventToUser(x, "typing", { on: true }, { ephemeral: true });
  await sx.waitFor("typing", 1);
  await sy.waitFor("ping:all", 1);
  assert.equal(sx.named("ping:all")[0].id, "1");
  assert.equal(sx.named("typing")[0].id, null); // ephemeral: no number
  const receipted = await hub.sendEventToUser(y, "invoice", {}, { receipt: true });
  assert.ok(receipted);
});

test("disconnectUser and revokeTokens close the user's streams", async () => {
  const [u, v] = [uid("d"), uid("r")];
  const su = await listen(u, { reconnect: false });
  const sv = await listen(v, { reconnect: false });
  await hub.disconnectUser(u, "maintenance");
  await hub.revokeTokens(v);
  await su.waitFor("disconnected", 1);
  await sv.waitFor("disconnected", 1);
  assert.equal(su.named("disconnected")[0].data.reason, "maintenance");
  assert.equal(sv.named("disconnected")[0].data.reason, "token_revoked");
});

test("1,000 concurrent calls: a few batch messages, in call order per user", async () => {
  const users = [uid("p"), uid("q")];
  const out = await Promise.all(users.map((u) => listen(u)));
  const before = { ...hub.stats };
  const calls = [];
  for (let i = 0; i < 1000; i++) calls.push(hub.sendEventToUser(users[i % 2], "seq", i));
  const keys = await Promise.all(calls);
  assert.equal(new Set(keys).size, 1000);
  const messages = hub.stats.messages - before.messages;
  assert.ok(messages <= 5, `1,000 calls took ${messages} messages`);
  console.log(`# 1,000 concurrent calls: ${messages} AMQP message(s)`);
  assert.ok(hub.stats.batches - before.batches >= 1);
  for (const [k, s] of out.entries()) {
    await s.waitFor("seq", 500);
    const got = s.named("seq");
    assert.deepEqual(got.map((e) => e.data), Array.from({ length: 500 }, (_, i) => 2 * i + k));
    assert.deepEqual(got.map((e) => e.id), Array.from({ length: 500 }, (_, i) => String(i + 1)));
  }
});

test("what goes on the wire: persistent, with a message id, JSON", async () => {
  const channel = await (await amqp.connect(broker.url)).createChannel();
  try {
    const { queue } = await channel.assertQueue("", { exclusive: true });
    await channel.bindQueue(queue, "sse.events", "#");
    const user = uid("w");
    await Promise.all([hub.sendEventToUser(user, "a", 1), hub.sendEventToUser(user, "b", 2)]);
    await hub.sendEventToUser(user, "c", 3, { key: "wire-" + user });
    const got = [];
    await new Promise((resolve) => {
      channel.consume(queue, (m) => {
        got.push(m);
        if (got.length === 2) resolve();
      }, { noAck: true });
    });
    const [batch, single] = got;
    assert.equal(batch.fields.routingKey, "batch");
    assert.deepEqual(JSON.parse(batch.content), [
      { event: "a", data: 1, user }, { event: "b", data: 2, user },
    ]);
    assert.equal(single.fields.routingKey, `user.${user}`);
    assert.deepEqual(JSON.parse(single.content), { event: "c", data: 3, id: "wire-" + user });
    for (const m of got) {
      assert.equal(m.properties.deliveryMode, 2);
      assert.equal(m.properties.contentType, "application/json");
      assert.match(m.properties.messageId, /^[0-9a-f]{32}$/);
    }
  } finally {
    await channel.connection.close();
  }
});
