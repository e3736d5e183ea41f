// The original in-process service's functions, on a default publisher, so that
// its controllers move to ssehub by changing one import:
//
//   import { sendEventToUser, broadcastToConversation } from '../sse';   // before
//   import { sendEventToUser, broadcastToConversation } from 'ssehub';   // after
//
// The default publisher connects to SSEHUB_RABBITMQ_URL (default
// amqp://guest:guest@localhost:5672/, as every ssehub process) on the first
// call (a user that may only write to sse.events is enough: `ssehub roles`).
// `close()` sends what is queued and closes it, so a script can exit.
// The calls return promises (the broker's confirm); the original's returned
// nothing, so code that did not await them keeps working.

import { Publisher } from "./publisher.js";
import type { ConversationOptions, EventOptions } from "./schema.js";

export const DEFAULT_URL = "amqp://guest:guest@localhost:5672/";

let current: Publisher | null = null;

/** The default publisher (made on first use). */
export function defaultPublisher(): Publisher {
  current ??= new Publisher(process.env.SSEHUB_RABBITMQ_URL || DEFAULT_URL);
  return current;
}

export function sendEventToUser(
  userId: string,
  event: string,
  data: unknown,
  options?: EventOptions,
): Promise<string> {
  return defaultPublisher().sendEventToUser(userId, event, data, options);
}

export function sendEventToUsers(
  userIds: Iterable<string>,
  event: string,
  data: unknown,
  options?: EventOptions,
): Promise<string> {
  return defaultPublisher().sendEventToUsers(userIds, event, data, options);
}

export function broadcastToConversation(
  conversationId: string,
  event: string,
  data: unknown,
  options?: ConversationOptions,
): Promise<string> {
  return defaultPublisher().broadcastToConversation(conversationId, event, data, options);
}

export function setMembers(conversationId: string, users: Iterable<string>): Promise<string> {
  return defaultPublisher().setMembers(conversationId, users);
}

export function addMembers(conversationId: string, users: Iterable<string>): Promise<string> {
  return defaultPublisher().addMembers(conversationId, users);
}

export function removeMembers(conversationId: string, users: Iterable<string>): Promise<string> {
  return defaultPublisher().removeMembers(conversationId, users);
}

export function disconnectUser(userId: string, reason?: string): Promise<string> {
  return defaultPublisher().disconnectUser(userId, reason);
}

export function revokeTokens(userId: string, before?: number | Date): Promise<string> {
  return defaultPublisher().revokeTokens(userId, before);
}

/** Close the default publisher (a later call opens a new one). */
export async function close(): Promise<void> {
  const publisher = current;
  current = null;
  if (publisher) await publisher.close();
}
