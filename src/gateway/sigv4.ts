/**
 * Verifies AWS Signature Version 4 on incoming HTTP requests, as AppSync does for its AWS_IAM
 * mode: the gateway accepts the publish mutations from a worker that signs with known credentials.
 *
 * The canonical request is rebuilt from what arrived (method, path, query, the signed headers and
 * the body's own SHA-256) exactly as `@smithy/signature-v4` builds it when signing, and the
 * signature is recomputed with the secret of the claimed access key. The computation is done with
 * `node:crypto` so that verification is synchronous (the gateway authenticates before it parses);
 * `test/publisher/appsync.test.ts` checks it against signatures made by `@smithy/signature-v4`.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** Credentials whose signatures are accepted. */
export interface SigV4Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** A request as it arrived. Header names in any case; a repeated header's values joined with `,`. */
export interface SigV4Request {
  method: string;
  /** The request target as sent: path and optional `?query`, still percent-encoded. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The raw body; a string is taken as UTF-8. */
  body: string | Uint8Array;
}

/** What `verifySigV4Request` needs besides the request. */
export interface SigV4VerifyOptions {
  credentials: readonly SigV4Credentials[];
  /** Milliseconds since the epoch (default `Date.now()`). */
  now?: number;
  /** Largest accepted distance between `x-amz-date` and `now` (default 5 minutes, as AWS). */
  maxSkewMs?: number;
  /** The service in the credential scope (default `appsync`). */
  service?: string;
  /** The region the scope must name; any region when omitted. */
  region?: string;
}

/** The outcome: the signer's access key id, or why the request is refused (safe to show the caller). */
export type SigV4Result = { ok: true; accessKeyId: string } | { ok: false; reason: string };

const ALGORITHM = 'AWS4-HMAC-SHA256';
const AUTHORIZATION_PATTERN =
  /^AWS4-HMAC-SHA256\s+Credential=([^/\s,]+)\/(\d{8})\/([^/\s,]+)\/([^/\s,]+)\/aws4_request\s*,\s*SignedHeaders=([a-z0-9;._-]+)\s*,\s*Signature=([0-9a-f]{64})$/;
const DATE_PATTERN = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

/** Verifies one request's SigV4 `Authorization` header. Never throws. */
export function verifySigV4Request(request: SigV4Request & SigV4VerifyOptions): SigV4Result {
  try {
    return verify(request);
  } catch (error) {
    return { ok: false, reason: `The request signature could not be checked: ${(error as Error).message}` };
  }
}

/**
 * A verifier bound to a set of credentials, in the shape the gateway's authenticator takes:
 * `(request) => SigV4Result`. `clock` gives the server's time (default `Date.now`).
 */
export function createSigV4Verifier(
  credentials: readonly SigV4Credentials[],
  clock: () => number = Date.now,
  options: Omit<SigV4VerifyOptions, 'credentials' | 'now'> = {},
): (request: SigV4Request) => SigV4Result {
  return (request) =>
    verifySigV4Request({
      ...request,
      credentials,
      now: clock(),
      maxSkewMs: options.maxSkewMs,
      service: options.service,
      region: options.region,
    });
}

