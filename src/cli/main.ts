/**
 * The `longrun` command line: parses the command and hands over to it.
 */
import { serve } from './serve.js';

const USAGE = `Usage: longrun <command>

Commands:
  serve                 start the gateway (the same as npm start); configured by environment variables

Run "longrun <command> --help" for a command's options.`;

/** Runs the CLI with `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve();
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`longrun: unknown command "${command}"\n${USAGE}\n`);
      void rest;
      return 2;
  }
}
