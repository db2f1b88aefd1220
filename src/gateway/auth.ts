/**
 * Authentication at the gateway's edge, as AppSync does it: API keys in `x-api-key` (API_KEY
 * mode), OpenID Connect tokens in `Authorization` (OPENID_CONNECT mode, where conversations belong
 * to the token's `sub`), and SigV4 signatures (AWS_IAM) from the worker's credentials.
 *
 * Keys are compared in constant time and never logged: a principal's id is a digest prefix.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import type { AuthMode } from './schema.js';

/** Who is calling, and how they proved it. `id` never holds a secret. */
export interface Principal {
  mode: AuthMode;
  /** `apikey:<digest prefix>`, the OIDC subject, or the IAM access key id. */
  id: string;
}

/** What a request carries for authentication. */
export interface AuthRequest {
  headers: Record<string, string | undefined>;
  method: string;
  path: string;
  body: string;
}

/** A refusal, with the message for the caller. */
export interface AuthRefusal {
  error: string;
  /** True for a bad SigV4 signature (HTTP 403), false for a missing or bad key or token (401). */
  signature: boolean;
}

/** Verifies a SigV4-signed request; returns the access key id, or the reason for refusal. */
export type IamVerifier = (request: AuthRequest) => { ok: true; accessKeyId: string } | { ok: false; reason: string };

/** Authenticates requests and realtime connections. */
export interface Authenticator {
  /** An HTTP request: SigV4, then the client mode's credential (API key or OIDC token). */
  authenticate(request: AuthRequest): Promise<Principal | AuthRefusal>;
  /** The credential of a realtime connection or `start` message: `x-api-key` or `Authorization`. */
  authenticateHeaders(headers: Record<string, string | undefined>): Promise<Principal | AuthRefusal>;
}

const UNAUTHORIZED = 'You are not authorized to make this call.';

/** Compares secrets in constant time (over their digests, so lengths do not leak either). */
export function secretsEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** One API key, as AppSync issues them: the secret and an optional expiry. */
export interface ApiKeyEntry {
  key: string;
  /** Milliseconds since the epoch; the key is refused from then on. */
  expiresAt?: number | undefined;
  description?: string | undefined;
}

/**
 * The API keys the gateway accepts: fixed ones (LONGRUN_API_KEY or the dev key) and those in
 * LONGRUN_API_KEYS_FILE, a JSON array of `{ "key", "expires"? (ISO date), "description"? }`,
 * re-read when the file changes so keys rotate without a restart. A file that cannot be read or
 * parsed keeps the keys last read, and the problem is reported through `onError`.
 */
export function createApiKeyRing(options: {
  fixed: readonly ApiKeyEntry[];
  file?: string | undefined;
  clock?: () => number;
  onError?: (message: string) => void;
}): { check(key: string | undefined): Principal | 'expired' | undefined; readonly size: number } {
  const clock = options.clock ?? Date.now;
  let fromFile: ApiKeyEntry[] = [];
  let seenVersion = '';
  let checkedAt = 0;

  const reload = (): void => {
    if (!options.file) return;
    // Stat at most every 500 ms: cheap enough on every request, quick enough for a rotation.
    const now = clock();
    if (now - checkedAt < 500) return;
    checkedAt = now;
    try {
      const stat = statSync(options.file);
      const version = `${stat.mtimeMs}:${stat.size}`;
      if (version === seenVersion) return;
      seenVersion = version;
      fromFile = parseKeysFile(readFileSync(options.file, 'utf8'), options.file);
    } catch (error) {
      options.onError?.((error as Error).message);
    }
  };
  reload();

  return {
    get size() {
      return options.fixed.length + fromFile.length;
    },
    check(key) {
      if (key === undefined || key === '') return undefined;
      reload();
      // Every key is compared, so the time taken does not tell which one nearly matched.
      let match: ApiKeyEntry | undefined;
      for (const entry of [...options.fixed, ...fromFile]) if (secretsEqual(key, entry.key)) match = entry;
      if (match === undefined) return undefined;
      if (match.expiresAt !== undefined && match.expiresAt <= clock()) return 'expired';
      return { mode: 'API_KEY', id: `apikey:${createHash('sha256').update(match.key).digest('hex').slice(0, 12)}` };
    },
  };
}

