/**
 * Limits, each configurable and each answered with a clear error: turns per minute and at once per
 * caller, connections per address, message size, idle connections, slow subscribers, and API keys
 * with expiry dates loaded from a file that changes without a restart.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RawAppSyncClient } from '../helpers/appsync-client.js';
import { ON_EVENT_SUBSCRIPTION, postGraphQL, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';

let test: TestGateway | undefined;
afterEach(async () => {
  await test?.stop();
  test = undefined;
});

const CANCEL = 'mutation($id: ID!) { cancelConversation(conversationId: $id) { status } }';

describe('turn limits per caller', () => {
  it('refuses turns past LONGRUN_TURNS_PER_MINUTE with a retry hint', async () => {
    test = await startTestGateway({ LONGRUN_TURNS_PER_MINUTE: '2' });
    for (let index = 0; index < 2; index += 1) {
      const ok = await test.graphql(START_MUTATION, { input: { prompt: 'quick [tokens=2]' } });
      expect(ok.body.data.startConversation.status).toBe('STARTED');
    }
    const refused = await test.graphql(START_MUTATION, { input: { prompt: 'one too many' } });
    expect(refused.body.errors[0].errorType).toBe('LimitExceededException');
    expect(refused.body.errors[0].message).toMatch(/limit is 2 a minute per caller \(LONGRUN_TURNS_PER_MINUTE\)\. Try again in \d+ s\./);
  });

  it('refuses turns past LONGRUN_MAX_TURNS_PER_PRINCIPAL running at once, and admits again when one ends', async () => {
    test = await startTestGateway({ LONGRUN_MAX_TURNS_PER_PRINCIPAL: '1' });
    const first = randomUUID();
    await test.graphql(START_MUTATION, { input: { prompt: 'long [rate=20] [tokens=1000]', conversationId: first } });
    const refused = await test.graphql(START_MUTATION, { input: { prompt: 'second' } });
    expect(refused.body.errors[0]).toMatchObject({ errorType: 'LimitExceededException' });
    expect(refused.body.errors[0].message).toContain('LONGRUN_MAX_TURNS_PER_PRINCIPAL');
    await test.graphql(CANCEL, { id: first });
    let admitted: any;
    for (let attempt = 0; attempt < 100; attempt += 1) {
      admitted = await test.graphql(START_MUTATION, { input: { prompt: 'now [tokens=2]' } });
      if (admitted.body.data) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(admitted.body.data.startConversation.status).toBe('STARTED');
  });
});

describe('connections', () => {
  it('refuses connections past LONGRUN_MAX_CONNECTIONS_PER_ADDRESS with 429', async () => {
    test = await startTestGateway({ LONGRUN_MAX_CONNECTIONS_PER_ADDRESS: '2' });
    const held = [await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey), await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey)];
    await expect(RawAppSyncClient.connect(test.endpoints.realtimeUrl, test.apiKey)).rejects.toThrow(/429/);
    held[0]!.close();
    await held[0]!.closed();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const again = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    again.close();
    held[1]!.close();
  });

  it('closes connections without a subscription after LONGRUN_IDLE_TIMEOUT_MS, and keeps those with one', async () => {
    test = await startTestGateway({ LONGRUN_IDLE_TIMEOUT_MS: '300', LONGRUN_KEEPALIVE_MS: '100' });
    const idle = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    const busy = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    await busy.subscribe('s', ON_EVENT_SUBSCRIPTION, { conversationId: 'x' });
    expect(await idle.closed(3000)).toBe(4410);
    expect(idle.closeReason).toContain('LONGRUN_IDLE_TIMEOUT_MS');
    expect(busy.closeCode).toBeUndefined();
    busy.close();
  });

  it('applies LONGRUN_MAX_MESSAGE_BYTES to realtime messages', async () => {
    test = await startTestGateway({ LONGRUN_MAX_MESSAGE_BYTES: '2048' });
    const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
    client.send({ type: 'start', id: 'big', payload: { data: JSON.stringify({ query: ON_EVENT_SUBSCRIPTION, variables: { conversationId: 'x'.repeat(3000) } }) } });
    const answer = await client.waitFor((message) => message.type === 'error');
    expect(answer.payload.errors[0]).toMatchObject({ errorType: 'MessageTooLargeError' });
    expect(answer.payload.errors[0].message).toContain('the limit is 2048 bytes (LONGRUN_MAX_MESSAGE_BYTES)');
    client.close();
  });
});

describe('API keys from LONGRUN_API_KEYS_FILE', () => {
  it('accepts keys until they expire and follows the file as it changes, without a restart', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'longrun-keys-'));
    const file = join(folder, 'keys.json');
    const future = new Date(Date.now() + 86_400_000).toISOString();
    const past = new Date(Date.now() - 1000).toISOString();
    writeFileSync(file, JSON.stringify([{ key: 'da2-rotatingkeyone000000000', expires: future }, { key: 'da2-expiredkey0000000000000', expires: past }]));
    try {
      test = await startTestGateway({ LONGRUN_API_KEYS_FILE: file });
      const ask = (key: string) => postGraphQL(test!.endpoints.graphqlUrl, { query: '{ __typename }' }, { 'x-api-key': key });
      expect((await ask('da2-rotatingkeyone000000000')).status).toBe(200);
      expect((await ask(test.apiKey)).status).toBe(200);
      const expired = await ask('da2-expiredkey0000000000000');
      expect(expired.status).toBe(401);
      expect(expired.body.errors[0].message).toBe('The API key has expired; ask for a new one.');

      writeFileSync(file, JSON.stringify([{ key: 'da2-rotatingkeytwo000000000' }]));
      let rotated = 0;
      for (let attempt = 0; attempt < 40 && rotated !== 200; attempt += 1) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        rotated = (await ask('da2-rotatingkeytwo000000000')).status;
      }
      expect(rotated).toBe(200);
      expect((await ask('da2-rotatingkeyone000000000')).status).toBe(401);

      // A broken file keeps the keys last read.
      writeFileSync(file, '{ not json');
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect((await ask('da2-rotatingkeytwo000000000')).status).toBe(200);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
