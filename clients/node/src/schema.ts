// The contract's rules for what a publisher sends (ssehub's shared/schema.py),
// checked in the caller's call: a bad call throws InvalidMessage and sends
// nothing. Pure: data in, data out. The messages are Python's, word for word.

import { InvalidMessage } from "./errors.js";
import { short, typeName } from "./pyrepr.js";

const EVENT_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
const ASCII_ID = /^[!-~]{1,128}$/; // printable ASCII without space: the common id
const NOT_ALLOWED = /[\p{C}\p{Z}]/u; // Python: not isprintable() or isspace()
export const MAX_ID_BYTES = 128;
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
    if (NOT_ALLOWED.test(ch)) {
      throw new InvalidMessage(
        `${what}: character ${short(ch)} is not allowed (printable, no spaces)`,
      );
    }
  }
  return value;
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
  if (typeof value !== "string" || value.length < 1 || value.length > MAX_ID_BYTES) {
    throw new InvalidMessage(`${what}: must be a string of 1-${MAX_ID_BYTES} characters`);
  }
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

/** The JSON body of a message: throws InvalidMessage for data JSON cannot carry. */
export function dumpBody(doc: unknown): Buffer {
  let text: string | undefined;
  try {
    text = JSON.stringify(doc, rejectNonJson);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new InvalidMessage(`data: not JSON-serialisable (${why})`);
  }
  if (text === undefined) throw new InvalidMessage("data: not JSON-serialisable (undefined)");
  return Buffer.from(text.replace(LINE_BREAKERS, escapeChar), "utf8");
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
