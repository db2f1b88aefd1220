/**
 * `longrun serve` (and `npm start`): starts the gateway from the environment's configuration,
 * prints where it listens and the API key, and stops cleanly on SIGINT or SIGTERM.
 */
import { ConfigError, loadConfig } from '../config.js';
import { createGateway, type GatewayOverrides } from '../gateway/index.js';

/** Runs the gateway until a signal; resolves with the process exit code. */
export async function serve(
  environment: Record<string, string | undefined> = process.env,
  output: { out: (line: string) => void; err: (line: string) => void } = {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  },
  overrides: GatewayOverrides = {},
): Promise<number> {
  let config;
  try {
    config = loadConfig(environment);
  } catch (error) {
    if (error instanceof ConfigError) {
      output.err(`longrun: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const gateway = createGateway(config, overrides);
  let endpoints;
  try {
    endpoints = await gateway.start();
  } catch (error) {
    output.err(`longrun: could not start the gateway: ${(error as Error).message}`);
    await gateway.stop().catch(() => undefined);
    return 1;
  }
  const key = gateway.apiKey;
  output.out(`longrun gateway ready (model provider: ${config.provider.name})`);
  output.out(`  GraphQL:   ${endpoints.graphqlUrl}`);
  output.out(`  Realtime:  ${endpoints.realtimeUrl}  (AppSync protocol)`);
  output.out(`  graphql-ws: ${endpoints.graphqlWsUrl}`);
  output.out(`  API key:   ${key.key}${key.generated ? `  (dev key${key.path ? `, kept in ${key.path}` : ''})` : ''}`);
  output.out(`  Chat page: ${endpoints.graphqlUrl.replace(/\/graphql$/, '/')}`);
  output.out(`  Health:    ${endpoints.graphqlUrl.replace(/\/graphql$/, '/healthz')}`);

  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      output.err(`longrun: ${signal} received, stopping`);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  await gateway.stop();
  return 0;
}
