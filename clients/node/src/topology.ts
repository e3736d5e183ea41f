// What a publisher declares (ssehub's shared/topology.py, declare_core): the
// contract's exchanges and the dispatcher's queues, so that a message published
// before any dispatcher ever ran waits in ssehub.dispatch instead of vanishing
// unrouted. Declared exactly as the Python processes declare them: any other
// argument and RabbitMQ refuses the declaration (PRECONDITION_FAILED).

import type { Channel } from "amqplib";
import { ConfigError } from "./errors.js";

export const EVENTS = "sse.events";
export type QueueType = "classic" | "quorum";

const EXCHANGES: ReadonlyArray<readonly [string, string]> = [
  [EVENTS, "topic"],
  ["sse.deliver", "direct"],
  ["sse.receipts", "topic"],
  ["ssehub.nodes", "direct"],
];

interface QueueSpec {
  name: string;
  arguments: Record<string, unknown>;
  bindings: ReadonlyArray<readonly [string, string]>;
}

function queues(queueType: QueueType): QueueSpec[] {
  const typed = (args: Record<string, unknown>): Record<string, unknown> =>
    queueType === "classic" ? args : { ...args, "x-queue-type": queueType };
  return [
    // bound with "#": unknown routing keys reach the dispatcher and are dead-lettered
    {
      name: "ssehub.dispatch",
      arguments: typed({ "x-single-active-consumer": true }),
      bindings: [[EVENTS, "#"]],
    },
    { name: "sse.dead", arguments: typed({}), bindings: [] },
  ];
}

/** Declares everything a publisher needs. A queue of the other type is a
 *  ConfigError (no retry can fix it); the channel is closed by then. */
export async function declareCore(channel: Channel, queueType: QueueType): Promise<void> {
  for (const [name, type] of EXCHANGES) await channel.assertExchange(name, type, { durable: true });
  for (const spec of queues(queueType)) {
    try {
      await channel.assertQueue(spec.name, {
        durable: true,
        arguments: Object.keys(spec.arguments).length ? spec.arguments : undefined,
      });
    } catch (err) {
      const said = err instanceof Error ? err.message : String(err);
      if (!said.includes("x-queue-type")) throw err;
      const current = /current is '?(?:longstr:)?'?(\w+)/.exec(said)?.[1] ?? "classic";
      throw new ConfigError(
        `queue '${spec.name}' is a ${current === "none" ? "classic" : current} queue but ` +
          `SSEHUB_QUEUE_TYPE=${queueType}; a queue's type cannot change: set ` +
          `SSEHUB_QUEUE_TYPE=${current === "none" ? "classic" : current} in every process, ` +
          `or drain and delete the queue so that it is declared again as ${queueType}`,
        { cause: err },
      );
    }
    for (const [exchange, pattern] of spec.bindings) {
      await channel.bindQueue(spec.name, exchange, pattern);
    }
  }
}
