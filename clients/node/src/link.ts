// One AMQP connection and one confirm channel, opened on first use and again
// after any failure. `publish` resolves when the broker confirms the message;
// a message RabbitMQ returns (`mandatory`: no queue bound, so no dispatcher has
// declared the topology yet) is a failure too (UNROUTABLE), retried by the
// sender with the same message id. Nothing is declared: sse.events is checked
// passively, so a user that may only write to it is enough.

import { connect, type ChannelModel, type ConfirmChannel, type Message } from "amqplib";
import { checkEvents, EVENTS, UNROUTABLE } from "./topology.js";

export class Link {
  private model: ChannelModel | null = null;
  private channel: ConfirmChannel | null = null;
  private opening: Promise<ConfirmChannel> | null = null;
  private readonly returned = new Set<string>();

  constructor(
    private readonly url: string,
    private readonly timeoutMs: number,
  ) {}

  async publish(routingKey: string, body: Buffer, messageId: string): Promise<void> {
    const channel = await this.ready();
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        channel.publish(
          EVENTS,
          routingKey,
          body,
          {
            persistent: true,
            mandatory: true,
            contentType: "application/json",
            messageId,
          },
          (err: unknown) => {
            // a return comes before the ack of the same message
            if (this.returned.delete(messageId)) reject(new Error(UNROUTABLE));
            else if (err) reject(err instanceof Error ? err : new Error(String(err)));
            else resolve();
          },
        );
      }),
      this.timeoutMs,
      `${routingKey}: no confirm within ${this.timeoutMs} ms`,
    );
  }

  private ready(): Promise<ConfirmChannel> {
    if (this.channel) return Promise.resolve(this.channel);
    this.opening ??= this.open().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async open(): Promise<ConfirmChannel> {
    // noDelay: a publish is three frames, and with Nagle's algorithm on the
    // last one waits for the broker's delayed ACK (~40 ms per confirm)
    const pending = connect(this.url, { timeout: this.timeoutMs, noDelay: true });
    let model: ChannelModel;
    try {
      model = await withTimeout(pending, this.timeoutMs, "connect: timed out");
    } catch (err) {
      pending.then((late) => late.close()).catch(() => {}); // one that comes late
      throw err;
    }
    this.model = model;
    // a lost connection is found by the next publish (its confirm fails);
    // without a listener, 'error' would be thrown at the process
    model.on("error", () => {});
    model.on("close", () => {
      if (this.model === model) this.forget();
    });
    try {
      const channel = await model.createConfirmChannel();
      channel.on("error", () => {});
      channel.on("close", () => {
        if (this.channel === channel) this.channel = null;
      });
      channel.on("return", (message: Message) => {
        const id = message.properties.messageId as string | undefined;
        if (id) this.returned.add(id);
      });
      await checkEvents(channel);
      this.channel = channel;
      return channel;
    } catch (err) {
      await this.reset();
      throw err;
    }
  }

  private forget(): void {
    this.model = null;
    this.channel = null;
  }

  /** Drop the connection (after a failure, or to close). */
  async reset(): Promise<void> {
    const model = this.model;
    this.forget();
    if (model) await model.close().catch(() => {});
  }
}

export async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
