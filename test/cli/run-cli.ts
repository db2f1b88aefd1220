/**
 * The `longrun` entry point over the TypeScript sources: the same few lines as `bin/longrun.js`,
 * which runs `dist/`. The CLI tests bundle this file from the current sources and run it.
 */
import { main } from '../../src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`longrun: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
