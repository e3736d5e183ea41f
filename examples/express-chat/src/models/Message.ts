// The original service's Message model (a MongoDB model there), kept in memory
// here: what the controller needs of it is create() and the fields it reads.

import { randomUUID } from "node:crypto";

export interface MessageDoc {
  _id: { toString(): string };
  conversationId: string;
  senderId: { toString(): string };
  text: string;
  status: "sent";
  createdAt: Date;
}

const messages: MessageDoc[] = [];

export const Message = {
  async create(fields: Omit<MessageDoc, "_id" | "createdAt">): Promise<MessageDoc> {
    const id = randomUUID();
    const message: MessageDoc = { _id: { toString: () => id }, createdAt: new Date(), ...fields };
    messages.push(message);
    return message;
  },
  async find(conversationId: string): Promise<MessageDoc[]> {
    return messages.filter((m) => m.conversationId === conversationId);
  },
};
