/**
 * `GET /metrics` on a real gateway: a conversation over a real AppSync-protocol socket moves the
 * counters by exactly what the subscriber received, and the gauges read the gateway's state.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsUntilEnd, RawAppSyncClient } from '../helpers/appsync-client.js';
import { ON_EVENT_SUBSCRIPTION, START_MUTATION, startTestGateway, TURN_PLACES, type TestGateway } from '../helpers/gateway.js';

describe.each(TURN_PLACES)('$name', (place) => {
  let test: TestGateway;
  beforeAll(async () => {
    test = await startTestGateway(place.environment());
  });
  afterAll(async () => {
    await test.stop();
  });

  /** Scrapes /metrics and returns the text and a reader of one sample (0 when the series is absent). */
  async function scrape(): Promise<{ status: number; contentType: string | null; text: string; value: (series: string) => number }> {
    const response = await fetch(test.endpoints.graphqlUrl.replace(/\/graphql$/, '/metrics'));
    const text = await response.text();
    const samples = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const space = line.lastIndexOf(' ');
      samples.set(line.slice(0, space), Number(line.slice(space + 1)));
    }
    return { status: response.status, contentType: response.headers.get('content-type'), text, value: (series) => samples.get(series) ?? 0 };
  }

  async function converse(client: RawAppSyncClient, prompt: string): Promise<any[]> {
    const conversationId = randomUUID();
    const id = randomUUID();
    expect((await client.subscribe(id, ON_EVENT_SUBSCRIPTION, { conversationId }, test.apiKey)).type).toBe('start_ack');
    const started = await test.graphql(START_MUTATION, { input: { prompt, conversationId } });
    expect(started.status).toBe(200);
    return eventsUntilEnd(client, id);
  }

  describe('GET /metrics', () => {
    it('serves the Prometheus text format with the gateway metrics and the default process metrics', async () => {
      const metrics = await scrape();
      expect(metrics.status).toBe(200);
      expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
      for (const name of [
        'longrun_time_to_first_token_seconds',
        'longrun_delivery_lag_seconds',
        'longrun_tokens_total',
        'longrun_events_published_total',
        'longrun_errors_total',
        'longrun_active_turns',
        'longrun_queued_turns',
        'longrun_connections',
        'longrun_subscriptions',
        'process_resident_memory_bytes',
        'nodejs_eventloop_lag_seconds',
      ]) {
        expect(metrics.text).toContain(`# TYPE ${name} `);
      }
    });

    it('counts the tokens, events and time to first token of a conversation, and its gauges while connected', async () => {
      const before = await scrape();
      const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
      const events = await converse(client, 'Count these [tokens=57]');
      const chunks = events.filter((event) => event.type === 'CHUNK').length;
      expect(events[events.length - 1].type).toBe('COMPLETE');

      const after = await scrape();
      const delta = (series: string): number => after.value(series) - before.value(series);
      expect(delta('longrun_tokens_total')).toBe(57);
      // Tokens are added to the counter when it is scraped: a second scrape must not add them again.
      expect((await scrape()).value('longrun_tokens_total')).toBe(after.value('longrun_tokens_total'));
      expect(delta('longrun_events_published_total{type="CHUNK"}')).toBe(chunks);
      expect(delta('longrun_events_published_total{type="COMPLETE"}')).toBe(1);
      expect(delta('longrun_delivery_lag_seconds_count')).toBe(chunks + 1);
      expect(delta('longrun_time_to_first_token_seconds_count')).toBe(1);
      expect(delta('longrun_errors_total{errorCode="ModelFailure"}')).toBe(0);
      expect(after.value('longrun_connections')).toBe(1);
      expect(after.value('longrun_subscriptions')).toBe(1);
      expect(after.value('longrun_active_turns')).toBe(0);
      expect(after.value('longrun_queued_turns')).toBe(0);

      client.close();
      await client.closed();
      await expect.poll(async () => (await scrape()).value('longrun_connections')).toBe(0);
      expect((await scrape()).value('longrun_subscriptions')).toBe(0);
    });

    it('counts a failed turn under its errorCode', async () => {
      const before = await scrape();
      const client = await RawAppSyncClient.ready(test.endpoints.realtimeUrl, test.apiKey);
      const events = await converse(client, 'Fail soon [tokens=50] [fail-after=5]');
      expect(events[events.length - 1]).toMatchObject({ type: 'ERROR', errorCode: 'ModelFailure' });
      client.close();

      const after = await scrape();
      const delta = (series: string): number => after.value(series) - before.value(series);
      expect(delta('longrun_errors_total{errorCode="ModelFailure"}')).toBe(1);
      expect(delta('longrun_events_published_total{type="ERROR"}')).toBe(1);
      expect(delta('longrun_tokens_total')).toBe(5);
    });

    it('declines other methods and paths, leaving them to the gateway', async () => {
      const url = test.endpoints.graphqlUrl.replace(/\/graphql$/, '/metrics');
      expect((await fetch(url, { method: 'POST' })).status).toBe(404);
      expect((await fetch(`${url}/extra`)).status).toBe(404);
    });
  });
});
