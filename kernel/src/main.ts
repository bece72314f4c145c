#!/usr/bin/env node
// Entry point Jupyter starts through the kernel spec: `node kernel/dist/main.js {connection_file}`.
import { readFileSync } from 'node:fs';
import { LatheKernel } from './kernel.js';
import type { ConnectionInfo } from './server.js';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: lathe-kernel <connection_file>\n');
  process.exit(2);
}
const conn = JSON.parse(readFileSync(file, 'utf8')) as ConnectionInfo;
await new LatheKernel(conn).start();

// Exit with the process that started us (as ipykernel's parent poller does), so no kernel outlives its client.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 2000).unref();
