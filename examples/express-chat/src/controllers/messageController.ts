// ORIGIN.md's message controller, as it was; the one change is the import:
//   import { sendEventToUser, broadcastToConversation } from '../sse';
import { Request, Response } from 'express';
import { Message } from '../models/Message.js';
import { sendEventToUser, broadcastToConversation } from 'ssehub';

export const createMessage = async (req: Request, res: Response) => {
  const { conversationId, text, senderId } = req.body;

  // Save message to database
  const message = await Message.create({
    conversationId,
    senderId,
    text,
    status: 'sent'
  });

  // Broadcast to conversation members
  await broadcastToConversation(conversationId, 'message:new', {
    message: {
      id: message._id.toString(),
      text: message.text,
      senderId: message.senderId.toString(),
      createdAt: message.createdAt
    }
  });

  res.json({ success: true, message });
};

// A direct notification (the original's other call).
export const notifyUser = async (req: Request, res: Response) => {
  const { userId, event, data } = req.body;
  await sendEventToUser(userId, event, data);
  res.json({ success: true });
};
