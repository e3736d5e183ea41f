// A broker restart in the middle of a stream of calls: every call resolves,
// and the user receives each event exactly once, in call order. The broker is
// a private node of this test (tests/faults/broker_cli.py), never the machine's.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Publisher } from "../dist/index.js";
import { openStream, privateBroker, startStack, uid } from "./stack.mjs";

let broker;
let stack;

before(async () => {
  broker = await privateBroker();
  stack = await startStack(broker.url);
}, { timeout: 240_000 });

after(async () => {
  await stack?.stop();
  await broker?.close();
});

test("a broker restart mid-stream loses nothing and doubles nothing", { timeout: 240_000 }, async () => {
  const user = uid("r");
  const stream = openStream(stack.edge, user);
  await stream.waitFor("connected", 1);
  // enough attempts to outlast a restart (stop_app + start_app: a few seconds)
  const hub = new Publisher(broker.url, { attempts: 30, timeoutMs: 5000 });
  const calls = [];
  let restarted = null;
  let back = false; // the broker is up again
  let after = -1; // calls made once it was
  try {
    // waves of 10 calls every 20 ms (a stream of calls, not one burst) from
    // before the restart until 100 calls after the broker is back
    for (let i = 0; after < 100; i++) {
      calls.push(hub.sendEventToUser(user, "seq", i));
      if (back) after += 1;
      if (i === 99) restarted = broker.restart().then(() => { back = true; });
      if (i % 10 === 9) {
        await calls[i];
        await new Promise((resolve) => setTimeout(resolve, 20)); // pacing the load
      }
      assert.ok(i < 20_000, "the broker restart did not end");
    }
    await restarted;
    const keys = await Promise.all(calls);
    const total = calls.length;
    assert.equal(new Set(keys).size, total);
    assert.ok(hub.stats.retries > 0, "the restart did not interrupt the calls");
    await stream.waitFor("seq", total, 120_000);
    const got = stream.named("seq");
    assert.deepEqual(got.map((e) => e.data), Array.from({ length: total }, (_, i) => i));
    assert.deepEqual(got.map((e) => e.id), Array.from({ length: total }, (_, i) => String(i + 1)));
  } finally {
    stream.close();
    await hub.close();
  }
});
