/**
 * The AppSync publisher against a local HTTP server that checks every request's SigV4 signature
 * with `verifySigV4Request`, and the verifier itself against signatures made by
 * `@smithy/signature-v4` (the signer the AWS SDK uses).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { parse } from 'graphql';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeEvent, type ConversationEvent } from '../../src/domain.js';
import { createSigV4Verifier, verifySigV4Request, type SigV4Result } from '../../src/gateway/sigv4.js';
import { createSimulatedProvider } from '../../src/providers/simulated.js';
import { buildPublishDocument, createAppSyncPublisher, PublishError } from '../../src/publisher/appsync.js';
import { createSqliteStore } from '../../src/store/sqlite.js';
import { runInvocation } from '../../src/worker/run-invocation.js';

const credentials = { accessKeyId: 'AKIDWORKER', secretAccessKey: 'worker-secret' };

interface ReceivedRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  verification: SigV4Result;
  query: string;
  variables: Record<string, unknown>;
}

type Responder = (request: ReceivedRequest, index: number) => { status: number; body: unknown; headers?: Record<string, string> };

/** Answers like AppSync: each alias gets its variables back (publishEvent) or `{conversationId, chunk}`. */
const appSyncLike: Responder = (request) => {
  const data: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(request.variables)) {
    if (/^e\d+$/.test(name)) data[name] = value;
    const chunk = /^(c\d+)Chunk$/.exec(name);
    if (chunk) data[chunk[1]!] = { conversationId: request.variables[`${chunk[1]}ConversationId`], chunk: value };
  }
  return { status: 200, body: { data } };
};

let server: Server;
let url: string;
let received: ReceivedRequest[] = [];
let responder: Responder = appSyncLike;
const verify = createSigV4Verifier([credentials]);

