/**
 * Process-level behaviour of `longrun serve`: after `kill -9` in the middle of streams, a restart
 * keeps every event a client received and closes the interrupted turns; SIGTERM stops cleanly;
 * a bad configuration stops start-up with a message naming the variable.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { RawAppSyncClient } from '../helpers/appsync-client.js';
import { startChildGateway } from '../helpers/child-gateway.js';
import { EVENTS_QUERY, ON_EVENT_SUBSCRIPTION, postGraphQL, START_MUTATION, TEST_ENVIRONMENT } from '../helpers/gateway.js';

const folder = mkdtempSync(join(tmpdir(), 'longrun-restart-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

const key = TEST_ENVIRONMENT.LONGRUN_API_KEY!;
const headers = { 'x-api-key': key };

it('after kill -9, a restart keeps every received event, closes running turns and replays finished ones', async () => {
  const environment = { LONGRUN_DB: join(folder, 'crash.db'), LONGRUN_SIM_TOKENS_PER_SEC: '200' };
  const first = await startChildGateway(environment);
  const client = await RawAppSyncClient.ready(first.realtimeUrl, key);

  const finished = randomUUID();
  await client.subscribe('finished', ON_EVENT_SUBSCRIPTION, { conversationId: finished });
  await postGraphQL(first.graphqlUrl, { query: START_MUTATION, variables: { input: { prompt: 'short [tokens=10]', conversationId: finished } } }, headers);
  await client.until(() => (client.data('finished').some((data) => data.onConversationEvent.type === 'COMPLETE') ? true : undefined));

  const running = [randomUUID(), randomUUID()];
  for (const id of running) {
    await client.subscribe(id, ON_EVENT_SUBSCRIPTION, { conversationId: id });
    await postGraphQL(first.graphqlUrl, { query: START_MUTATION, variables: { input: { prompt: 'long [tokens=100000]', conversationId: id } } }, headers);
  }
  await client.until(() => (running.every((id) => client.data(id).length >= 5) ? true : undefined));
  first.child.kill('SIGKILL');
  expect(await first.exited).toBe('SIGKILL');
  await client.closed();

  const second = await startChildGateway(environment);
  try {
    for (const id of running) {
      const received = client.data(id).map((data) => data.onConversationEvent);
      const stored = (await postGraphQL(second.graphqlUrl, { query: EVENTS_QUERY, variables: { conversationId: id } }, headers)).body.data
        .conversationEvents;
      // Every event the client had is stored, unchanged, and the turn is closed right after the last stored one.
      expect(stored.slice(0, received.length)).toEqual(received);
      const last = stored[stored.length - 1];
      expect(last).toMatchObject({ type: 'ERROR', errorCode: 'Interrupted', seq: stored.length });
      expect(last.error).toContain('restart');
      expect(stored.slice(0, -1).every((event: { type: string }) => event.type === 'CHUNK')).toBe(true);
    }
    const replay = (await postGraphQL(second.graphqlUrl, { query: EVENTS_QUERY, variables: { conversationId: finished } }, headers)).body.data
      .conversationEvents;
    expect(replay).toEqual(client.data('finished').map((data) => data.onConversationEvent));

    // The interrupted conversation takes a new turn, numbered after the ERROR.
    const next = await postGraphQL(second.graphqlUrl, { query: START_MUTATION, variables: { input: { prompt: 'again [tokens=3]', conversationId: running[0] } } }, headers);
    expect(next.body.data.startConversation.status).toBe('STARTED');
  } finally {
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  }
});

it('on SIGTERM, ends running turns as interrupted and exits 0', async () => {
  const environment = { LONGRUN_DB: join(folder, 'term.db'), LONGRUN_SIM_TOKENS_PER_SEC: '100' };
  const gateway = await startChildGateway(environment);
  const client = await RawAppSyncClient.ready(gateway.realtimeUrl, key);
  const id = randomUUID();
  await client.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId: id });
  await postGraphQL(gateway.graphqlUrl, { query: START_MUTATION, variables: { input: { prompt: 'long [tokens=100000]', conversationId: id } } }, headers);
  await client.until(() => (client.data('s').length >= 2 ? true : undefined));
  gateway.child.kill('SIGTERM');
  expect(await gateway.exited).toBe(0);
  const events = client.data('s').map((data) => data.onConversationEvent);
  expect(events[events.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'Interrupted' });
  expect(gateway.stderr()).toContain('SIGTERM received');
});

it('prints the dev key it generates and keeps it beside the database', async () => {
  const environment = { LONGRUN_DB: join(folder, 'dev', 'longrun.db'), LONGRUN_API_KEY: '' };
  const first = await startChildGateway(environment);
  const printed = /API key:\s+(da2-[a-z2-7]{26})/.exec(first.stdout())?.[1];
  expect(printed).toBeDefined();
  expect(first.stdout()).toContain(join(folder, 'dev', 'api-key'));
  first.child.kill('SIGTERM');
  await first.exited;
  const second = await startChildGateway(environment);
  expect(second.stdout()).toContain(printed!);
  const ok = await postGraphQL(second.graphqlUrl, { query: '{ __typename }' }, { 'x-api-key': printed! });
  expect(ok.status).toBe(200);
  second.child.kill('SIGTERM');
  await second.exited;
});

it('stops start-up on a bad configuration with a message naming the variable', async () => {
  await expect(startChildGateway({ PORT: 'eighty', LONGRUN_PROVIDER: 'gpt' })).rejects.toThrow(
    /PORT must be a whole number from 0 to 65535; got "eighty"[\s\S]*LONGRUN_PROVIDER must be one of simulated, bedrock, openai; got "gpt"/,
  );
});