function verify(input: SigV4Request & SigV4VerifyOptions): SigV4Result {
  const headers = lowerCaseHeaders(input.headers);
  const authorization = headers.authorization;
  if (authorization === undefined) return { ok: false, reason: 'The request is not signed: it has no Authorization header.' };
  const match = AUTHORIZATION_PATTERN.exec(authorization.trim());
  if (match === null) {
    return {
      ok: false,
      reason: `The Authorization header is not a ${ALGORITHM} signature of the form "${ALGORITHM} Credential=<key>/<date>/<region>/<service>/aws4_request, SignedHeaders=<names>, Signature=<hex>".`,
    };
  }
  const [, accessKeyId, scopeDate, region, service, signedHeaderList, signature] = match as unknown as [string, string, string, string, string, string, string];
  const expectedService = input.service ?? 'appsync';
  if (service !== expectedService) return { ok: false, reason: `The signature is for service "${service}"; this endpoint accepts "${expectedService}".` };
  if (input.region !== undefined && region !== input.region) {
    return { ok: false, reason: `The signature is for region "${region}"; this endpoint is in "${input.region}".` };
  }

  const amzDate = headers['x-amz-date'];
  const signedAt = amzDate === undefined ? undefined : parseAmzDate(amzDate);
  if (amzDate === undefined || signedAt === undefined) return { ok: false, reason: 'The request has no valid X-Amz-Date header (YYYYMMDDTHHMMSSZ).' };
  if (!amzDate.startsWith(scopeDate)) return { ok: false, reason: 'The credential scope date does not match X-Amz-Date.' };
  const now = input.now ?? Date.now();
  const maxSkewMs = input.maxSkewMs ?? 5 * 60 * 1000;
  if (Math.abs(now - signedAt) > maxSkewMs) {
    return {
      ok: false,
      reason: `The signature is stale or from the future: X-Amz-Date ${amzDate} is more than ${Math.round(maxSkewMs / 1000)} s from the server's time ${new Date(now).toISOString()}. Check the clock.`,
    };
  }

  const signedHeaders = signedHeaderList.split(';');
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) {
    return { ok: false, reason: 'The signature must cover the Host and X-Amz-Date headers.' };
  }
  const sortedHeaders = [...signedHeaders].sort();
  if (sortedHeaders.join(';') !== signedHeaderList || new Set(signedHeaders).size !== signedHeaders.length) {
    return { ok: false, reason: 'SignedHeaders must list lower-case header names once each, sorted.' };
  }
  const missing = signedHeaders.filter((name) => headers[name] === undefined);
  if (missing.length > 0) return { ok: false, reason: `Signed headers are missing from the request: ${missing.join(', ')}.` };

  const credentials = input.credentials.find((candidate) => candidate.accessKeyId === accessKeyId);
  if (credentials === undefined) return { ok: false, reason: `The access key ${accessKeyId} is not accepted here.` };

  const body = typeof input.body === 'string' ? Buffer.from(input.body, 'utf8') : input.body;
  const payloadHash = createHash('sha256').update(body).digest('hex');
  const declaredHash = headers['x-amz-content-sha256'];
  // A signer that sends X-Amz-Content-SHA256 signs that value instead of hashing the body itself;
  // the value must then be checked against the body, or any body would pass.
  if (declaredHash !== undefined && declaredHash !== payloadHash) {
    return { ok: false, reason: 'The body does not match its X-Amz-Content-SHA256 header: it was changed after signing.' };
  }

  const [rawPath = '/', rawQuery] = splitOnce(input.path, '?');
  const canonicalRequest = [
    input.method.toUpperCase(),
    canonicalPath(rawPath),
    canonicalQuery(rawQuery),
    ...sortedHeaders.map((name) => `${name}:${canonicalHeaderValue(headers[name]!)}`),
    '',
    signedHeaderList,
    payloadHash,
  ].join('\n');
  const scope = `${scopeDate}/${region}/${service}/aws4_request`;
  const stringToSign = [ALGORITHM, amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${credentials.secretAccessKey}`).update(scopeDate).digest();
  for (const part of [region, service, 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  const expected = createHmac('sha256', key).update(stringToSign).digest();
  const given = Buffer.from(signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return {
      ok: false,
      reason: 'The request signature does not match: the secret key is wrong, or the request was changed after signing.',
    };
  }
  return { ok: true, accessKeyId };
}

function lowerCaseHeaders(headers: SigV4Request['headers']): Record<string, string | undefined> {
  const result: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    result[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
  }
  return result;
}

function parseAmzDate(value: string): number | undefined {
  const parts = DATE_PATTERN.exec(value);
  if (parts === null) return undefined;
  const [, year, month, day, hour, minute, second] = parts.map(Number) as [number, number, number, number, number, number, number];
  const time = Date.UTC(year, month - 1, day, hour, minute, second);
  return Number.isNaN(time) ? undefined : time;
}

function splitOnce(value: string, separator: string): [string, string | undefined] {
  const index = value.indexOf(separator);
  return index === -1 ? [value, undefined] : [value.slice(0, index), value.slice(index + 1)];
}

/** RFC 3986 encoding, as `@smithy/util-uri-escape`. */
function escapeUri(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (character) => `%${character.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The canonical path of a non-S3 service: normalised, then encoded once more (as the signer does). */
function canonicalPath(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalized = `${path.startsWith('/') ? '/' : ''}${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return escapeUri(normalized).replace(/%2F/g, '/');
}

function canonicalQuery(query: string | undefined): string {
  if (query === undefined || query === '') return '';
  const pairs = query
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const [key = '', value = ''] = splitOnce(pair, '=');
      return [escapeUri(decodeURIComponent(key)), escapeUri(decodeURIComponent(value))] as const;
    })
    .filter(([key]) => key.toLowerCase() !== 'x-amz-signature');
  pairs.sort(([keyA, valueA], [keyB, valueB]) => (keyA < keyB ? -1 : keyA > keyB ? 1 : valueA < valueB ? -1 : valueA > valueB ? 1 : 0));
  return pairs.map(([key, value]) => `${key}=${value}`).join('&');
}

function canonicalHeaderValue(value: string): string {
  return value.replace(/[\r\n]/g, ' ').replace(/[ \t]+/g, ' ').replace(/^ | $/g, '');
}
