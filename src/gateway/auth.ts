/**
 * Authentication at the gateway's edge, as AppSync does it: an API key in `x-api-key` (the default
 * mode), or a SigV4 signature (AWS_IAM) from the worker's credentials for the publish mutations.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { AuthMode } from './schema.js';

/** Who is calling, and how they proved it. `id` never holds a secret. */
export interface Principal {
  mode: AuthMode;
  /** A stable, non-secret id: `apikey:<first 6 chars>` or the IAM access key id. */
  id: string;
}

/** What a request carries for authentication. */
export interface AuthRequest {
  headers: Record<string, string | undefined>;
  method: string;
  path: string;
  body: string;
}

/** Verifies a SigV4-signed request; returns the access key id, or the reason for refusal. */
export type IamVerifier = (request: AuthRequest) => { ok: true; accessKeyId: string } | { ok: false; reason: string };

/** Authenticates requests; `authenticate` returns undefined when the request proves nothing valid. */
export interface Authenticator {
  authenticate(request: AuthRequest): Principal | { error: string } | undefined;
  /** Checks an API key alone (realtime `start` messages). */
  checkApiKey(key: string | undefined): Principal | undefined;
}

/** Compares secrets in constant time (over their digests, so lengths do not leak either). */
export function secretsEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** Creates the authenticator for a set of API keys and an optional SigV4 verifier. */
export function createAuthenticator(options: { apiKeys: readonly string[]; verifyIam?: IamVerifier | undefined }): Authenticator {
  const checkApiKey = (key: string | undefined): Principal | undefined => {
    if (key === undefined || key === '') return undefined;
    // Every key is compared, so the time taken does not tell which one nearly matched.
    let match: string | undefined;
    for (const candidate of options.apiKeys) if (secretsEqual(key, candidate)) match = candidate;
    return match === undefined ? undefined : { mode: 'API_KEY', id: `apikey:${match.slice(0, 6)}` };
  };
  return {
    checkApiKey,
    authenticate(request) {
      const authorization = request.headers.authorization;
      if (authorization?.startsWith('AWS4-HMAC-SHA256')) {
        if (!options.verifyIam) return { error: 'AWS_IAM requests are not accepted: the gateway has no worker credentials (LONGRUN_WORKER_ACCESS_KEY_ID, LONGRUN_WORKER_SECRET_ACCESS_KEY).' };
        const result = options.verifyIam(request);
        return result.ok ? { mode: 'AWS_IAM', id: result.accessKeyId } : { error: result.reason };
      }
      return checkApiKey(request.headers['x-api-key']);
    },
  };
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
