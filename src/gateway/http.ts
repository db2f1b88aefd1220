/**
 * The HTTP side of the gateway: `POST /graphql` with AppSync's auth and error shapes,
 * `GET /healthz`, CORS, and hooks for other routes (metrics, the web page).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isRefusal, type Authenticator } from './auth.js';
import { appSyncError, executeOperation, type GatewayServices, type GraphQLRequest } from './operations.js';
import type { LoadedSchema } from './schema.js';

/** Another route: returns true when it handled the request. */
export type RouteHandler = (request: IncomingMessage, response: ServerResponse) => boolean | Promise<boolean>;

export interface HttpHandlerOptions {
  loaded: LoadedSchema;
  services: GatewayServices;
  authenticator: Authenticator;
  maxBodyBytes: number;
  /** False until the gateway is ready and after it starts stopping: /healthz answers 503. */
  isReady: () => boolean;
  routes?: RouteHandler[];
}

const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, POST, OPTIONS',
  'access-control-allow-headers': 'content-type, x-api-key, authorization, x-amz-date, x-amz-security-token, x-amz-user-agent, x-amz-content-sha256',
  'access-control-max-age': '86400',
};

/** Creates the request listener. It never throws: every failure is answered. */
export function createHttpHandler(options: HttpHandlerOptions) {
  const { services } = options;
  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    try {
      await handle(request, response);
    } catch (error) {
      const id = crypto.randomUUID();
      services.logger.error('http-request-failed', { errorId: id, error });
      if (!response.headersSent) sendJson(response, 500, { errors: [appSyncError('InternalFailure', `internal error (id ${id})`)] });
      else response.destroy();
    }
  };

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (request.method === 'OPTIONS') {
      response.writeHead(204, CORS_HEADERS).end();
      return;
    }
    if (url.pathname === '/healthz' && (request.method === 'GET' || request.method === 'HEAD')) {
      const ready = options.isReady();
      sendJson(response, ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable' });
      return;
    }
    if (url.pathname === '/graphql') {
      if (request.method !== 'POST') {
        response.setHeader('allow', 'POST, OPTIONS');
        sendJson(response, 405, {
          errors: [appSyncError('MethodNotAllowed', `${request.method} is not accepted on /graphql; POST a JSON body {"query", "variables"}, or open a WebSocket.`)],
        });
        return;
      }
      await graphql(request, response);
      return;
    }
    for (const route of options.routes ?? []) {
      if (await route(request, response)) return;
    }
    sendJson(response, 404, {
      errors: [appSyncError('NotFound', `No route for ${request.method} ${url.pathname}; the API is POST /graphql, WebSocket /graphql/realtime and /graphql.`)],
    });
  }

  async function graphql(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const body = await readBody(request, options.maxBodyBytes);
    if (body === undefined) {
      sendJson(response, 413, {
        errors: [
          appSyncError(
            'PayloadTooLargeException',
            `The request body is larger than ${options.maxBodyBytes} bytes (LONGRUN_MAX_BODY_BYTES).`,
          ),
        ],
      });
      return;
    }
    const headers = lowerCaseHeaders(request);
    const principal = await options.authenticator.authenticate({
      headers,
      method: request.method ?? 'POST',
      path: request.url ?? '/graphql',
      body,
    });
    if (isRefusal(principal)) {
      sendJson(response, principal.signature ? 403 : 401, {
        errors: [appSyncError(principal.signature ? 'InvalidSignatureException' : 'UnauthorizedException', principal.error)],
      });
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch (error) {
      sendJson(response, 400, {
        errors: [
          appSyncError(
            'MalformedHttpRequestException',
            `The request body is not valid JSON (${(error as Error).message}); send {"query": "...", "variables": {...}}.`,
          ),
        ],
      });
      return;
    }
    const graphQLRequest = toGraphQLRequest(parsed);
    if (typeof graphQLRequest === 'string') {
      sendJson(response, 400, { errors: [appSyncError('MalformedHttpRequestException', graphQLRequest)] });
      return;
    }
    const outcome = await executeOperation(options.loaded, graphQLRequest, { principal, services });
    sendJson(response, outcome.status, outcome.body);
  }
}

function toGraphQLRequest(value: unknown): GraphQLRequest | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return 'The request body must be a JSON object {"query": "...", "variables": {...}}; batched arrays are not accepted.';
  }
  const record = value as Record<string, unknown>;
  if (typeof record.query !== 'string' || record.query.trim() === '') {
    return 'The request body needs a "query" string holding a GraphQL document.';
  }
  if (record.variables != null && (typeof record.variables !== 'object' || Array.isArray(record.variables))) {
    return '"variables" must be a JSON object.';
  }
  if (record.operationName != null && typeof record.operationName !== 'string') {
    return '"operationName" must be a string.';
  }
  return {
    query: record.query,
    variables: (record.variables as Record<string, unknown> | null | undefined) ?? undefined,
    operationName: (record.operationName as string | null | undefined) ?? undefined,
  };
}

/** Reads the body as UTF-8; undefined when it passes `limit` (the rest is drained, not kept). */
function readBody(request: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(request.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      request.resume();
      resolve(undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        tooLarge = true;
        chunks.length = 0;
        return;
      }
      if (!tooLarge) chunks.push(chunk);
    });
    request.on('end', () => resolve(tooLarge ? undefined : Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function lowerCaseHeaders(request: IncomingMessage): Record<string, string | undefined> {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    headers[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
  }
  return headers;
}

/** Sends a JSON response with CORS headers. */
export function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  response.writeHead(status, {
    ...CORS_HEADERS,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
  });
  response.end(payload);
}