function parseKeysFile(text: string, path: string): ApiKeyEntry[] {
  const parsed: unknown = JSON.parse(text);
  if (!Array.isArray(parsed)) throw new Error(`${path} must hold a JSON array of {"key", "expires"?}`);
  return parsed.map((item, index) => {
    const entry = item as Record<string, unknown>;
    if (typeof entry.key !== 'string' || entry.key.length < 8) {
      throw new Error(`${path}: entry ${index} needs a "key" string of 8 characters or more`);
    }
    const expires = entry.expires === undefined ? undefined : Date.parse(String(entry.expires));
    if (expires !== undefined && Number.isNaN(expires)) {
      throw new Error(`${path}: entry ${index} has an "expires" that is not an ISO date`);
    }
    return { key: entry.key, expiresAt: expires, description: typeof entry.description === 'string' ? entry.description : undefined };
  });
}

/** Verifies OpenID Connect ID or access tokens against the issuer's JWKS (fetched and cached by jose). */
export function createOidcVerifier(options: { issuer: string; audience: string; jwksUrl: string }) {
  const keys = createRemoteJWKSet(new URL(options.jwksUrl));
  return async (token: string): Promise<Principal | AuthRefusal> => {
    try {
      const { payload } = await jwtVerify(token.replace(/^Bearer\s+/i, ''), keys, {
        issuer: options.issuer,
        audience: options.audience,
      });
      if (typeof payload.sub !== 'string' || payload.sub === '') {
        return { error: `${UNAUTHORIZED} The token has no "sub" claim.`, signature: false };
      }
      return { mode: 'OPENID_CONNECT', id: payload.sub };
    } catch (error) {
      return { error: `${UNAUTHORIZED} The token was refused: ${(error as Error).message}.`, signature: false };
    }
  };
}

/** Creates the authenticator for the configured client mode and an optional SigV4 verifier. */
export function createAuthenticator(options: {
  mode: 'apikey' | 'oidc';
  apiKeys?: ReturnType<typeof createApiKeyRing>;
  verifyToken?: (token: string) => Promise<Principal | AuthRefusal>;
  verifyIam?: IamVerifier | undefined;
}): Authenticator {
  const authenticateHeaders = async (headers: Record<string, string | undefined>): Promise<Principal | AuthRefusal> => {
    if (options.mode === 'oidc') {
      const token = headers.authorization ?? headers.Authorization;
      if (!token || !options.verifyToken) return { error: `${UNAUTHORIZED} Send an OpenID Connect token in the Authorization header.`, signature: false };
      return options.verifyToken(token);
    }
    const result = options.apiKeys?.check(headers['x-api-key']);
    if (result === 'expired') return { error: 'The API key has expired; ask for a new one.', signature: false };
    return result ?? { error: UNAUTHORIZED, signature: false };
  };
  return {
    authenticateHeaders,
    async authenticate(request) {
      const authorization = request.headers.authorization;
      if (authorization?.startsWith('AWS4-HMAC-SHA256')) {
        if (!options.verifyIam) {
          return {
            error: 'AWS_IAM requests are not accepted: the gateway has no worker credentials (LONGRUN_WORKER_ACCESS_KEY_ID, LONGRUN_WORKER_SECRET_ACCESS_KEY).',
            signature: true,
          };
        }
        const result = options.verifyIam(request);
        return result.ok ? { mode: 'AWS_IAM', id: result.accessKeyId } : { error: result.reason, signature: true };
      }
      return authenticateHeaders(request.headers);
    },
  };
}

/** True when `value` is a refusal rather than a principal. */
export function isRefusal(value: Principal | AuthRefusal): value is AuthRefusal {
  return 'error' in value;
}

/** Where the API key came from. */
export interface ApiKeySource {
  key: string;
  /** True when the gateway generated a dev key (LONGRUN_API_KEY unset). */
  generated: boolean;
  /** The file a generated key is kept in, when it is kept. */
  path: string | undefined;
}

/**
 * The gateway's API key: LONGRUN_API_KEY when set; otherwise a dev key generated once and kept in
 * `api-key` beside the database (a `:memory:` database gets a fresh key each start).
 */
export function resolveApiKey(configured: string | undefined, databasePath: string): ApiKeySource {
  if (configured !== undefined) return { key: configured, generated: false, path: undefined };
  if (databasePath === ':memory:') return { key: generateApiKey(), generated: true, path: undefined };
  const path = join(dirname(databasePath), 'api-key');
  if (existsSync(path)) {
    const stored = readFileSync(path, 'utf8').trim();
    if (stored.length > 0) return { key: stored, generated: true, path };
  }
  const key = generateApiKey();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  return { key, generated: true, path };
}

/** An API key in AppSync's format: `da2-` and 26 lower-case base32 characters. */
export function generateApiKey(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  const bytes = randomBytes(26);
  let key = 'da2-';
  for (const byte of bytes) key += alphabet[byte % 32];
  return key;
}
