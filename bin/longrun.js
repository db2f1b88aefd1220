#!/usr/bin/env node
// The `longrun` command. The TypeScript sources are built into dist/ by `npm install` (prepare).
import { main } from '../dist/src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`longrun: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
