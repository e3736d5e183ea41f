// The publisher role (`ssehub roles`): a broker user that may only write to
// sse.events publishes with this package, which declares nothing; and before
// any dispatcher declared the topology, a call fails in words instead of its
// message vanishing.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import amqp from "amqplib";
import { Publisher, PublishError } from "../dist/index.js";
import { openStream, SSEHUB, startStack, uid, vhost } from "./stack.mjs";

const made = [];

function ctl(...args) {
  const done = spawnSync("rabbitmqctl", ["-q", ...args], { encoding: "utf8" });
  if (done.status !== 0) throw new Error(`rabbitmqctl ${args[0]}: ${done.stderr}`);
}

/** A user of the publisher role on `broker` (its vhost), as `ssehub roles` grants it. */
function publisherOf(broker) {
  const url = new URL(broker.url);
  const name = decodeURIComponent(url.pathname.slice(1));
  const roles = spawnSync(SSEHUB, ["roles", "--tsv", "--vhost", name], { encoding: "utf8" });
  assert.equal(roles.status, 0, roles.stderr);
  const line = roles.stdout.split("\n").find((l) => l.split("\t")[1] === "publisher");
  const [vhostName, , user, configure, write, read] = line.split("\t");
  assert.equal(vhostName, name);
  assert.equal(write, "^(sse\\.events)$");
  const unique = `${user}-${randomBytes(4).toString("hex")}`;
  const password = randomBytes(12).toString("hex");
  ctl("add_user", unique, password);
  made.push(unique);
  ctl("set_permissions", "-p", name, unique, configure, write, read);
  url.username = unique;
  url.password = password;
  return url.href;
}

let broker;
let stack;

before(async () => {
  broker = vhost();
  stack = await startStack(broker.url); // the dispatcher declares the topology
});

after(async () => {
  await stack?.stop();
  broker?.drop();
  for (const user of made) ctl("delete_user", user);
});

test("a publisher-only user publishes, and the events arrive", async () => {
  const hub = new Publisher(publisherOf(broker));
  const [user, conv] = [uid("u"), uid("c")];
  const stream = openStream(stack.edge, user);
  try {
    await stream.waitFor("connected", 1);
    await hub.sendEventToUser(user, "note", { n: 1 });
    await hub.setMembers(conv, [user]);
    await hub.broadcastToConversation(conv, "message:new", "hi");
    await stream.waitFor("message:new", 1);
    assert.deepEqual(stream.events.filter((e) => e.id !== null && e.event !== "connected")
      .map((e) => [e.event, e.id, e.data]), [["note", "1", { n: 1 }], ["message:new", "2", "hi"]]);
  } finally {
    stream.close();
    await hub.close();
  }
});

test("before any dispatcher declared the topology, a call rejects in words", async () => {
  const empty = vhost();
  try {
    const hub = new Publisher(publisherOf(empty), { attempts: 2, timeoutMs: 5000 });
    try {
      await assert.rejects(hub.sendEventToUser("u", "e", 1), (err) => {
        assert.ok(err instanceof PublishError);
        assert.match(err.message, /^user\.u: not confirmed after 2 attempts: the exchange sse\.events does not exist: no dispatcher has declared/);
        return true;
      });
      // the exchange, but no queue bound to it yet: the broker returns the message
      const admin = await amqp.connect(empty.url);
      await (await admin.createChannel()).assertExchange("sse.events", "topic", { durable: true });
      await admin.close();
      await assert.rejects(hub.sendEventToUser("u", "e", 1), (err) => {
        assert.ok(err instanceof PublishError);
        assert.match(err.message, /not confirmed after 2 attempts: RabbitMQ returned it: no queue is bound to sse\.events/);
        return true;
      });
    } finally {
      await hub.close();
    }
  } finally {
    empty.drop();
  }
});
