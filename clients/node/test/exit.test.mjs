// The original service's functions on the default publisher (SSEHUB_RABBITMQ_URL),
// and close(): a script that uses them exits by itself.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { openStream, startStack, uid, vhost } from "./stack.mjs";

const INDEX = fileURLToPath(new URL("../dist/index.js", import.meta.url));
let broker;
let stack;

before(async () => {
  broker = vhost();
  stack = await startStack(broker.url);
});

after(async () => {
  await stack?.stop();
  broker?.drop();
});

function run(source, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", source], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

test("a script calling sendEventToUser then close() exits by itself", async () => {
  const [user, conv] = [uid("s"), uid("c")];
  const stream = openStream(stack.edge, user);
  await stream.waitFor("connected", 1);
  const source = `
    import { sendEventToUser, broadcastToConversation, setMembers, close } from ${JSON.stringify(INDEX)};
    await setMembers(${JSON.stringify(conv)}, [${JSON.stringify(user)}]);
    await sendEventToUser(${JSON.stringify(user)}, "hello", { from: "script" });
    await broadcastToConversation(${JSON.stringify(conv)}, "message:new", { body: "hi" });
    await close();
  `;
  const result = await run(source, { SSEHUB_RABBITMQ_URL: broker.url });
  assert.deepEqual([result.code, result.signal], [0, null], result.output);
  await stream.waitFor("message:new", 1);
  assert.deepEqual(stream.named("hello").map((e) => e.data), [{ from: "script" }]);
  stream.close();
});

test("with the broker unreachable, a call rejects with PublishError naming it", async () => {
  const source = `
    import { Publisher, PublishError } from ${JSON.stringify(INDEX)};
    const hub = new Publisher("amqp://guest:guest@127.0.0.1:1/", { attempts: 2, timeoutMs: 1000 });
    try { await hub.sendEventToUser("u", "e", 1); console.log("sent?"); }
    catch (err) { console.log(err instanceof PublishError, err.message); }
    await hub.close();
  `;
  const result = await run(source, {});
  assert.equal(result.code, 0, result.output);
  assert.match(result.output, /^true user\.u: not confirmed after 2 attempts: .*ECONNREFUSED/m);
});
