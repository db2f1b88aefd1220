/**
 * Bad input gets a clear error and loses nothing: each case names what was wrong and what is
 * accepted, the server stays up, and a conversation streaming meanwhile is untouched.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simulatedAnswer } from '../../src/providers/simulated.js';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { EVENTS_QUERY, ON_EVENT_SUBSCRIPTION, postGraphQL, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';

let test: TestGateway;
let bystander: { client: RawAppSyncClient; conversationId: string; prompt: string };

beforeAll(async () => {
  test = await startTestGateway({ LONGRUN_SIM_TOKENS_PER_SEC: '400' });
  // A conversation that streams for the whole file, to prove bad input elsewhere does not touch it.
  const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
  const conversationId = randomUUID();
  const prompt = 'a bystander story [tokens=1200]';
  await client.subscribe('bystander', ON_EVENT_SUBSCRIPTION, { conversationId });
  await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
  bystander = { client, conversationId, prompt };
});

afterAll(async () => {
  bystander.client.close();
  await test.stop();
});

describe('HTTP', () => {
  it('refuses a missing or wrong API key with 401 UnauthorizedException', async () => {
    for (const headers of [{}, { 'x-api-key': 'da2-wrong' }] as Array<Record<string, string>>) {
      const result = await postGraphQL(test.endpoints.graphqlUrl, { query: '{ __typename }' }, headers);
      expect(result).toEqual({
        status: 401,
        body: { errors: [expect.objectContaining({ errorType: 'UnauthorizedException', message: 'You are not authorized to make this call.' })] },
      });
    }
  });

  it('answers malformed JSON with 400 and says what to send', async () => {
    const result = await postGraphQL(test.endpoints.graphqlUrl, '{"query": "{ __typename }"', { 'x-api-key': test.apiKey });
    expect(result.status).toBe(400);
    expect(result.body.errors[0].errorType).toBe('MalformedHttpRequestException');
    expect(result.body.errors[0].message).toMatch(/not valid JSON.*send \{"query"/);
  });

  it('answers a body without a query, and an array, with 400', async () => {
    for (const body of ['{}', '[{"query":"{ __typename }"}]', '{"query": "{ __typename }", "variables": [1]}']) {
      const result = await postGraphQL(test.endpoints.graphqlUrl, body, { 'x-api-key': test.apiKey });
      expect(result.status, body).toBe(400);
      expect(result.body.errors[0].errorType).toBe('MalformedHttpRequestException');
    }
  });

  it('answers invalid GraphQL with its location', async () => {
    const syntax = await test.graphql('mutation { startConversation(input: { prompt: "x" }) { ');
    expect(syntax.status).toBe(400);
    expect(syntax.body.errors[0]).toMatchObject({ errorType: 'ParseError', locations: [expect.objectContaining({ line: 1 })] });
    expect(syntax.body.errors[0].message).toContain('Syntax Error');

    const unknownField = await test.graphql('query { conversations { id } }');
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.errors[0]).toMatchObject({ errorType: 'ValidationError', message: 'Cannot query field "conversations" on type "Query". Did you mean "conversation" or "conversationEvents"?' });

    const missingArgument = await test.graphql('mutation { startConversation(input: { conversationId: "x" }) { status } }');
    expect(missingArgument.body.errors[0].message).toContain('Field "StartConversationInput.prompt" of required type "String!" was not provided.');
  });

  it('answers a body over LONGRUN_MAX_BODY_BYTES with 413', async () => {
    const result = await postGraphQL(test.endpoints.graphqlUrl, { query: '{ __typename }', padding: 'x'.repeat(1024 * 1024 + 10) }, { 'x-api-key': test.apiKey });
    expect(result.status).toBe(413);
    expect(result.body.errors[0]).toMatchObject({ errorType: 'PayloadTooLargeException' });
    expect(result.body.errors[0].message).toContain('LONGRUN_MAX_BODY_BYTES');
  });

  it('refuses subscriptions over HTTP and points at the realtime endpoint', async () => {
    const result = await test.graphql(ON_EVENT_SUBSCRIPTION, { conversationId: 'x' });
    expect(result.status).toBe(400);
    expect(result.body.errors[0].message).toContain('/graphql/realtime');
  });

  it('answers other paths and methods with what the API is', async () => {
    const notFound = await fetch(test.endpoints.graphqlUrl.replace('/graphql', '/nope'));
    expect(notFound.status).toBe(404);
    expect((await notFound.json()).errors[0].message).toContain('POST /graphql');
    const get = await fetch(test.endpoints.graphqlUrl);
    expect(get.status).toBe(405);
  });
});

describe('conversations', () => {
  it('says when a conversation is unknown', async () => {
    const id = randomUUID();
    const events = await test.graphql(EVENTS_QUERY, { conversationId: id });
    expect(events.body.errors[0]).toMatchObject({ errorType: 'NotFoundException', message: `Conversation ${id} was not found.` });
    const cancel = await test.graphql('mutation($id: ID!) { cancelConversation(conversationId: $id) { status } }', { id });
    expect(cancel.body.errors[0]).toMatchObject({ errorType: 'NotFoundException' });
    const conversation = await test.graphql('query($id: ID!) { conversation(conversationId: $id) { status } }', { id });
    expect(conversation.body).toEqual({ data: { conversation: null } });
  });

  it('refuses an empty prompt, an oversized prompt and bad parameters, naming the limit', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ prompt: '' }, 'input.prompt is empty'],
      [{ prompt: '   \n' }, 'input.prompt is empty'],
      [{ prompt: 'x'.repeat(100 * 1024 + 1) }, 'input.prompt is 102401 bytes; the limit is 102400 bytes (LONGRUN_MAX_PROMPT_BYTES)'],
      [{ prompt: '星'.repeat(34_134) }, 'the limit is 102400 bytes'],
      [{ prompt: 'hi', conversationId: 'has spaces' }, 'use 1 to 128 letters, digits'],
      [{ prompt: 'hi', temperature: 3 }, 'input.temperature must be from 0 to 2; got 3'],
      [{ prompt: 'hi', maxTokens: 0 }, 'input.maxTokens must be from 1'],
      [{ prompt: 'hi', topP: 0 }, 'input.topP must be more than 0'],
    ];
    for (const [input, message] of cases) {
      const result = await test.graphql(START_MUTATION, { input });
      expect(result.body.errors?.[0]?.errorType, message).toBe('BadRequestException');
      expect(result.body.errors[0].message).toContain(message);
    }
  });

  it('refuses a second start while a turn runs with ConflictException', async () => {
    const conversationId = randomUUID();
    await test.graphql(START_MUTATION, { input: { prompt: 'slow [rate=20] [tokens=100]', conversationId } });
    const second = await test.graphql(START_MUTATION, { input: { prompt: 'again', conversationId } });
    expect(second.body.errors[0].errorType).toBe('ConflictException');
    expect(second.body.errors[0].message).toContain('already has a turn running');
    await test.graphql('mutation($id: ID!) { cancelConversation(conversationId: $id) { status } }', { id: conversationId });
  });
});

describe('realtime WebSocket', () => {
  it('refuses a connection without a key or with a wrong one, with connection_error', async () => {
    for (const key of [undefined, 'da2-wrong']) {
      const client = await RawAppSyncClient.connect(test.endpoints.realtimeUrl, key);
      const error = await client.waitFor((message) => message.type === 'connection_error');
      expect(error.payload.errors[0]).toMatchObject({ errorType: 'UnauthorizedException', errorCode: 401 });
      expect(await client.closed()).toBe(4401);
    }
  });

  it('refuses a start whose own key is wrong', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const answer = await client.subscribe('s1', ON_EVENT_SUBSCRIPTION, { conversationId: 'c' }, 'da2-wrong');
    expect(answer).toMatchObject({ type: 'error', id: 's1', payload: { errors: [{ errorType: 'UnauthorizedException' }] } });
    client.close();
  });

  it('answers garbage frames and unknown messages with errors and keeps the connection', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const expectations: Array<[unknown, string, RegExp]> = [
      ['not json at all', 'MalformedMessageError', /not valid JSON/],
      ['[1,2,3]', 'MalformedMessageError', /JSON object/],
      [{ type: 'subscribe', id: 'x' }, 'UnsupportedOperation', /Unknown message type "subscribe"; accepted: connection_init, start, stop/],
      [{ type: 'start', payload: {} }, 'MalformedMessageError', /non-empty string "id"/],
      [{ type: 'start', id: 'no-data', payload: {} }, 'MalformedMessageError', /payload.data/],
      [{ type: 'start', id: 'bad-data', payload: { data: '{nope' } }, 'MalformedMessageError', /payload.data" is not valid JSON/],
      [{ type: 'start', id: 'bad-query', payload: { data: JSON.stringify({ query: 'subscription {' }) } }, 'ParseError', /Syntax Error/],
      [{ type: 'start', id: 'query-op', payload: { data: JSON.stringify({ query: '{ __typename }' }) } }, 'UnsupportedOperation', /query not supported through the realtime channel/],
      [{ type: 'start', id: 'no-var', payload: { data: JSON.stringify({ query: ON_EVENT_SUBSCRIPTION, variables: {} }) } }, 'ValidationError', /conversationId/],
    ];
    for (const [frame, errorType, message] of expectations) {
      const before = client.messages.length;
      client.send(frame);
      const answer = await client.until(() => client.messages.slice(before).find((m) => m.type === 'error'));
      expect(answer.payload.errors[0].errorType, JSON.stringify(frame)).toBe(errorType);
      expect(answer.payload.errors[0].message).toMatch(message);
    }
    client.socket.send(Buffer.from([0xff, 0x00, 0x01]), { binary: true });
    await client.until(() => client.messages.find((m) => m.type === 'error' && /Binary frames/.test(m.payload.errors[0].message)));
    expect((await client.subscribe('still-works', ON_EVENT_SUBSCRIPTION, { conversationId: 'c' })).type).toBe('start_ack');
    expect(client.closeCode).toBeUndefined();
    client.close();
  });

  it('refuses a duplicate subscription id and the 101st subscription, as AppSync does', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    expect((await client.subscribe('dup', ON_EVENT_SUBSCRIPTION, { conversationId: 'c' })).type).toBe('start_ack');
    const duplicate = await client.until(() => {
      client.send({ type: 'start', id: 'dup', payload: { data: JSON.stringify({ query: ON_EVENT_SUBSCRIPTION, variables: { conversationId: 'c' } }) } });
      return true;
    }).then(() => client.waitFor((m) => m.type === 'error' && m.id === 'dup'));
    expect(duplicate.payload.errors[0].errorType).toBe('DuplicatedOperationError');

    for (let index = 1; index < 100; index += 1) {
      expect((await client.subscribe(`s${index}`, ON_EVENT_SUBSCRIPTION, { conversationId: `c${index}` })).type).toBe('start_ack');
    }
    const refused = await client.subscribe('s100', ON_EVENT_SUBSCRIPTION, { conversationId: 'c100' });
    expect(refused.type).toBe('error');
    expect(refused.payload.errors[0]).toMatchObject({ errorType: 'MaxSubscriptionsReachedError' });
    expect(refused.payload.errors[0].message).toContain('100 subscriptions');
    client.send({ type: 'stop', id: 's1' });
    await client.waitFor((m) => m.type === 'complete' && m.id === 's1');
    expect((await client.subscribe('s101', ON_EVENT_SUBSCRIPTION, { conversationId: 'c101' })).type).toBe('start_ack');
    client.close();
  });

  it('refuses a message over 240 KB with MessageTooLargeError', async () => {
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    client.send({ type: 'start', id: 'big', payload: { data: JSON.stringify({ query: ON_EVENT_SUBSCRIPTION, variables: { conversationId: 'x'.repeat(240 * 1024) } }) } });
    const answer = await client.waitFor((m) => m.type === 'error');
    expect(answer.payload.errors[0].errorType).toBe('MessageTooLargeError');
    expect(answer.payload.errors[0].message).toContain('the limit is 245760 bytes');
    expect((await client.subscribe('after', ON_EVENT_SUBSCRIPTION, { conversationId: 'c' })).type).toBe('start_ack');
    client.close();
  });

  it('answers upgrades on unknown paths with 404', async () => {
    await expect(RawAppSyncClient.connect(test.endpoints.realtimeUrl.replace('/graphql/realtime', '/elsewhere'), test.apiKey)).rejects.toThrow(/404/);
  });
});

it('left the bystander conversation complete and exact, and the server serving', async () => {
  const events = await eventsUntilEnd(bystander.client, 'bystander', 30_000);
  expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
  expect(events[events.length - 1].type).toBe('COMPLETE');
  const text = events.filter((event) => event.type === 'CHUNK').map((event) => event.chunk).join('');
  expect(text).toBe(simulatedAnswer({ messages: [{ role: 'user', content: bystander.prompt }] }).tokens.join(''));
  const health = await fetch(test.endpoints.graphqlUrl.replace('/graphql', '/healthz'));
  expect(health.status).toBe(200);
});
