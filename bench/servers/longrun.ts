/**
 * The gateway under test, in a process of its own: `createGateway` with the simulated model,
 * configured from the environment the runner passes (LONGRUN_FLUSH_MS, LONGRUN_DB, ...), exactly
 * as `longrun serve` would be. One override: events are stamped with `performance.timeOrigin +
 * performance.now()` instead of `Date.now` (`preciseClock`), so an event's `createdAt` has the
 * microsecond precision the delivery-latency figures need. Run as a child of `bench/run.ts`.
 */
import { loadConfig } from '../../src/config.js';
import { createGateway } from '../../src/gateway/index.js';
import { serveControl } from '../common.js';

const config = loadConfig({
  HOST: '127.0.0.1',
  PORT: '0',
  LONGRUN_LOG_LEVEL: 'warn',
  LONGRUN_SIM_TTFT_MS: '0',
  ...process.env,
});
const gateway = createGateway(config, { preciseClock: true });
const endpoints = await gateway.start();
serveControl(
  {
    kind: 'longrun',
    protocol: 'appsync',
    wsUrl: endpoints.realtimeUrl,
    httpUrl: endpoints.graphqlUrl,
    apiKey: gateway.apiKey.key,
  },
  () => gateway.stop(),
);
