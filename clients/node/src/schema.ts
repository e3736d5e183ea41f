// The contract's rules for what a publisher sends (ssehub's shared/schema.py),
// checked in the caller's call: a bad call throws InvalidMessage and sends
// nothing. Pure: data in, data out. The messages are Python's, word for word.

import { InvalidMessage } from "./errors.js";
import { short, typeName } from "./pyrepr.js";

const EVENT_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
const ASCII_ID = /^[!-~]{1,128}$/; // printable ASCII without space: the common id
const NOT_ALLOWED = /[\p{C}\p{Z}]/u; // Python: not isprintable() or isspace()
// What no key may hold: control characters (the store cannot keep NUL) and lone
// surrogates (UTF-8 cannot carry them).
const NOT_IN_KEY = /[\x00-\x1f\x7f-\x9f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
export const MAX_ID_BYTES = 128;
/** Arrays and objects inside each other in one message (what the hub parses). */
export const MAX_DEPTH = 254;
export const MAX_USERS = 1000; // users of one `users` item
const MAX_BEFORE_AHEAD = 24 * 3600; // a revoke's `before`: at most a day ahead

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type MemberOp = "set" | "add" | "remove";
export type Kind = "user" | "users" | "conversation" | "members" | "control";

/** The JSON object of one message (or one batch item without its target). */
export type Doc = Record<string, unknown>;

export interface EventOptions {
  /** Idempotency key: a retry with the same key never makes a second event. */
  key?: string;
  /** Not stored, not numbered: delivered to the streams open now, or lost. */
  ephemeral?: boolean;
  /** Ask the edges for a receipt when the event first reaches one of the user's streams. */
  receipt?: boolean;
}

export interface ConversationOptions extends EventOptions {
  /** Members who do not get this event (the sender, typically). */
  exclude?: Iterable<string>;
}

export function checkId(value: unknown, what: string): string {
  if (typeof value !== "string") {
    throw new InvalidMessage(`${what}: must be a string, got ${typeName(value)}`);
  }
  if (ASCII_ID.test(value)) return value;
  const size = Buffer.byteLength(value, "utf8");
  if (size < 1 || size > MAX_ID_BYTES) {
    throw new InvalidMessage(`${what}: must be 1-${MAX_ID_BYTES} bytes, got ${size}`);
  }
  for (const ch of value) {
    if (NOT_ALLOWED.test(ch)) throw new InvalidMessage(notAllowed(what, ch, "printable, no spaces"));
  }
  return value;
}

/** Python's `not_allowed`: the words for a character an id or a key may not hold. */
function notAllowed(what: string, ch: string, rule: string): string {
  if (ch.length === 1 && ch >= "\ud800" && ch <= "\udfff") {
    rule = "a lone surrogate, which UTF-8 cannot carry: a string cut in the middle of an emoji?";
  }
  return `${what}: character ${short(ch)} is not allowed (${rule})`;
}

export function checkEventName(value: unknown): string {
  if (typeof value !== "string" || !EVENT_NAME.test(value)) {
    throw new InvalidMessage(
      `event: must be 1-64 characters of A-Za-z0-9_.:- , got ${short(value)}`,
    );
  }
  return value;
}

export function checkKey(value: unknown, what = "id"): string {
  // characters as Python counts them: code points (a lone surrogate is one)
  const size = typeof value === "string" ? [...value].length : 0;
  if (typeof value !== "string" || size < 1 || size > MAX_ID_BYTES) {
    throw new InvalidMessage(`${what}: must be a string of 1-${MAX_ID_BYTES} characters`);
  }
  const bad = NOT_IN_KEY.exec(value);
  if (bad) throw new InvalidMessage(notAllowed(what, bad[0], "no control characters"));
  return value;
}

/** A list of user ids, duplicates dropped (first one kept), order kept. */
export function checkUsers(value: unknown, what: string): string[] {
  if (typeof value === "string" || value === null || typeof value !== "object" ||
      !(Symbol.iterator in value)) {
    throw new InvalidMessage(`${what}: must be an array of user ids, got ${typeName(value)}`);
  }
  const seen = new Set<string>();
  let i = 0;
  for (const user of value as Iterable<unknown>) {
    seen.add(checkId(user, `${what}[${i}]`));
    i += 1;
  }
  return [...seen];
}

/** The users of a `users` item: at least one, at most MAX_USERS. */
export function checkUserList(value: unknown, what: string): string[] {
  const users = checkUsers(value, what);
  if (users.length === 0) throw new InvalidMessage("users: must list at least one user");
  if (users.length > MAX_USERS) {
    throw new InvalidMessage(`users: at most ${MAX_USERS} users, got ${users.length}`);
  }
  return users;
}

export function eventDoc(event: string, data: unknown, options: ConversationOptions = {}): Doc {
  const doc: Doc = { event: checkEventName(event), data };
  if (data === undefined) throw new InvalidMessage("data: missing");
  if (options.key !== undefined) doc.id = checkKey(options.key);
  const exclude = checkUsers(options.exclude ?? [], "exclude");
  if (exclude.length) doc.exclude = exclude;
  if (checkFlag(options.ephemeral, "ephemeral")) doc.ephemeral = true;
  if (checkFlag(options.receipt, "receipt")) {
    if (doc.ephemeral) throw new InvalidMessage("receipt: ephemeral events have no receipts");
    doc.receipt = true;
  }
  return doc;
}

export function membersDoc(op: MemberOp, users: Iterable<string>): Doc {
  return { op, users: checkUsers(users, "users") };
}

export function disconnectDoc(reason: unknown): Doc {
  if (typeof reason !== "string" || reason.length < 1 || reason.length > 128) {
    throw new InvalidMessage("reason: must be a string of 1-128 characters");
  }
  return { op: "disconnect", reason };
}

/** `before`: unix seconds (a Date works too); default: now, at the dispatcher. */
export function revokeDoc(before: number | Date | undefined, now = Date.now() / 1000): Doc {
  if (before === undefined) return { op: "revoke" };
  const at = before instanceof Date ? before.getTime() / 1000 : before;
  if (typeof at !== "number" || !Number.isFinite(at) || at < 0) {
    throw new InvalidMessage(`before: must be unix seconds, got ${short(before)}`);
  }
  if (at > now + MAX_BEFORE_AHEAD) {
    throw new InvalidMessage("before: more than a day in the future");
  }
  return { op: "revoke", before: at };
}

function checkFlag(value: unknown, name: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== "boolean") {
    throw new InvalidMessage(`${name}: must be true or false, got ${typeName(value)}`);
  }
  return value;
}

