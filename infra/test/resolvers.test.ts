/**
 * The AppSync resolvers (`infra/resolvers/*.js`): linted with `@aws-appsync/eslint-plugin`'s
 * recommended rules, then run against DynamoDB Local next to the DynamoDB store, which the
 * worker Lambda uses on the same tables. Each side must read what the other wrote.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import appsyncPlugin from '@aws-appsync/eslint-plugin';
import { ESLint, type Linter } from 'eslint';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeEvent, type Conversation } from '../../src/domain.js';
import { createHandler } from '../../src/lambda/handler.js';
import { silentLogger } from '../../src/log.js';
import { createSimulatedProvider } from '../../src/providers/simulated.js';
import { createDynamoDbStore } from '../../src/store/dynamodb.js';
import type { Store } from '../../src/store/types.js';
import { createLongrunTables, dynamoDbLocalUnavailable, startDynamoDbLocal, type DynamoDbLocal } from '../../test/helpers/dynamodb-local.js';
import { PROJECT_ROOT } from '../lib/longrun-stack.js';
import { RESOLVERS_DIR } from '../lib/resolvers.js';
import { createAppSyncRunner } from './appsync-runner.js';
import { clock } from './appsync-utils.js';

vi.mock('@aws-appsync/utils', () => import('./appsync-utils.js'));

describe('resolver lint (@aws-appsync/eslint-plugin, recommended rules)', () => {
  // The plugin's types declare a generic ESLint plugin; its flat configs are there at run time.
  const recommended = (appsyncPlugin.configs as Record<string, Linter.Config>).recommended!;
  const linter = () =>
    new ESLint({
      cwd: PROJECT_ROOT,
      overrideConfigFile: true,
      overrideConfig: [
        { ...recommended, files: ['infra/resolvers/*.js'] },
        {
          files: ['infra/resolvers/*.js'],
          languageOptions: { parserOptions: { project: join(RESOLVERS_DIR, 'tsconfig.json'), tsconfigRootDir: PROJECT_ROOT } },
        },
      ],
    });

  it('finds no error in any resolver', async () => {
    const results = await linter().lintFiles(['infra/resolvers/*.js']);
    expect(results.length).toBeGreaterThanOrEqual(12);
    const problems = results.flatMap((result) => result.messages.map((message) => `${result.filePath}:${message.line} ${message.ruleId}: ${message.message}`));
    expect(problems).toEqual([]);
  });

  it('does flag what APPSYNC_JS cannot run (so the check above can fail)', async () => {
    const file = join(RESOLVERS_DIR, 'publish.js');
    // Only syntactic rules are relied on here: the type-aware no-disallowed-methods missed the
    // added lines in one full run on a loaded machine (cause not found), and the syntactic rules
    // are enough to show that the check above can fail.
    const broken = `${readFileSync(file, 'utf8')}\nexport function extra(ctx) { let n = 0; while (n < 3) { n += 1; } try { n = ctx.x; } catch (e) { n = 0; } return /a+/.test(String(n)); }\n`;
    const [result] = await linter().lintText(broken, { filePath: file });
    expect(result!.messages.map((message) => message.ruleId)).toEqual(
      expect.arrayContaining(['@aws-appsync/no-while', '@aws-appsync/no-try', '@aws-appsync/no-regex']),
    );
  }, 30_000);
});

const unavailable = dynamoDbLocalUnavailable();

describe.skipIf(unavailable !== undefined)(`resolvers against DynamoDB Local${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  const now = 1_760_000_000_000;
  const staleTurnMs = 31 * 60_000;
  const env = { CONVERSATIONS_TABLE: '', EVENTS_TABLE: '', RETENTION_DAYS: '3', MAX_PROMPT_BYTES: '102400', STALE_TURN_MS: String(staleTurnMs) };
  let dynamo: DynamoDbLocal;
  let store: Store;
  let runner: ReturnType<typeof createAppSyncRunner>;
  /** The worker Lambda's handler on the same store; it runs RequestResponse invocations (deleteConversation), and tests run Event ones with it. */
  let handler: ReturnType<typeof createHandler>;
  /** Set: Lambda refuses Event invocations with this message. */
  let refuseEvent: string | undefined;

  beforeAll(async () => {
    dynamo = await startDynamoDbLocal();
    const tables = await createLongrunTables(dynamo.client);
    env.CONVERSATIONS_TABLE = tables.conversations;
    env.EVENTS_TABLE = tables.events;
    store = createDynamoDbStore({ client: dynamo.client, tables, ttlDays: 3, now: () => now });
    // RequestResponse invocations (deleteConversation) run the real Lambda handler on the same store.
    handler = createHandler({ store, provider: createSimulatedProvider(), publisher: { publish: async () => undefined }, logger: silentLogger });
    runner = createAppSyncRunner({ client: dynamo.client, tables, env, invoke: (payload) => handler(payload), refuseEvent: () => refuseEvent });
    clock.now = () => now;
  });
  afterAll(async () => {
    await store?.close();
    await dynamo?.stop();
  });

  const start = (input: Record<string, unknown>, identity: unknown = null) => runner.run('Mutation', 'startConversation', { input }, identity);
  const conversation = (conversationId: string) => runner.run('Query', 'conversation', { conversationId });
  const withoutOwner = ({ owner: _owner, ...rest }: Conversation) => rest;

  it('startConversation reserves turn 1 as the store would, and invokes the worker as an Event', async () => {
    const before = runner.invocations.length;
    const result = await start({ prompt: 'Hello 🦊', system: 'Be brief.', maxTokens: 100, modelId: 'model-x' });
    expect(result.errors).toEqual([]);
    const { conversationId, status } = result.data as { conversationId: string; status: string };
    expect(status).toBe('STARTED');
    expect(conversationId).toMatch(/^[0-9a-f-]{36}$/);
    expect(runner.invocations.slice(before)).toEqual([
      {
        invocationType: 'Event',
        payload: { conversationId, turn: 1, prompt: 'Hello 🦊', system: 'Be brief.', modelId: 'model-x', maxTokens: 100, temperature: null, topP: null },
      },
    ]);
    expect(await store.getConversation(conversationId)).toEqual({
      conversationId,
      owner: null,
      status: 'RUNNING',
      lastSeq: 0,
      createdAt: now,
      updatedAt: now,
      turns: [{ turn: 1, status: 'RUNNING', modelId: 'model-x', startedAt: now, endedAt: null }],
      messages: [{ turn: 1, role: 'user', content: 'Hello 🦊' }],
    });
    expect(await store.turnContext(conversationId, 1)).toEqual({ history: [], lastSeq: 0 });
  });

  it('refuses a second turn while one runs, with ConflictException, and invokes nothing', async () => {
    const { data } = await start({ prompt: 'one' });
    const { conversationId } = data as { conversationId: string };
    const before = runner.invocations.length;
    const second = await start({ prompt: 'two', conversationId });
    expect(second).toEqual({
      data: null,
      errors: [
        {
          errorType: 'ConflictException',
          message: `Conversation ${conversationId} already has a turn running; wait for its COMPLETE, ERROR or CANCELLED event, or cancel it, before starting another.`,
        },
      ],
    });
    expect(runner.invocations.length).toBe(before);
  });

  it('ends a turn whose worker was lost once it is stale, in the transaction that starts the next', async () => {
    const { data } = await start({ prompt: 'first question' });
    const { conversationId } = data as { conversationId: string };
    // The worker stored two chunks, then stopped without ending its turn (killed for memory, say).
    await store.appendEvents([1, 2].map((seq) => makeEvent({ conversationId, turn: 1, seq, type: 'CHUNK', chunk: `part ${seq} `, createdAt: now + seq })));
    const later = now + staleTurnMs + 1;
    try {
      // Not stale until STALE_TURN_MS has passed: a worker may still be running it.
      clock.now = () => now + staleTurnMs;
      expect((await start({ prompt: 'too early', conversationId })).errors.map((error) => error.errorType)).toEqual(['ConflictException']);

      clock.now = () => later;
      const before = runner.invocations.length;
      const next = await start({ prompt: 'second question [tokens=3][ttft=0]', conversationId });
      expect(next).toEqual({ data: { conversationId, status: 'STARTED' }, errors: [] });
      expect(runner.invocations.slice(before).map((invocation) => invocation.payload)).toEqual([
        expect.objectContaining({ conversationId, turn: 2, prompt: 'second question [tokens=3][ttft=0]' }),
      ]);
      const events = await store.listEvents(conversationId, 0);
      expect(events.map((event) => [event.seq, event.turn, event.type, event.errorCode])).toEqual([
        [1, 1, 'CHUNK', null],
        [2, 1, 'CHUNK', null],
        [3, 1, 'ERROR', 'Interrupted'],
      ]);
      expect(events[2]!.createdAt).toBe(later);
      expect(events[2]!.error).toMatch(/^The turn was interrupted: its worker stopped without ending it, .*more than 31 minutes/);
      expect(await store.getConversation(conversationId)).toMatchObject({
        status: 'RUNNING',
        lastSeq: 3,
        turns: [
          { turn: 1, status: 'ERROR', startedAt: now, endedAt: later },
          { turn: 2, status: 'RUNNING', startedAt: later, endedAt: null },
        ],
      });
      // The lost turn has no answer, so the model's history leaves it out; the next turn's events follow its ERROR.
      expect(await store.turnContext(conversationId, 2)).toEqual({ history: [{ turn: 1, role: 'user', content: 'first question' }], lastSeq: 3 });

      // The worker runs the new turn as it would any other.
      await handler(runner.invocations.at(-1)!.payload as never);
      const after = await store.getConversation(conversationId);
      expect(after).toMatchObject({ status: 'COMPLETE', turns: [{ status: 'ERROR' }, { status: 'COMPLETE' }] });
      const ended = await store.listEvents(conversationId, 3);
      expect(ended.at(-1)).toMatchObject({ turn: 2, type: 'COMPLETE', seq: after!.lastSeq });
      expect(ended.every((event) => event.turn === 2)).toBe(true);
    } finally {
      clock.now = () => now;
    }
  });

  it('lets one of two startConversations racing for a stale turn end it, once', async () => {
    const { data } = await start({ prompt: 'lost' });
    const { conversationId } = data as { conversationId: string };
    try {
      clock.now = () => now + staleTurnMs + 1;
      const results = await Promise.all([start({ prompt: 'a', conversationId }), start({ prompt: 'b', conversationId })]);
      expect(results.map((result) => result.errors[0]?.errorType ?? 'STARTED').sort()).toEqual(['ConflictException', 'STARTED']);
      expect((await store.listEvents(conversationId, 0)).map((event) => [event.seq, event.turn, event.type])).toEqual([[1, 1, 'ERROR']]);
      expect((await store.getConversation(conversationId))?.turns.map((turn) => turn.status)).toEqual(['ERROR', 'RUNNING']);
    } finally {
      clock.now = () => now;
    }
  });

  it('ends the turn it reserved when Lambda refuses the invocation, answers WorkerUnavailable, and takes the next turn at once', async () => {
    const conversationId = randomUUID();
    refuseEvent = 'Service unavailable.';
    try {
      expect(await start({ prompt: 'hello', conversationId })).toEqual({
        data: null,
        errors: [
          {
            errorType: 'WorkerUnavailable',
            message: 'The turn was reserved but the worker could not be started (Service unavailable.). The turn was ended; start it again.',
          },
        ],
      });
    } finally {
      refuseEvent = undefined;
    }
    expect(await store.getConversation(conversationId)).toMatchObject({ status: 'ERROR', lastSeq: 0, turns: [{ turn: 1, status: 'ERROR', endedAt: now }] });
    const again = await start({ prompt: 'hello again', conversationId });
    expect(again).toEqual({ data: { conversationId, status: 'STARTED' }, errors: [] });
    expect(runner.invocations.at(-1)!.payload).toMatchObject({ conversationId, turn: 2, prompt: 'hello again' });
    expect(await store.getConversation(conversationId)).toMatchObject({ status: 'RUNNING', turns: [{ status: 'ERROR' }, { status: 'RUNNING' }] });
  });

  it('lets exactly one of two racing startConversations win a new conversation', async () => {
    const conversationId = randomUUID();
    const results = await Promise.all([start({ prompt: 'a', conversationId }), start({ prompt: 'b', conversationId })]);
    expect(results.map((result) => result.errors[0]?.errorType ?? 'STARTED').sort()).toEqual(['ConflictException', 'STARTED']);
    expect((await store.getConversation(conversationId))?.messages).toHaveLength(1);
  });

  it('continues a conversation the worker ended: turn 2 with history, and reads back what the store wrote', async () => {
    const { data } = await start({ prompt: 'first question' });
    const { conversationId } = data as { conversationId: string };
    const answer = `${'星空 '.repeat(60_000)}!`;
    // Stored as the worker stores it: chunks under DynamoDB's item limit, the whole answer at the end.
    const chunks = [answer.slice(0, 90_000), answer.slice(90_000)];
    await store.appendEvents(chunks.map((chunk, index) => makeEvent({ conversationId, turn: 1, seq: index + 1, type: 'CHUNK', chunk, createdAt: now + 1 })));
    await store.endTurn({
      event: makeEvent({ conversationId, turn: 1, seq: 3, type: 'COMPLETE', stopReason: 'end_turn', usage: { inputTokens: 2, outputTokens: 3 }, createdAt: now + 2 }),
      assistantText: answer,
    });
    expect((await conversation(conversationId)).data).toEqual(withoutOwner((await store.getConversation(conversationId))!));

    const next = await start({ prompt: 'follow-up', conversationId });
    expect(next.data).toEqual({ conversationId, status: 'STARTED' });
    expect(runner.invocations.at(-1)!.payload).toMatchObject({ conversationId, turn: 2, prompt: 'follow-up' });
    expect(await store.turnContext(conversationId, 2)).toEqual({
      history: [
        { turn: 1, role: 'user', content: 'first question' },
        { turn: 1, role: 'assistant', content: answer },
      ],
      lastSeq: 3,
    });
    const read = await conversation(conversationId);
    expect(read.errors).toEqual([]);
    expect(read.data).toEqual(withoutOwner((await store.getConversation(conversationId))!));
    expect(read.data).toMatchObject({ status: 'RUNNING', lastSeq: 3, turns: [{ status: 'COMPLETE', endedAt: now + 2 }, { status: 'RUNNING' }] });
  });

  it('keeps a conversation to its owner, as the store does', async () => {
    const conversationId = randomUUID();
    await store.beginTurn({ conversationId, prompt: 'p', now, owner: 'alice' });
    await store.endTurn({ event: makeEvent({ conversationId, turn: 1, seq: 1, type: 'CANCELLED', createdAt: now }), assistantText: '' });
    expect((await start({ prompt: 'q', conversationId }, { sub: 'mallory' })).errors[0]?.errorType).toBe('UnauthorizedException');
    expect((await start({ prompt: 'q', conversationId }, { sub: 'alice' })).data).toEqual({ conversationId, status: 'STARTED' });
  });

  it('cancelConversation marks the running turn, which the worker polls, and answers as the gateway does', async () => {
    const { data } = await start({ prompt: 'long job' });
    const { conversationId } = data as { conversationId: string };
    expect(await store.isCancelRequested(conversationId, 1)).toBe(false);
    expect((await runner.run('Mutation', 'cancelConversation', { conversationId })).data).toEqual({ conversationId, status: 'CANCELLING' });
    expect(await store.isCancelRequested(conversationId, 1)).toBe(true);
    await store.endTurn({ event: makeEvent({ conversationId, turn: 1, seq: 1, type: 'CANCELLED', createdAt: now }), assistantText: '' });
    expect((await runner.run('Mutation', 'cancelConversation', { conversationId })).data).toEqual({ conversationId, status: 'CANCELLED' });
    // The next turn starts with no cancellation pending.
    await start({ prompt: 'again', conversationId });
    expect(await store.isCancelRequested(conversationId, 2)).toBe(false);
    const unknown = await runner.run('Mutation', 'cancelConversation', { conversationId: randomUUID() });
    expect(unknown.errors[0]?.errorType).toBe('NotFoundException');
  });

  it('conversationEvents returns what the store lists, paging past DynamoDB pages, and tells unknown from empty', async () => {
    const { data } = await start({ prompt: 'p' });
    const { conversationId } = data as { conversationId: string };
    const big = 'y'.repeat(150_000);
    for (let seq = 1; seq <= 9; seq += 1) {
      await store.appendEvents([makeEvent({ conversationId, turn: 1, seq, type: 'CHUNK', chunk: `${seq}${big}`, createdAt: now + seq })]);
    }
    await store.endTurn({
      event: makeEvent({ conversationId, turn: 1, seq: 10, type: 'ERROR', error: 'boom', errorCode: 'ModelFailure', createdAt: now + 10 }),
      assistantText: '',
    });
    const all = await runner.run('Query', 'conversationEvents', { conversationId });
    expect(all.errors).toEqual([]);
    // 1.35 MB of events: more than one 1 MB Query page.
    expect(all.data).toEqual(await store.listEvents(conversationId, 0));
    expect((all.data as unknown[]).length).toBe(10);
    expect((await runner.run('Query', 'conversationEvents', { conversationId, afterSeq: 7, limit: 2 })).data).toEqual(await store.listEvents(conversationId, 7, 2));
    expect((await runner.run('Query', 'conversationEvents', { conversationId, afterSeq: 10 })).data).toEqual([]);
    expect((await runner.run('Query', 'conversationEvents', { conversationId: randomUUID() })).errors[0]?.errorType).toBe('NotFoundException');
    expect((await runner.run('Query', 'conversationEvents', { conversationId, limit: 5000 })).errors[0]).toEqual({
      errorType: 'BadRequestException',
      message: 'limit must be from 1 to 1000; got 5000. Page with afterSeq for more.',
    });
  });

  it('deleteConversation removes everything through the worker, refusing a running turn and an unknown id', async () => {
    const { data } = await start({ prompt: 'to be deleted' });
    const { conversationId } = data as { conversationId: string };
    const remove = () => runner.run('Mutation', 'deleteConversation', { conversationId });
    expect((await remove()).errors[0]).toEqual({
      errorType: 'ConflictException',
      message: `Conversation ${conversationId} has a turn running; cancel it before deleting the conversation.`,
    });
    await store.appendEvents([makeEvent({ conversationId, turn: 1, seq: 1, type: 'CHUNK', chunk: 'a', createdAt: now })]);
    await store.endTurn({ event: makeEvent({ conversationId, turn: 1, seq: 2, type: 'COMPLETE', createdAt: now }), assistantText: 'a' });
    expect(await remove()).toEqual({ data: { conversationId, status: 'DELETED' }, errors: [] });
    expect(runner.invocations.at(-1)).toEqual({ invocationType: 'RequestResponse', payload: { operation: 'deleteConversation', conversationId } });
    expect(await store.getConversation(conversationId)).toBeNull();
    expect(await store.listEvents(conversationId, 0)).toEqual([]);
    expect((await conversation(conversationId)).data).toBeNull();
    expect((await remove()).errors[0]?.errorType).toBe('NotFoundException');
  });

  it('conversation is null for an unknown id', async () => {
    expect(await conversation(randomUUID())).toEqual({ data: null, errors: [] });
  });

  it('checks the input as the gateway does, counting UTF-8 bytes', async () => {
    const errorOf = async (input: Record<string, unknown>) => (await start(input)).errors[0];
    expect(await errorOf({ prompt: '  ' })).toEqual({
      errorType: 'BadRequestException',
      message: 'input.prompt is empty; send the text of the user message (1 byte or more).',
    });
    // 25,601 foxes of 4 bytes: 102,404 bytes, just over the 102,400-byte limit.
    expect((await errorOf({ prompt: '🦊'.repeat(25_601) }))?.message).toBe('input.prompt is 102404 bytes; the limit is 102400 bytes (LONGRUN_MAX_PROMPT_BYTES).');
    expect((await start({ prompt: '🦊'.repeat(25_600) })).errors).toEqual([]);
    expect((await errorOf({ prompt: 'p', conversationId: 'has space' }))?.errorType).toBe('BadRequestException');
    expect((await errorOf({ prompt: 'p', temperature: 3 }))?.message).toBe('input.temperature must be from 0 to 2; got 3.');
    expect((await errorOf({ prompt: 'p', topP: 0 }))?.message).toBe('input.topP must be more than 0 and at most 1; got 0.');
    expect((await errorOf({ prompt: 'p', maxTokens: 0 }))?.message).toBe('input.maxTokens must be from 1 to 1000000; got 0.');
  });

  it('publish mutations echo their arguments in the shapes subscribers receive', async () => {
    const event = { conversationId: 'c', turn: 1, seq: 3, type: 'COMPLETE', stopReason: 'end_turn', usage: { inputTokens: 1, outputTokens: 2 }, createdAt: 5 };
    expect((await runner.run('Mutation', 'publishEvent', { event })).data).toEqual({
      ...event,
      chunk: null,
      error: null,
      errorCode: null,
      latencyMs: null,
    });
    expect((await runner.run('Mutation', 'sendChunk', { conversationId: 'c', chunk: 'hi' })).data).toEqual({ conversationId: 'c', chunk: 'hi' });
    expect((await runner.run('Mutation', 'completeStream', { conversationId: 'c' })).data).toEqual({ conversationId: 'c', status: 'COMPLETE' });
    expect((await runner.run('Mutation', 'sendError', { conversationId: 'c', error: 'x' })).data).toEqual({ conversationId: 'c', error: 'x' });
  });
});
