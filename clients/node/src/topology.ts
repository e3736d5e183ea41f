// What a publisher needs of the broker: the exchange it publishes to, checked
// passively (a passive declare needs no permission). A publisher declares
// nothing: its broker user may only write to sse.events (`ssehub roles`, the
// publisher role), and the dispatcher declares the deployment's topology.
// Until one has, a publish fails with NO_EXCHANGE or UNROUTABLE, never into
// nothing (messages are published with `mandatory`).

import type { Channel } from "amqplib";

export const EVENTS = "sse.events";
/** The deployment's SSEHUB_QUEUE_TYPE: no longer needed by a publisher. */
export type QueueType = "classic" | "quorum";

export const NO_EXCHANGE =
  "the exchange sse.events does not exist: no dispatcher has declared this " +
  "deployment's topology yet (start one: publishers declare nothing)";
export const UNROUTABLE =
  "RabbitMQ returned it: no queue is bound to sse.events, so no dispatcher has declared " +
  "this deployment's topology yet (start one: publishers declare nothing)";

/** Checks that sse.events exists; rejects with NO_EXCHANGE if it does not (the
 *  broker closes the channel then). */
export async function checkEvents(channel: Channel): Promise<void> {
  try {
    await channel.checkExchange(EVENTS);
  } catch (err) {
    const said = err instanceof Error ? err.message : String(err);
    if (said.includes("NOT_FOUND") || said.includes("404")) throw new Error(NO_EXCHANGE, { cause: err });
    throw err;
  }
}