// JSON has no text for these; the contract's data lines must stay one line
// for every client (Python's splitlines breaks at them).
const LINE_BREAKERS = /[\u0085\u2028\u2029]/g;

const NESTING = `nested too deep (at most ${MAX_DEPTH} arrays and objects inside each other)`;

/** The JSON body of a message: throws InvalidMessage for data JSON cannot carry,
 * or that the hub would refuse (Python's ssehub.untrusted rules, in its words). */
export function dumpBody(doc: unknown): Buffer {
  let text: string | undefined;
  try {
    text = JSON.stringify(doc, rejectNonJson);
  } catch (err) {
    if (err instanceof RangeError) throw new InvalidMessage(`data: ${NESTING}`); // the stack's end
    const why = err instanceof Error ? err.message : String(err);
    throw new InvalidMessage(`data: not JSON-serialisable (${why})`);
  }
  if (text === undefined) throw new InvalidMessage("data: not JSON-serialisable (undefined)");
  // JSON.stringify writes a lone surrogate as an escape, which the hub refuses
  if (text.includes("\\ud")) {
    const where = loneSurrogate(JSON.parse(text));
    if (where !== null) throw new InvalidMessage(where);
  }
  if (text.length >= 2 * (MAX_DEPTH + 1) && depthOf(text) > MAX_DEPTH) {
    throw new InvalidMessage(`data: ${NESTING}`);
  }
  return Buffer.from(text.replace(LINE_BREAKERS, escapeChar), "utf8");
}

type Place = null | [Place, string | number];

/** Python's `fault`: the first lone surrogate in document order, in words, or null. */
function loneSurrogate(value: unknown): string | null {
  const stack: [unknown, Place][] = [[value, null]];
  while (stack.length) {
    const [node, place] = stack.pop() as [unknown, Place];
    if (place !== null && typeof place[1] === "string") {
      const bad = LONE.exec(place[1]);
      if (bad) return `the key ${pathOf(place)} ${loneWords(bad[0])}`;
    }
    if (typeof node === "string") {
      const bad = LONE.exec(node);
      if (bad) return `${pathOf(place) || "the value"} ${loneWords(bad[0])}`;
    } else if (Array.isArray(node)) {
      for (let i = node.length - 1; i >= 0; i--) stack.push([node[i], [place, i]]);
    } else if (node !== null && typeof node === "object") {
      const entries = Object.entries(node);
      for (let i = entries.length - 1; i >= 0; i--) {
        stack.push([entries[i][1], [place, entries[i][0]]]);
      }
    }
  }
  return null;
}

function loneWords(ch: string): string {
  const escape = "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0");
  return `holds a lone surrogate (${escape}) that UTF-8 cannot carry (a string cut in the middle of an emoji?)`;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `data.items[3]["a b"]`, as Python's `_path` writes it. */
function pathOf(place: Place): string {
  const parts: string[] = [];
  while (place !== null) {
    const [parent, key] = place;
    if (typeof key === "number") parts.push(`[${key}]`);
    else if (NAME.test(key)) parts.push(`.${key}`);
    else parts.push(`[${quote(key)}]`);
    place = parent;
  }
  let path = parts.reverse().join("");
  if (path.startsWith(".")) path = path.slice(1);
  return path.length <= 120 ? path : path.slice(0, 117) + "...";
}

/** A key as a JSON string of printable ASCII, each other UTF-16 unit escaped. */
function quote(key: string): string {
  let out = '"';
  for (let i = 0; i < key.length; i++) {
    const ch = key[i];
    const code = key.charCodeAt(i);
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (code >= 0x20 && code <= 0x7e) out += ch;
    else out += "\\u" + code.toString(16).padStart(4, "0");
  }
  out += '"';
  return out.length <= 40 ? out : out.slice(0, 37) + "...";
}

/** How deep arrays and objects nest in a JSON text. */
function depthOf(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash: the next unit is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) max = Math.max(max, ++depth);
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

function escapeChar(ch: string): string {
  return "\\u" + (ch.codePointAt(0) ?? 0).toString(16).padStart(4, "0");
}

// JSON.stringify drops functions silently; Python refuses them. Refused here
// too, so that what the user sees is what they sent. (NaN becomes null in
// both, as JSON has no NaN.)
function rejectNonJson(this: unknown, _key: string, value: unknown): unknown {
  if (typeof value === "function" || typeof value === "symbol") {
    throw new TypeError(`a ${typeof value} is not JSON`);
  }
  if (typeof value === "bigint") {
    throw new TypeError("a BigInt is not JSON (send it as a string)");
  }
  return value;
}
