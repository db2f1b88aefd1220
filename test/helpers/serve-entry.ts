// Runs `longrun serve` from the TypeScript sources (through tsx), for tests that need the gateway
// in a process of its own: to kill it with SIGKILL, or to send it SIGTERM.
import { serve } from '../../src/cli/serve.js';

process.exitCode = await serve();
