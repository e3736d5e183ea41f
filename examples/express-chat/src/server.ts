import { close } from 'ssehub';
import { app } from './app.js';

const port = Number(process.env.PORT ?? 3000);
const server = app.listen(port, () => console.log(`express-chat on http://127.0.0.1:${port}/`));

// Stop taking requests, then let the publisher send what it holds.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => server.close(() => void close()));
}