beforeAll(async () => {
  server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const parsed = JSON.parse(body) as { query: string; variables: Record<string, unknown> };
      const entry: ReceivedRequest = {
        method: request.method ?? '',
        path: request.url ?? '',
        headers: request.headers,
        body,
        verification: verify({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, body }),
        query: parsed.query,
        variables: parsed.variables,
      };
      received.push(entry);
      const answer = entry.verification.ok
        ? responder(entry, received.length - 1)
        : { status: 403, body: { errors: [{ errorType: 'UnauthorizedException', message: entry.verification.reason }] } };
      response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      response.end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

afterEach(() => {
  received = [];
  responder = appSyncLike;
});

const chunkEvent = (seq: number, chunk: string, conversationId = 'conv-1'): ConversationEvent =>
  makeEvent({ conversationId, turn: 1, seq, type: 'CHUNK', chunk, createdAt: 1_700_000_000_000 + seq });

const publisher = (overrides: Parameters<typeof createAppSyncPublisher>[0] extends infer T ? Partial<T> : never = {}) =>
  createAppSyncPublisher({ url, region: 'us-east-1', credentials, retryBaseMs: 1, ...overrides });

describe('buildPublishDocument', () => {
  it('aliases publishEvent with every event field and sendChunk for CHUNKs, as valid GraphQL', () => {
    const complete = makeEvent({
      conversationId: 'c',
      turn: 1,
      seq: 2,
      type: 'COMPLETE',
      stopReason: 'end_turn',
      usage: { inputTokens: 3, outputTokens: 4 },
      latencyMs: 9,
      createdAt: 5,
    });
    const document = buildPublishDocument([chunkEvent(1, 'hi "there"\n'), complete]);
    expect(() => parse(document.query)).not.toThrow();
    expect(document.aliases).toEqual(['e0', 'c0', 'e1']);
    expect(document.query).toContain(
      'e0: publishEvent(event: $e0) { conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt }',
    );
    expect(document.query).toContain('c0: sendChunk(conversationId: $c0ConversationId, chunk: $c0Chunk) { conversationId chunk }');
    expect(document.query).not.toContain('c1:');
    expect(document.variables).toEqual({
      e0: { ...chunkEvent(1, 'hi "there"\n') },
      c0ConversationId: 'conv-1',
      c0Chunk: 'hi "there"\n',
      e1: complete,
    });
  });
});

describe('AppSync publisher', () => {
  it('sends one signed request per publish call, carrying every event in order', async () => {
    const events = [chunkEvent(1, 'one 🦊 '), chunkEvent(2, 'two 星空'), chunkEvent(3, 'three')];
    await publisher().publish(events);
    expect(received).toHaveLength(1);
    const [request] = received;
    expect(request!.verification).toEqual({ ok: true, accessKeyId: 'AKIDWORKER' });
    expect(request!.path).toBe('/graphql');
    expect(request!.headers['content-type']).toBe('application/json');
    expect(request!.variables.e2).toEqual(events[2]);
    expect([request!.variables.c0Chunk, request!.variables.c1Chunk, request!.variables.c2Chunk].join('')).toBe('one 🦊 two 星空three');
  });

  it('needs few requests for a 1000-token answer: one per stored event', async () => {
    const store = createSqliteStore({ path: ':memory:' });
    const prompt = 'tell me [tokens=1000]';
    const turn = await store.beginTurn({ conversationId: 'long', prompt, now: 1 });
    const outcome = await runInvocation(
      { conversationId: 'long', turn, prompt },
      {
        provider: createSimulatedProvider({ ttftMs: 0, tokensPerSecond: 2000 }),
        store,
        publisher: publisher(),
        options: { flushMs: 50, flushBytes: 4096 },
      },
    );
    const events = await store.listEvents('long', 0);
    const expected = events.map((event) => event.chunk ?? '').join('');
    expect(outcome.status).toBe('COMPLETE');
    expect(outcome.text).toBe(expected);
    expect(events.filter((event) => event.type === 'CHUNK').length).toBeGreaterThan(1);
    expect(outcome.event.usage?.outputTokens).toBe(1000);
    expect(received).toHaveLength(events.length);
    expect(received.length).toBeLessThan(100);
    const chunks = received.flatMap((request) => Object.keys(request.variables).filter((name) => /^c\d+Chunk$/.test(name)).map((name) => request.variables[name]));
    expect(chunks.join('')).toBe(expected);
    expect(received.at(-1)!.variables.e0).toMatchObject({ type: 'COMPLETE', seq: events.length });
    await store.close();
  });

  it('retries a 500 and a 429, then succeeds', async () => {
    responder = (request, index) =>
      index === 0 ? { status: 500, body: { message: 'boom' } } : index === 1 ? { status: 429, body: { message: 'slow down' } } : appSyncLike(request, index);
    await publisher().publish([chunkEvent(1, 'a')]);
    expect(received).toHaveLength(3);
    expect(received.every((request) => request.variables.c0Chunk === 'a')).toBe(true);
  });

  it('retries from the first mutation AppSync throttled, keeping the order', async () => {
    responder = (request, index) =>
      index === 0
        ? {
            status: 200,
            body: {
              data: { e0: request.variables.e0, c0: { conversationId: 'conv-1', chunk: 'a' }, e1: null, c1: null },
              errors: [{ errorType: 'ThrottlingException', message: 'Rate exceeded', path: ['e1'] }],
            },
          }
        : appSyncLike(request, index);
    await publisher().publish([chunkEvent(1, 'a'), chunkEvent(2, 'b')]);
    expect(received).toHaveLength(2);
    // The retry keeps the aliases of the first request.
    expect(received[1]!.variables).toEqual({ e1: chunkEvent(2, 'b'), c1ConversationId: 'conv-1', c1Chunk: 'b' });
  });

  it('gives up after maxRetries with the last reason', async () => {
    responder = () => ({ status: 503, body: {} });
    await expect(publisher({ maxRetries: 2 }).publish([chunkEvent(1, 'a')])).rejects.toThrow(/failed after 3 attempts; last: HTTP 503/);
    expect(received).toHaveLength(3);
  });

  it('does not retry a 403, and says what to check', async () => {
    const failing = publisher({ credentials: { accessKeyId: 'AKIDWORKER', secretAccessKey: 'wrong' } });
    const error = await failing.publish([chunkEvent(1, 'a')]).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PublishError);
    expect((error as PublishError).status).toBe(403);
    expect((error as Error).message).toMatch(/HTTP 403.*signature does not match.*appsync:GraphQL/);
    expect(received).toHaveLength(1);
  });

  it('does not retry a validation error', async () => {
    responder = () => ({ status: 200, body: { data: null, errors: [{ errorType: 'ValidationError', message: 'Variable e0 is invalid' }] } });
    await expect(publisher().publish([chunkEvent(1, 'a')])).rejects.toThrow('AppSync rejected events: ValidationError: Variable e0 is invalid');
    expect(received).toHaveLength(1);
  });

  it('splits a call whose body would pass maxBatchBytes, in order, each request under the bound', async () => {
    const events = Array.from({ length: 10 }, (_, index) => chunkEvent(index + 1, `${index}`.repeat(3000)));
    await publisher({ maxBatchBytes: 20_000 }).publish(events);
    expect(received.length).toBeGreaterThan(1);
    for (const request of received) expect(Buffer.byteLength(request.body)).toBeLessThanOrEqual(20_000);
    const seqs = received.flatMap((request) =>
      Object.keys(request.variables)
        .filter((name) => /^e\d+$/.test(name))
        .map((name) => (request.variables[name] as ConversationEvent).seq),
    );
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('delivers overlapping calls in call order', async () => {
    const target = publisher();
    await Promise.all([target.publish([chunkEvent(1, 'a')]), target.publish([chunkEvent(2, 'b')]), target.publish([chunkEvent(3, 'c')])]);
    expect(received.map((request) => request.variables.c0Chunk)).toEqual(['a', 'b', 'c']);
  });
});

describe('verifySigV4Request', () => {
  const signer = (secretAccessKey = credentials.secretAccessKey, sessionToken?: string, applyChecksum = true) =>
    new SignatureV4({
      credentials: { ...credentials, secretAccessKey, sessionToken },
      region: 'eu-west-1',
      service: 'appsync',
      sha256: Sha256,
      applyChecksum,
    });
  const signedAt = new Date('2025-03-01T12:00:00Z');
  const sign = async (
    body: string,
    options: { secret?: string; path?: string; query?: Record<string, string>; sessionToken?: string; applyChecksum?: boolean } = {},
  ): Promise<{ method: string; path: string; headers: Record<string, string | undefined>; body: string }> => {
    const request = await signer(options.secret, options.sessionToken, options.applyChecksum).sign(
      {
        method: 'POST',
        protocol: 'https:',
        hostname: 'example.appsync-api.eu-west-1.amazonaws.com',
        path: options.path ?? '/graphql',
        query: options.query ?? {},
        headers: { host: 'example.appsync-api.eu-west-1.amazonaws.com', 'content-type': 'application/json', 'x-extra': '  spaced   value ' },
        body,
      },
      { signingDate: signedAt },
    );
    const query = new URLSearchParams(options.query ?? {}).toString().replace(/\+/g, '%20');
    return { method: 'POST', path: `${options.path ?? '/graphql'}${query ? `?${query}` : ''}`, headers: { ...request.headers, 'user-agent': 'test' }, body };
  };
  const check = (request: Awaited<ReturnType<typeof sign>>, now = signedAt.getTime()) =>
    verifySigV4Request({ ...request, credentials: [{ accessKeyId: 'OTHER', secretAccessKey: 'x' }, credentials], now });

  it('accepts what @smithy/signature-v4 signed, with a session token, a query and an odd path', async () => {
    expect(check(await sign('{"query":"mutation { x }"}'))).toEqual({ ok: true, accessKeyId: 'AKIDWORKER' });
    expect(check(await sign('{}', { sessionToken: 'token-1' }))).toEqual({ ok: true, accessKeyId: 'AKIDWORKER' });
    expect(check(await sign('{}', { path: '/a b/ü/graphql', query: { b: 'x y', a: 'é&=' } }))).toMatchObject({ ok: true });
    // A four-minute-old signature is still within the five minutes AWS allows.
    expect(check(await sign('{}'), signedAt.getTime() + 4 * 60_000)).toMatchObject({ ok: true });
  });

  it('refuses a wrong secret, a changed body, a changed signed header, a stale date and an unknown key', async () => {
    expect(check(await sign('{}', { secret: 'not-the-secret' }))).toMatchObject({ ok: false, reason: expect.stringMatching(/does not match/) });
    const signed = await sign('{"a":1}');
    expect(check({ ...signed, body: '{"a":2}' })).toMatchObject({ ok: false, reason: expect.stringMatching(/changed after signing/) });
    // Without X-Amz-Content-SHA256 the body's hash is part of the signature itself.
    const withoutHashHeader = await sign('{"a":1}', { applyChecksum: false });
    expect(withoutHashHeader.headers['x-amz-content-sha256']).toBeUndefined();
    expect(check(withoutHashHeader)).toMatchObject({ ok: true });
    expect(check({ ...withoutHashHeader, body: '{"a":2}' })).toMatchObject({ ok: false, reason: expect.stringMatching(/does not match/) });
    expect(check({ ...signed, headers: { ...signed.headers, 'x-extra': 'other' } })).toMatchObject({ ok: false });
    expect(check({ ...signed, path: '/graphql2' })).toMatchObject({ ok: false });
    expect(check(signed, signedAt.getTime() + 6 * 60_000)).toMatchObject({ ok: false, reason: expect.stringMatching(/stale/) });
    expect(check(signed, signedAt.getTime() - 6 * 60_000)).toMatchObject({ ok: false, reason: expect.stringMatching(/stale/) });
    expect(
      verifySigV4Request({ ...signed, credentials: [{ accessKeyId: 'SOMEONE', secretAccessKey: 'x' }], now: signedAt.getTime() }),
    ).toMatchObject({ ok: false, reason: expect.stringMatching(/AKIDWORKER is not accepted/) });
  });

  it('refuses malformed or missing authorization with a reason', async () => {
    const signed = await sign('{}');
    expect(check({ ...signed, headers: { ...signed.headers, authorization: undefined } })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/no Authorization header/),
    });
    expect(check({ ...signed, headers: { ...signed.headers, authorization: 'Bearer abc' } })).toMatchObject({ ok: false });
    const wrongService = signed.headers.authorization!.replace('/appsync/', '/execute-api/');
    expect(check({ ...signed, headers: { ...signed.headers, authorization: wrongService } })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/service "execute-api"/),
    });
    expect(check({ ...signed, headers: { ...signed.headers, 'x-amz-date': 'yesterday' } })).toMatchObject({ ok: false });
  });
});
