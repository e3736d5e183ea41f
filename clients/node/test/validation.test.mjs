// Invalid calls: InvalidMessage in the caller, with the Python client's message
// for the same mistake (asked of the Python client itself), and nothing sent.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import test from "node:test";
import { InvalidMessage, Publisher, SsehubError } from "../dist/index.js";
import { PYTHON, REPO } from "./stack.mjs";

// [method, args, python kwargs (from the options object)]
const CASES = [
  ["sendEventToUser", ["a b", "e", 1]],
  ["sendEventToUser", ["", "e", 1]],
  ["sendEventToUser", ["x".repeat(129), "e", 1]],
  ["sendEventToUser", [42, "e", 1]],
  ["sendEventToUser", [null, "e", 1]],
  ["sendEventToUser", ["tab\there", "e", 1]],
  ["sendEventToUser", ["zero\u200bwidth", "e", 1]],
  ["sendEventToUser", ["u", "bad name", 1]],
  ["sendEventToUser", ["u", "", 1]],
  ["sendEventToUser", ["u", "x".repeat(65), 1]],
  ["sendEventToUser", ["u", "e", 1, { key: "" }]],
  ["sendEventToUser", ["u", "e", 1, { key: "k".repeat(129) }]],
  ["sendEventToUser", ["u", "e", 1, { ephemeral: true, receipt: true }]],
  ["sendEventToUser", ["u", "e", () => 1]],
  ["broadcastToConversation", ["c", "e", 1, { exclude: ["ok", "b\n"] }]],
  ["broadcastToConversation", ["c c", "e", 1]],
  ["broadcastToConversation", ["c", "e", 1, { exclude: "alice" }]],
  ["setMembers", ["c", ["a", 5]]],
  ["addMembers", ["c", "alice"]],
  ["removeMembers", ["", ["a"]]],
  ["sendEventToUsers", [["a", "b c"], "e", 1]],
  ["disconnectUser", ["u\n", "x"]],
  ["revokeTokens", ["", 0]],
];
// from here on, the Python client refuses each case too (in the same words)
const FIRST_REFUSED_BY_BOTH = CASES.length;
CASES.push(
  // lone surrogates (a string cut in the middle of an emoji), which UTF-8 cannot carry
  ["sendEventToUser", ["u", "note", { text: "\ud83d 12345678901234567890" }]],
  ["sendEventToUser", ["u", "e", { items: [{ "a b": ["ok", "x\ude00"] }] }]],
  ["sendEventToUser", ["u", "e", { ok: "😀", list: [{ "key \ud83d": 1 }] }]],
  ["broadcastToConversation", ["c", "e", "\udc00 tail", { exclude: ["a"] }]],
  ["sendEventToUsers", [["a"], "e", [["😀", "\ud83d"]]]],
  ["disconnectUser", ["u", "bye \ud83d"]],
  ["sendEventToUser", ["\ud83d", "e", 1]],
  ["sendEventToUser", ["u", "e", 1, { key: "k\ud83d" }]],
  // keys the store cannot keep
  ["sendEventToUser", ["u", "e", 1, { key: "k\u0000" }]],
  ["sendEventToUser", ["u", "e", 1, { key: "line\nbreak" }]],
  ["sendEventToUser", ["u", "e", 1, { key: "c1\u0085" }]],
  // deeper than the hub parses
  ["sendEventToUser", ["u", "e", nested(254)]],
);

