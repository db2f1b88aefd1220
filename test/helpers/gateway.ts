/**
 * Starts a real gateway on 127.0.0.1, port 0, for a test, with fast simulated-model settings.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { createGateway, type Gateway, type GatewayEndpoints, type GatewayOverrides } from '../../src/gateway/index.js';

export interface TestGateway {
  gateway: Gateway;
  endpoints: GatewayEndpoints;
  apiKey: string;
  /** POSTs a GraphQL request with the API key (or the given headers); returns status and parsed body. */
  graphql(query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/** Environment used by tests unless overridden. */
export const TEST_ENVIRONMENT: Record<string, string> = {
  HOST: '127.0.0.1',
  PORT: '0',
  LONGRUN_DB: ':memory:',
  LONGRUN_API_KEY: 'da2-testkeytestkeytestkeytestk',
  LONGRUN_LOG_LEVEL: 'silent',
  LONGRUN_SIM_TTFT_MS: '0',
  LONGRUN_SIM_TOKENS_PER_SEC: '2000',
  LONGRUN_FLUSH_MS: '10',
  LONGRUN_KEEPALIVE_MS: '1000',
};

let scratch: string | undefined;
let databases = 0;

/** Where a gateway runs its turns; gateway tests run once for each (`describe.each(TURN_PLACES)`). */
export interface TurnPlace {
  name: string;
  /** Settings that put turns there; call once per gateway (each gets its own database). */
  environment(): Record<string, string>;
}

export const TURN_PLACES: TurnPlace[] = [
  { name: "turns on the gateway's thread", environment: () => ({}) },
  {
    // Threads cannot share an in-memory database, so these gateways get a file each.
    name: 'turns on two turn threads',
    environment: () => {
      if (scratch === undefined) {
        const folder = mkdtempSync(join(tmpdir(), 'longrun-threads-'));
        process.once('exit', () => rmSync(folder, { recursive: true, force: true }));
        scratch = folder;
      }
      return { LONGRUN_DB: join(scratch, `gateway-${++databases}.db`), LONGRUN_TURN_THREADS: '2' };
    },
  },
];

export async function startTestGateway(
  environment: Record<string, string> = {},
  overrides: GatewayOverrides = {},
): Promise<TestGateway> {
  const config = loadConfig({ ...TEST_ENVIRONMENT, ...environment });
  const gateway = createGateway(config, overrides);
  const endpoints = await gateway.start();
  const apiKey = gateway.apiKey.key;
  return {
    gateway,
    endpoints,
    apiKey,
    graphql: (query, variables, headers) => postGraphQL(endpoints.graphqlUrl, { query, variables }, headers ?? { 'x-api-key': apiKey }),
    stop: () => gateway.stop(),
  };
}

/** POSTs a body (an object, or a raw string sent as is) to a GraphQL URL. */
export async function postGraphQL(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

export const START_MUTATION = /* GraphQL */ `
  mutation Start($input: StartConversationInput!) {
    startConversation(input: $input) { conversationId status }
  }
`;

export const EVENTS_QUERY = /* GraphQL */ `
  query Events($conversationId: ID!, $afterSeq: Int) {
    conversationEvents(conversationId: $conversationId, afterSeq: $afterSeq) {
      conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt
    }
  }
`;

export const EVENT_FIELDS = 'conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt';

export const ON_EVENT_SUBSCRIPTION = /* GraphQL */ `
  subscription OnEvent($conversationId: ID!) {
    onConversationEvent(conversationId: $conversationId) { ${EVENT_FIELDS} }
  }
`;

export const ON_CHUNK_SUBSCRIPTION = /* GraphQL */ `
  subscription OnChunk($conversationId: ID!) {
    onReceiveChunk(conversationId: $conversationId) { conversationId chunk }
  }
`;
