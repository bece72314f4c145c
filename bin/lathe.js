#!/usr/bin/env -S node --max-semi-space-size=64
// The `lathe` command. Built by `npm run setup` (tsc into dist/). A 64 MB young generation makes
// training steps ~17% faster: tfjs allocates many short-lived objects per kernel (bench/README.md).
import { main } from '../dist/src/cli/main.js';

await main(process.argv.slice(2));
