/**
 * The `longrun` command line: parses the command and hands over to it. Commands are imported
 * when they run, so `longrun chat` does not load the gateway (SQLite, the model SDKs) it never uses.
 */

const USAGE = `Usage: longrun <command>

Commands:
  serve                 start the gateway (the same as npm start); configured by environment variables
  chat "prompt"         start a turn and print the answer as it is written
  replay ID             print a stored conversation

Run "longrun <command> --help" for a command's options.`;

/** Runs the CLI with `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve': {
      const { serve } = await import('./serve.js');
      return serve();
    }
    case 'chat': {
      const { chat } = await import('./chat.js');
      return chat(rest);
    }
    case 'replay': {
      const { replay } = await import('./replay.js');
      return replay(rest);
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`longrun: unknown command "${command}"\n${USAGE}\n`);
      return 2;
  }
}
