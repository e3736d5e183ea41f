// Concurrent calls coalesced into `batch` messages (ssehub's shared/sender.py).
//
// Calls made in one turn of the event loop (or within `linger` ms) go out
// together: one call alone as its own message (`user.<id>`, ...), several as
// one `batch` message of at most `maxItems` items and `maxBytes` bytes. One
// message is in flight at a time, so order is kept exactly, and while it waits
// for the broker's confirm the next calls gather into the next batch: the
// busier the caller, the larger the batches. A message that is not confirmed
// is sent again on a fresh connection with the same message id, so item keys
// (`<messageId>:<index>`) stay the same and a retry never doubles an event.

import { randomUUID } from "node:crypto";
import { ConfigError, PublishError, PublisherClosed } from "./errors.js";
import { Link } from "./link.js";
import { dumpBody, type Doc, type Kind } from "./schema.js";

export const BATCH_ROUTING_KEY = "batch";
export const MAX_BATCH_ITEMS = 1000; // the contract's bound on a batch

export interface SenderOptions {
  attempts: number;
  timeoutMs: number;
  lingerMs: number;
  maxItems: number;
  maxBytes: number;
}

interface Call {
  kind: Kind;
  target: string | null; // null: a `users` item
  doc: Doc;
  body: Buffer; // `doc` as a message of its own
  key: string | null;
  resolve: (key: string) => void;
  reject: (err: unknown) => void;
}

/** Counts since the sender was made (what the tests and benchmarks read). */
export interface SenderStats {
  messages: number; // confirmed AMQP messages
  batches: number; // of them, `batch` messages
  items: number; // calls confirmed
  retries: number; // attempts that failed and were retried
}

export class Sender {
  readonly stats: SenderStats = { messages: 0, batches: 0, items: 0, retries: 0 };
  private readonly calls: Call[] = [];
  private head = 0; // calls[head] is the next call to send
  private running: Promise<void> | null = null;
  private readonly link: Link;
  private closed = false;

  constructor(url: string, private readonly options: SenderOptions) {
    this.link = new Link(url, options.timeoutMs);
  }

  /** Queue a call; resolves with its idempotency key once the broker confirmed it. */
  submit(kind: Kind, target: string | null, doc: Doc): Promise<string> {
    if (this.closed) return Promise.reject(new PublisherClosed("the publisher is closed"));
    const body = dumpBody(doc); // throws InvalidMessage here, in the caller's call
    return new Promise<string>((resolve, reject) => {
      const key = typeof doc.id === "string" ? doc.id : null;
      this.calls.push({ kind, target, doc, body, key, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.running) return;
    this.running = this.run().finally(() => {
      this.running = null;
      // a call made by a caller resumed by the last confirm, after the loop's
      // last look but before this callback, would wait for ever
      if (this.pending()) this.kick();
    });
  }

  private pending(): number {
    return this.calls.length - this.head;
  }

  private async run(): Promise<void> {
    while (this.pending()) {
      // 0: the rest of this turn (every call made synchronously or in its
      // microtasks); else a few ms for more
      await new Promise<void>((resolve) =>
        this.options.lingerMs > 0 ? setTimeout(resolve, this.options.lingerMs) : setImmediate(resolve),
      );
      while (this.pending()) await this.send(this.take());
    }
  }

  /** The next message's calls, within the item and byte bounds. */
  private take(): Call[] {
    const first = this.calls[this.head++];
    const taken = [first];
    let size = first.body.length + 64;
    const maxItems = Math.min(this.options.maxItems, MAX_BATCH_ITEMS);
    while (this.pending() && taken.length < maxItems) {
      const next = this.calls[this.head];
      size += next.body.length + 64; // room for the target field
      if (size > this.options.maxBytes) break;
      taken.push(next);
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.calls.length) {
      this.calls.splice(0, this.head); // keep the queue from growing for ever
      this.head = 0;
    }
    return taken;
  }

  private async send(calls: Call[]): Promise<void> {
    const messageId = randomUUID().replaceAll("-", "");
    let routingKey: string;
    let body: Buffer;
    let keys: string[];
    if (calls.length === 1 && calls[0].kind !== "users") {
      const call = calls[0];
      routingKey = `${call.kind}.${call.target}`;
      body = call.body;
      keys = [call.key ?? messageId];
    } else {
      const items = calls.map((call) =>
        call.kind === "users" ? call.doc : { ...call.doc, [call.kind]: call.target },
      );
      keys = calls.map((call, i) => call.key ?? `${messageId}:${i}`);
      routingKey = BATCH_ROUTING_KEY;
      body = dumpBody(items);
    }
    try {
      await this.publish(routingKey, body, messageId);
    } catch (err) {
      for (const call of calls) call.reject(err);
      return;
    }
    this.stats.messages += 1;
    if (routingKey === BATCH_ROUTING_KEY) this.stats.batches += 1;
    this.stats.items += calls.length;
    calls.forEach((call, i) => call.resolve(keys[i]));
  }

  /** One persistent message to `sse.events`, confirmed; retried on a fresh
   *  connection with the same message id. Rejects with PublishError. */
  async publish(routingKey: string, body: Buffer, messageId: string): Promise<void> {
    let last: unknown = null;
    let delay = 100;
    for (let attempt = 0; attempt < this.options.attempts; attempt++) {
      try {
        await this.link.publish(routingKey, body, messageId);
        return;
      } catch (err) {
        await this.link.reset();
        if (err instanceof ConfigError) throw err; // no retry can help
        last = err;
        this.stats.retries += 1;
        if (attempt + 1 < this.options.attempts) {
          await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
          delay = Math.min(delay * 2, 2000);
        }
      }
    }
    const why = last instanceof Error ? last.message : String(last);
    throw new PublishError(
      `${routingKey}: not confirmed after ${this.options.attempts} attempts: ${why}`,
      { cause: last },
    );
  }

  /** Send what is queued, then close the connection: the process can exit. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.running) await this.running;
    await this.link.reset();
  }
}
