// What the in-process service knew by itself, ssehub is told: who is in a
// conversation (set once, then changed with addMembers/removeMembers).
import { Request, Response } from 'express';
import { setMembers } from 'ssehub';

export const createConversation = async (req: Request, res: Response) => {
  const { conversationId, members } = req.body;
  await setMembers(conversationId, members);
  res.json({ success: true, conversationId });
};
