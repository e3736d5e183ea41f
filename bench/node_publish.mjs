// The Node publisher (clients/node, the npm package ssehub) driven like the
// Python one in bench/floor_bin.py: `rate` sendEventToUser calls/s, each its own
// promise (as many concurrent request handlers would make them), coalesced by
// the Publisher into batch messages. `t` in the data is when the event was due
// (µs since the epoch), as in the other publishers. Prints one JSON line.
//   node bench/node_publish.mjs '{"url":..., "rate":..., "duration":..., "users":[prefix, n], "pad":..., "run":...}'
import { Publisher } from "../clients/node/dist/index.js";

const { url, rate, duration, users: [prefix, count], pad, run } = JSON.parse(process.argv[2]);
const names = Array.from({ length: count }, (_, i) => prefix + String(i).padStart(6, "0"));
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const tick = () => new Promise((resolve) => setTimeout(resolve, 1));

const hub = new Publisher(url);
await hub.publish("members.bench-warmup", '{"op":"set","users":[]}'); // connect first
const messages0 = hub.stats.messages;
const total = Math.floor(rate * duration);
const calls = [];
const t0 = performance.now();
const w0 = nowUs();
const c0 = process.cpuUsage();
let sent = 0;
while (sent < total) {
  const due = Math.min(Math.floor((rate * (performance.now() - t0)) / 1000), total);
  for (let n = sent; n < due; n++) {
    const data = { t: w0 + Math.floor((n * 1e6) / rate), n, p: pad };
    calls.push(hub.sendEventToUser(names[n % names.length], "bench", data, { key: `${run}-${n}` }));
  }
  sent = due;
  await tick();
}
await Promise.all(calls);
const elapsed = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(c0);
const out = {
  sent,
  messages: hub.stats.messages - messages0,
  elapsed,
  cpu_s: (cpu.user + cpu.system) / 1e6,
  rate,
};
await hub.close();
console.log(JSON.stringify(out));
