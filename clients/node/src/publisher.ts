// The Node publisher client: what a backend imports to push events.
//
//   import { Publisher } from "ssehub";
//   const hub = new Publisher("amqp://guest:guest@localhost:5672/");
//   await hub.broadcastToConversation(conversationId, "message:new", message, { exclude: [senderId] });
//
// Connects on first use and again after a loss. Every message is persistent,
// carries an idempotency key and is confirmed by the broker before the promise
// resolves; a failed attempt is retried with the same key, so a retry never
// produces a second event. Concurrent calls are sent together as one `batch`
// message (sender.ts). Invalid input throws InvalidMessage in the caller, and
// nothing is sent.
//
// It declares nothing: a broker user that may only write to sse.events is
// enough (`ssehub roles`, the publisher role). The dispatcher declares the
// topology; until one has, a call rejects with PublishError (no dispatcher has
// declared this deployment's topology yet) rather than publish into nothing.

import { randomUUID } from "node:crypto";
import { InvalidMessage } from "./errors.js";
import {
  checkId,
  checkUserList,
  disconnectDoc,
  eventDoc,
  membersDoc,
  revokeDoc,
  type ConversationOptions,
  type EventOptions,
  type MemberOp,
} from "./schema.js";
import { Sender, type SenderStats } from "./sender.js";
import type { QueueType } from "./topology.js";

export interface PublisherOptions {
  /** Attempts per message before the call rejects with PublishError (default 5). */
  attempts?: number;
  /** Milliseconds to wait for a connection or a confirm, per attempt (default 10,000). */
  timeoutMs?: number;
  /** Milliseconds to wait for more calls before sending (0-50; default 0: the
   *  rest of the current event-loop turn). */
  lingerMs?: number;
  /** Items per `batch` message at most (default and maximum 1,000). */
  maxBatchItems?: number;
  /** Bytes per `batch` message at most (default 1 MiB). */
  maxBatchBytes?: number;
  /** Not used: publishers declare no queue any more (kept so that code that
   *  passes it still compiles). */
  queueType?: QueueType;
}

export class Publisher {
  private readonly sender: Sender;

  constructor(url: string, options: PublisherOptions = {}) {
    const lingerMs = options.lingerMs ?? 0;
    if (!(lingerMs >= 0 && lingerMs <= 50)) throw new RangeError("lingerMs: 0 to 50 ms");
    this.sender = new Sender(url, {
      attempts: options.attempts ?? 5,
      timeoutMs: options.timeoutMs ?? 10_000,
      lingerMs,
      maxItems: options.maxBatchItems ?? 1000,
      maxBytes: options.maxBatchBytes ?? 1 << 20,
    });
  }

  /** Messages, batches and calls confirmed so far, and retried attempts. */
  get stats(): Readonly<SenderStats> {
    return this.sender.stats;
  }

  // -- events ------------------------------------------------------------------
  /** One event to every stream of one user. Resolves with the idempotency key. */
  async sendEventToUser(
    userId: string,
    event: string,
    data: unknown,
    options: EventOptions = {},
  ): Promise<string> {
    const doc = eventDoc(event, data, onlyEvent(options));
    return this.sender.submit("user", checkId(userId, "user_id"), doc);
  }

  /** The same event to each listed user (at most 1,000), as one batch item. */
  async sendEventToUsers(
    userIds: Iterable<string>,
    event: string,
    data: unknown,
    options: EventOptions = {},
  ): Promise<string> {
    const doc = eventDoc(event, data, onlyEvent(options));
    doc.users = checkUserList(userIds, "user_ids");
    return this.sender.submit("users", null, doc);
  }

  /** One event to every member of a conversation but `exclude`. */
  async broadcastToConversation(
    conversationId: string,
    event: string,
    data: unknown,
    options: ConversationOptions = {},
  ): Promise<string> {
    const doc = eventDoc(event, data, options);
    return this.sender.submit("conversation", checkId(conversationId, "conversation_id"), doc);
  }

  // -- membership ----------------------------------------------------------------
  async setMembers(conversationId: string, users: Iterable<string>): Promise<string> {
    return this.members(conversationId, "set", users);
  }

  async addMembers(conversationId: string, users: Iterable<string>): Promise<string> {
    return this.members(conversationId, "add", users);
  }

  async removeMembers(conversationId: string, users: Iterable<string>): Promise<string> {
    return this.members(conversationId, "remove", users);
  }

  private async members(conversationId: string, op: MemberOp, users: Iterable<string>): Promise<string> {
    const doc = membersDoc(op, users);
    return this.sender.submit("members", checkId(conversationId, "conversation_id"), doc);
  }

  // -- control -------------------------------------------------------------------
  /** Close every open stream of the user, on every edge (`disconnected`). */
  async disconnectUser(userId: string, reason = "disconnect"): Promise<string> {
    const doc = disconnectDoc(reason);
    return this.sender.submit("control", checkId(userId, "user_id"), doc);
  }

  /** Refuse the user's tokens issued before `before` (unix seconds or a Date;
   *  default: now) and close the streams opened with them. Logout and bans use this. */
  async revokeTokens(userId: string, before?: number | Date): Promise<string> {
    const doc = revokeDoc(before);
    return this.sender.submit("control", checkId(userId, "user_id"), doc);
  }

  // -- plumbing ------------------------------------------------------------------
  /** A raw contract message to `sse.events`, on its own, confirmed. */
  async publish(routingKey: string, body: Buffer | string, key?: string): Promise<string> {
    const messageId = key ?? randomUUID().replaceAll("-", "");
    await this.sender.publish(routingKey, Buffer.from(body), messageId);
    return messageId;
  }

  /** Send what is queued, then close the connection: the process can exit. */
  async close(): Promise<void> {
    await this.sender.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** `exclude` is for conversations: refused elsewhere, as the dispatcher would. */
function onlyEvent(options: EventOptions): EventOptions {
  if ((options as ConversationOptions).exclude !== undefined) {
    throw new InvalidMessage("exclude: only conversation events take it");
  }
  return options;
}
