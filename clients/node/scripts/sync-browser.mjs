// The edge serves GET /ssehub.js from edge/static/ssehub.js, which is this
// package's dist/browser.js, copied here after each build (one source:
// src/browser.ts). `--check`: fail if the two differ (CI), copy nothing.
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const built = fileURLToPath(new URL("../dist/browser.js", import.meta.url));
const served = fileURLToPath(new URL("../../../edge/static/ssehub.js", import.meta.url));
const source = readFileSync(built);
if (process.argv.includes("--check")) {
  if (!source.equals(readFileSync(served))) {
    console.error(`${served} is not the build of src/browser.ts: run npm run build in clients/node and commit it`);
    process.exit(1);
  }
} else {
  writeFileSync(served, source);
}
