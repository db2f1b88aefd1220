/**
 * The chat page's HTTP route: `GET /` (the page), `GET /assets/<file>` (its bundled script, style
 * sheet and icon, built by `web/build.mjs` into `dist/web/`) and `GET /app-config.json` (what the
 * page needs to know about this gateway). Everything else is left to the other routes.
 *
 * Every answer carries a strict Content-Security-Policy: scripts and styles only from the gateway
 * itself, connections only to it (HTTP and WebSocket), no frames, no plugins, no inline code. The
 * page renders model text with raw HTML off; the policy is the second wall should that ever fail.
 */
import { readFile, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ApiKeySource } from './auth.js';
import type { RouteHandler } from './http.js';
import { appSyncError } from './operations.js';

/** The policy of every answer of this route; see the module comment. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self' ws: wss:",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Where `web/build.mjs` writes the page: `dist/web` of this package, from the sources or from `dist`. */
export function defaultWebRoot(): string {
  // This file is src/gateway/static.ts (tests, tsx) or dist/src/gateway/static.js (built).
  const twoUp = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
  return basename(twoUp) === 'dist' ? join(twoUp, 'web') : join(twoUp, 'dist', 'web');
}

/** Options of `createWebRoute`. */
export interface WebRouteOptions {
  /** The API key in use: its value is offered to the page only when it is the generated dev key. */
  apiKey: ApiKeySource;
  /** The GraphQL endpoint's path, told to the page (default `/graphql`). */
  graphqlPath?: string;
  /** The built page: `index.html` and `assets/` (default `defaultWebRoot()`). */
  root?: string;
}

/** What `GET /app-config.json` answers. */
export interface AppConfig {
  graphqlPath: string;
  /** The gateway's generated dev key; absent when the key was configured (LONGRUN_API_KEY). */
  devApiKey?: string;
}

const CONTENT_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

// A plain file name: no separator, no leading dot, no escape. Anything else is not an asset, so no
// spelling of `..` (encoded, doubled, with backslashes) can leave the assets folder.
const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)+$/;
// esbuild's `[name]-[hash]` names: content-addressed, so they can be cached for good.
const HASHED_NAME = /-[A-Z0-9]{8}\.[a-z0-9.]+$/;

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/**
 * Creates the route. It answers GET and HEAD on `/`, `/index.html`, `/app-config.json` and
 * `/assets/*`; other methods there get 405. An unknown asset gets 404 and a page that was not
 * built 503, both as JSON in AppSync's error shape. Other paths are not handled (returns false).
 */
export function createWebRoute(options: WebRouteOptions): RouteHandler {
  const root = options.root ?? defaultWebRoot();
  const assets = join(root, 'assets');
  const graphqlPath = options.graphqlPath ?? '/graphql';

  return async (request, response) => {
    const { pathname } = new URL(request.url ?? '/', 'http://localhost');
    const isPage = pathname === '/' || pathname === '/index.html';
    const isConfig = pathname === '/app-config.json';
    const isAsset = pathname.startsWith('/assets/');
    if (!isPage && !isConfig && !isAsset) return false;

    if (request.method !== 'GET' && request.method !== 'HEAD') {
      sendError(response, 405, 'MethodNotAllowed', `${request.method} is not accepted on ${pathname}; use GET.`, { allow: 'GET, HEAD' });
      return true;
    }
    if (isConfig) {
      const config: AppConfig = { graphqlPath };
      if (options.apiKey.generated && mayOfferDevKey(request)) config.devApiKey = options.apiKey.key;
      const body = Buffer.from(JSON.stringify(config));
      // No CORS headers here, unlike the API: another web site must not read the dev key.
      send(request, response, 200, body, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      return true;
    }
    if (isPage) {
      const file = await readFileIfPresent(join(root, 'index.html'));
      if (file === undefined) {
        sendError(
          response,
          503,
          'WebPageNotBuilt',
          `The chat page is not built (${join(root, 'index.html')} is missing); run \`npm run build\`, which runs \`node web/build.mjs\`.`,
        );
        return true;
      }
      sendFile(request, response, file, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' });
      return true;
    }

    const name = pathname.slice('/assets/'.length);
    const extension = /\.[a-z0-9]+$/i.exec(name)?.[0]?.toLowerCase();
    const contentType = extension === undefined ? undefined : CONTENT_TYPES[extension];
    const file = ASSET_NAME.test(name) && contentType !== undefined ? await readFileIfPresent(join(assets, name)) : undefined;
    if (file === undefined) {
      sendError(response, 404, 'NotFound', `No asset ${pathname}; the page's assets are listed in /index.html.`);
      return true;
    }
    sendFile(request, response, file, {
      'content-type': contentType!,
      'cache-control': HASHED_NAME.test(name) ? 'public, max-age=31536000, immutable' : 'no-cache',
    });
    return true;
  };
}

/**
 * Whether the request may read the dev key: only a browser on the gateway's own machine, on a page
 * the gateway served. The connection must come from a loopback address (a gateway bound to
 * 0.0.0.0 does not hand its key to the whole network); the `Host` must be an IP literal or
 * `localhost` (another DNS name is what a DNS-rebinding page sends); and the browser must not say
 * the request is cross-site.
 */
export function mayOfferDevKey(request: Pick<IncomingMessage, 'headers'> & { socket: { remoteAddress?: string | undefined } }): boolean {
  const remote = request.socket.remoteAddress ?? '';
  if (!/^(?:127\.|::ffff:127\.)/.test(remote) && remote !== '::1') return false;
  if (request.headers['sec-fetch-site'] === 'cross-site') return false;
  const host = request.headers.host ?? '';
  const hostname = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d+$/, '');
  return hostname === 'localhost' || /^\d{1,3}(?:\.\d{1,3}){3}$/.test(hostname) || /^\[[0-9a-f:.]+\]$/i.test(hostname);
}

interface LoadedFile {
  body: Buffer;
  etag: string;
}

async function readFileIfPresent(path: string): Promise<LoadedFile | undefined> {
  try {
    const info = await stat(path);
    if (!info.isFile()) return undefined;
    const body = await readFile(path);
    return { body, etag: `W/"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"` };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw error;
  }
}

function sendFile(request: IncomingMessage, response: ServerResponse, file: LoadedFile, headers: Record<string, string>): void {
  if (request.headers['if-none-match'] === file.etag) {
    response.writeHead(304, { ...SECURITY_HEADERS, etag: file.etag, 'cache-control': headers['cache-control']! }).end();
    return;
  }
  send(request, response, 200, file.body, { ...headers, etag: file.etag });
}

function send(request: IncomingMessage, response: ServerResponse, status: number, body: Buffer, headers: Record<string, string>): void {
  response.writeHead(status, { ...SECURITY_HEADERS, ...headers, 'content-length': body.length });
  response.end(request.method === 'HEAD' ? undefined : body);
}

function sendError(response: ServerResponse, status: number, errorType: string, message: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ errors: [appSyncError(errorType, message)] });
  response.writeHead(status, {
    ...SECURITY_HEADERS,
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}
