#!/usr/bin/env node
// The `lathe` command. Built by `npm run setup` (tsc into dist/).
import { main } from '../dist/src/cli/main.js';

await main(process.argv.slice(2));