/** `depth` arrays inside each other. */
function nested(depth) {
  let value = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

const SNAKE = (name) => name.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

/** What the Python Publisher says for each case (a list: the message, or null). */
function pythonMessages() {
  const script = `
import asyncio, json, sys
from ssehub import Publisher, InvalidMessage
cases = json.load(sys.stdin)
async def main():
    out = []
    p = Publisher("amqp://guest:guest@127.0.0.1:1/")
    for method, args, kwargs in cases:
        try:
            await asyncio.wait_for(getattr(p, method)(*args, **kwargs), 0.5)
            out.append(None)
        except InvalidMessage as exc:
            out.append(str(exc))
        except Exception as exc:
            out.append(None)
    print(json.dumps(out))
asyncio.run(main())
`;
  const payload = CASES.map(([method, args]) => {
    const plain = args.map((a) => (typeof a === "function" ? { __fn__: true } : a));
    const opts = plain.length > 3 && typeof plain[3] === "object" ? plain.pop() : {};
    if (method === "sendEventToUser" && typeof args[2] === "function") plain[2] = { __fn__: true };
    return [SNAKE(method), plain, opts];
  });
  // a function has no JSON: the Python side gets an object it cannot dump either
  const fixed = script.replace("cases = json.load(sys.stdin)",
    "cases = json.load(sys.stdin, object_hook=lambda d: object() if d.get('__fn__') else d)");
  const done = spawnSync(PYTHON, ["-c", fixed], {
    cwd: REPO, input: JSON.stringify(payload), encoding: "utf8", timeout: 60_000,
  });
  assert.equal(done.status, 0, done.stderr);
  return JSON.parse(done.stdout);
}

test("invalid calls throw InvalidMessage with the Python client's words", async () => {
  const expected = pythonMessages();
  // a broker nobody listens on: a call that got past validation would fail differently
  const hub = new Publisher("amqp://guest:guest@127.0.0.1:1/", { attempts: 1, timeoutMs: 500 });
  try {
    for (const [i, [method, args]] of CASES.entries()) {
      const error = await hub[method](...args).then(() => null, (err) => err);
      const where = `${method}(${JSON.stringify(args)})`;
      assert.ok(error instanceof InvalidMessage, `${where}: ${error}`);
      assert.ok(error instanceof SsehubError);
      if (i >= FIRST_REFUSED_BY_BOTH) assert.ok(expected[i] !== null, `${where}: Python sent it`);
      const prefix = "data: not JSON-serialisable ("; // the detail is each language's own
      if (expected[i]?.startsWith(prefix)) assert.ok(error.message.startsWith(prefix), where);
      else if (expected[i] !== null) assert.equal(error.message, expected[i], where);
    }
    assert.equal(hub.stats.messages, 0);
  } finally {
    await hub.close();
  }
});

test("the checks the dispatcher would make are made before sending", async () => {
  const hub = new Publisher("amqp://guest:guest@127.0.0.1:1/", { attempts: 1, timeoutMs: 500 });
  try {
    const said = async (call) => (await call.then(() => null, (err) => err))?.message;
    assert.equal(await said(hub.sendEventToUsers([], "e", 1)), "users: must list at least one user");
    const many = Array.from({ length: 1001 }, (_, i) => `u${i}`);
    assert.equal(await said(hub.sendEventToUsers(many, "e", 1)), "users: at most 1000 users, got 1001");
    assert.equal(await said(hub.sendEventToUser("u", "e", 1, { exclude: ["a"] })),
      "exclude: only conversation events take it");
    assert.equal(await said(hub.disconnectUser("u", "")), "reason: must be a string of 1-128 characters");
    assert.equal(await said(hub.revokeTokens("u", -1)), "before: must be unix seconds, got -1");
    assert.equal(await said(hub.revokeTokens("u", Date.now() / 1000 + 2 * 86400)),
      "before: more than a day in the future");
    assert.equal(await said(hub.sendEventToUser("u", "e", 10n)),
      "data: not JSON-serialisable (a BigInt is not JSON (send it as a string))");
    // a whole emoji, a key of 128 of them, and nesting up to the bound are fine
    const ok = async (call) => {
      const error = await call.then(() => null, (err) => err);
      assert.ok(!(error instanceof InvalidMessage), String(error));
    };
    await ok(hub.sendEventToUser("u", "e", { text: "😀" }, { key: "😀".repeat(128) }));
    await ok(hub.sendEventToUser("u", "e", nested(253)));
    assert.equal(await said(hub.sendEventToUser("u", "e", { deep: nested(10000) })),
      "data: nested too deep (at most 254 arrays and objects inside each other)");
  } finally {
    await hub.close();
  }
});
