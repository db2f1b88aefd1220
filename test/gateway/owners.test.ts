/**
 * OpenID Connect mode: every conversation belongs to the token's `sub`; anyone else gets
 * Unauthorized, on HTTP and on the realtime socket, without learning whether it exists.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { EVENTS_QUERY, ON_EVENT_SUBSCRIPTION, postGraphQL, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/oidc.js';

let issuer: TestIssuer;
let test: TestGateway;
let alice: string;
let bob: string;

beforeAll(async () => {
  issuer = await startTestIssuer();
  test = await startTestGateway({
    LONGRUN_AUTH: 'oidc',
    LONGRUN_OIDC_ISSUER: issuer.issuer,
    LONGRUN_OIDC_AUDIENCE: issuer.audience,
    LONGRUN_OIDC_JWKS_URL: issuer.jwksUrl,
  });
  alice = await issuer.token('alice');
  bob = await issuer.token('bob');
});
afterAll(async () => {
  await test.stop();
  await issuer.close();
});

const as = (token: string) => ({ authorization: token });
const CANCEL = 'mutation($id: ID!) { cancelConversation(conversationId: $id) { status } }';
const DELETE = 'mutation($id: ID!) { deleteConversation(conversationId: $id) { conversationId status } }';
const CONVERSATION = 'query($id: ID!) { conversation(conversationId: $id) { status messages { role content } } }';

/** Opens a realtime connection with an OIDC token in the header, as AppSync clients send it. */
async function realtime(token: string): Promise<RawAppSyncClient> {
  const header = Buffer.from(JSON.stringify({ host: '127.0.0.1', Authorization: token })).toString('base64');
  const client = await RawAppSyncClient.connect(`${test.endpoints.realtimeUrl}?header=${header}&payload=e30=`, undefined);
  client.send({ type: 'connection_init' });
  await client.waitFor((message) => message.type === 'connection_ack' || message.type === 'connection_error');
  return client;
}

describe('OIDC owners', () => {
  it('lets the owner start, stream, replay and continue; refuses everyone else the same way for a real or an unknown conversation', async () => {
    const conversationId = randomUUID();
    const owner = await realtime(alice);
    expect((await owner.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId })).type).toBe('start_ack');
    const started = await test.graphql(START_MUTATION, { input: { prompt: 'mine [tokens=30]', conversationId } }, as(alice));
    expect(started.body.data.startConversation.status).toBe('STARTED');
    const events = await eventsUntilEnd(owner, 's');
    expect(events[events.length - 1].type).toBe('COMPLETE');
    const replay = await test.graphql(EVENTS_QUERY, { conversationId }, as(alice));
    expect(replay.body.data.conversationEvents).toEqual(events);

    const unknown = randomUUID();
    for (const [query, variables] of [
      [EVENTS_QUERY, { conversationId }],
      [CONVERSATION, { id: conversationId }],
      [CANCEL, { id: conversationId }],
      [DELETE, { id: conversationId }],
      [START_MUTATION, { input: { prompt: 'hijack', conversationId } }],
    ] as const) {
      const theirs = await test.graphql(query, variables, as(bob));
      expect(theirs.body.errors?.[0]?.errorType, query).toBe('UnauthorizedException');
      const missing = await test.graphql(query, JSON.parse(JSON.stringify(variables).replaceAll(conversationId, unknown)), as(bob));
      if (query !== START_MUTATION) {
        // Same answer whether the conversation exists or not.
        expect(missing.body.errors?.[0]).toEqual({ ...theirs.body.errors[0] });
      }
    }
    const intruder = await realtime(bob);
    const refused = await intruder.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    expect(refused).toMatchObject({ type: 'error', payload: { errors: [{ errorType: 'UnauthorizedException' }] } });

    // Alice's history is intact and she can continue.
    const next = await test.graphql(START_MUTATION, { input: { prompt: 'more [tokens=5]', conversationId } }, as(alice));
    expect(next.body.data.startConversation.status).toBe('STARTED');
    owner.close();
    intruder.close();
  });

  it('delivers nothing to someone who subscribed before another user created the conversation', async () => {
    const conversationId = randomUUID();
    const early = await realtime(bob);
    expect((await early.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId })).type).toBe('start_ack');
    const owner = await realtime(alice);
    await owner.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId });
    await test.graphql(START_MUTATION, { input: { prompt: 'private [tokens=20]', conversationId } }, as(alice));
    await eventsUntilEnd(owner, 's');
    expect(early.data('s')).toEqual([]);
    early.close();
    owner.close();
  });

  it('refuses API keys, bad tokens and tokens for another audience or issuer', async () => {
    const apiKey = await postGraphQL(test.endpoints.graphqlUrl, { query: '{ __typename }' }, { 'x-api-key': test.apiKey });
    expect(apiKey.status).toBe(401);
    const bad = [
      await issuer.token('carol', { audience: 'someone-else' }),
      await issuer.token('carol', { issuer: 'https://elsewhere.example' }),
      await issuer.token('carol', { foreignKey: true }),
      await issuer.token('carol', { expiresIn: '-1m' }),
      'not-a-jwt',
    ];
    for (const token of bad) {
      const result = await postGraphQL(test.endpoints.graphqlUrl, { query: '{ __typename }' }, { authorization: token });
      expect(result.status).toBe(401);
      expect(result.body.errors[0].errorType).toBe('UnauthorizedException');
      expect(result.body.errors[0].message).toContain('The token was refused');
    }
    const socket = await realtime(bad[0]!);
    expect(socket.messages[0]).toMatchObject({ type: 'connection_error' });
    expect(await socket.closed()).toBe(4401);
  });

  it('lets the owner delete a conversation, not while a turn runs', async () => {
    const conversationId = randomUUID();
    await test.graphql(START_MUTATION, { input: { prompt: 'slow [rate=20] [tokens=500]', conversationId } }, as(alice));
    const busy = await test.graphql(DELETE, { id: conversationId }, as(alice));
    expect(busy.body.errors[0]).toMatchObject({ errorType: 'ConflictException' });
    await test.graphql(CANCEL, { id: conversationId }, as(alice));
    for (let attempt = 0; attempt < 100; attempt += 1) {
      const state = await test.graphql(CONVERSATION, { id: conversationId }, as(alice));
      if (state.body.data.conversation.status === 'CANCELLED') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const deleted = await test.graphql(DELETE, { id: conversationId }, as(alice));
    expect(deleted.body.data.deleteConversation).toEqual({ conversationId, status: 'DELETED' });
    const gone = await test.graphql(EVENTS_QUERY, { conversationId }, as(alice));
    expect(gone.body.errors[0].errorType).toBe('UnauthorizedException');
  });
});
