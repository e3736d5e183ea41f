import express, { NextFunction, Request, Response } from 'express';
import { InvalidMessage } from 'ssehub';
import { createConversation } from './controllers/conversationController.js';
import { createMessage, notifyUser } from './controllers/messageController.js';

export const app = express();
app.use(express.json());
app.post('/conversations', createConversation);
app.post('/messages', createMessage);
app.post('/notify', notifyUser);

// A call ssehub refuses (a bad id, an event name with spaces...) is the
// client's mistake: 400 with the reason. Anything else is ours: 500.
app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
  if (err instanceof InvalidMessage) res.status(400).json({ error: err.message });
  else res.status(500).json({ error: 'internal error' });
});
