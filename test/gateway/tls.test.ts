/**
 * Optional TLS on the same port (LONGRUN_TLS_CERT, LONGRUN_TLS_KEY): Amplify JS v6 always connects
 * with wss://, even to a local endpoint.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ON_EVENT_SUBSCRIPTION, START_MUTATION, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const folder = mkdtempSync(join(tmpdir(), 'longrun-tls-'));
let openssl = true;
try {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
    '-keyout', join(folder, 'key.pem'), '-out', join(folder, 'cert.pem')], { stdio: 'ignore' });
} catch {
  openssl = false;
}

let test: TestGateway;
beforeAll(async () => {
  if (!openssl) return;
  test = await startTestGateway({ LONGRUN_TLS_CERT: join(folder, 'cert.pem'), LONGRUN_TLS_KEY: join(folder, 'key.pem') });
});
afterAll(async () => {
  await test?.stop();
  rmSync(folder, { recursive: true, force: true });
});

function postHttps(url: string, body: string, headers: Record<string, string>, ca: Buffer): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const call = request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, ca }, (response) => {
      let text = '';
      response.on('data', (chunk) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
    });
    call.on('error', reject);
    call.end(body);
  });
}

it.skipIf(!openssl)('serves https:// and wss:// on one port', async () => {
  const ca = readFileSync(join(folder, 'cert.pem'));
  expect(test.endpoints.graphqlUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/graphql$/);
  expect(test.endpoints.realtimeUrl).toMatch(/^wss:\/\//);
  const conversationId = randomUUID();
  const header = Buffer.from(JSON.stringify({ host: '127.0.0.1', 'x-api-key': test.apiKey })).toString('base64');
  const socket = new WebSocket(`${test.endpoints.realtimeUrl}?header=${header}&payload=e30=`, ['graphql-ws'], { ca });
  const messages: any[] = [];
  const ended = new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('message', (raw) => {
      const message = JSON.parse(raw.toString());
      messages.push(message);
      if (message.type === 'connection_ack') {
        socket.send(JSON.stringify({ id: 's', type: 'start', payload: { data: JSON.stringify({ query: ON_EVENT_SUBSCRIPTION, variables: { conversationId } }) } }));
      }
      if (message.type === 'start_ack') {
        void postHttps(test.endpoints.graphqlUrl, JSON.stringify({ query: START_MUTATION, variables: { input: { prompt: 'over tls [tokens=20]', conversationId } } }), { 'x-api-key': test.apiKey }, ca);
      }
      if (message.type === 'data' && message.payload.data.onConversationEvent.type !== 'CHUNK') resolve();
    });
  });
  socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init' })));
  await ended;
  const events = messages.filter((m) => m.type === 'data').map((m) => m.payload.data.onConversationEvent);
  expect(events[events.length - 1].type).toBe('COMPLETE');
  expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
  socket.close();

  const health = await postHttps(test.endpoints.graphqlUrl, '{"query":"{ __typename }"}', { 'x-api-key': test.apiKey }, ca);
  expect(health).toEqual({ status: 200, body: { data: { __typename: 'Query' } } });
});
