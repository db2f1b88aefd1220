/**
 * The realtime core with a minimal fake socket, which is all it needs: here the tests control
 * what a transport cannot show on loopback (a send buffer that keeps growing: the kernel absorbs
 * tens of megabytes first).
 */
import { describe, expect, it } from 'vitest';
import { makeEvent } from '../../src/domain.js';
import { createConversationAccess } from '../../src/gateway/access.js';
import { createApiKeyRing, createAuthenticator } from '../../src/gateway/auth.js';
import { Hub } from '../../src/gateway/hub.js';
import { createTurnLimiter } from '../../src/gateway/limits.js';
import { attachResolvers, type GatewayServices } from '../../src/gateway/operations.js';
import { loadSchema } from '../../src/gateway/schema.js';
import { silentLogger } from '../../src/log.js';
import { createAppSyncRealtimeServer, CloseCode } from '../../src/realtime/server.js';
import { createSqliteStore } from '../../src/store/sqlite.js';
import { createLocalInvoker } from '../../src/invoker/local.js';

const KEY = 'da2-corekeycorekeycorekeycore';

function setup(maxBufferedBytes = 1000) {
  const loaded = loadSchema();
  attachResolvers(loaded);
  const store = createSqliteStore({ path: ':memory:' });
  const hub = new Hub();
  const services: GatewayServices = {
    store,
    hub,
    invoker: createLocalInvoker({ run: async () => undefined, maxConcurrent: 1 }),
    logger: silentLogger,
    clock: Date.now,
    maxPromptBytes: 1000,
    access: createConversationAccess({ store, enforceOwners: false }),
    limits: createTurnLimiter({ turnsPerMinute: 10, turnsPerPrincipal: 10 }),
    logPrompts: false,
  };
  const server = createAppSyncRealtimeServer({
    loaded,
    services,
    authenticator: createAuthenticator({ mode: 'apikey', apiKeys: createApiKeyRing({ fixed: [{ key: KEY }] }) }),
    connectionTimeoutMs: 300_000,
    maxBufferedBytes,
  });
  const header = Buffer.from(JSON.stringify({ host: 'h', 'x-api-key': KEY })).toString('base64');
  const open = () => {
    const socket = { protocol: 'graphql-ws', bufferedAmount: 0, sent: [] as any[], closedWith: undefined as [number, string] | undefined,
      send(data: string) { this.sent.push(JSON.parse(data)); },
      close(code: number, reason: string) { this.closedWith = [code, reason]; } };
    const connection = server.opened(socket, { url: new URL(`ws://h/graphql/realtime?header=${header}`), subprotocols: ['graphql-ws'], remoteAddress: '127.0.0.1' });
    return { socket, connection };
  };
  return { open, hub, server };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 10));
const start = (id: string, conversationId: string) =>
  JSON.stringify({ id, type: 'start', payload: { data: JSON.stringify({ query: 'subscription($c: ID!) { onConversationEvent(conversationId: $c) { seq chunk } }', variables: { c: conversationId } }) } });

describe('realtime core', () => {
  it('disconnects a subscriber whose send buffer passes the bound, and keeps delivering to the others', async () => {
    const { open, hub } = setup(1000);
    const slow = open();
    const fast = open();
    for (const side of [slow, fast]) {
      side.connection.message(JSON.stringify({ type: 'connection_init' }), false);
      side.connection.message(start('s', 'c1'), false);
    }
    await settle();
    expect(hub.size).toBe(2);
    hub.publish('onConversationEvent', 'c1', makeEvent({ conversationId: 'c1', turn: 1, seq: 1, type: 'CHUNK', chunk: 'a', createdAt: 1 }));
    slow.socket.bufferedAmount = 5000;
    hub.publish('onConversationEvent', 'c1', makeEvent({ conversationId: 'c1', turn: 1, seq: 2, type: 'CHUNK', chunk: 'b', createdAt: 2 }));
    expect(slow.socket.closedWith?.[0]).toBe(CloseCode.SlowConsumer);
    expect(slow.socket.closedWith?.[1]).toContain('resume from your last seq');
    expect(slow.socket.sent.filter((m) => m.type === 'data').map((m) => m.payload.data.onConversationEvent.seq)).toEqual([1]);
    expect(fast.socket.sent.filter((m) => m.type === 'data').map((m) => m.payload.data.onConversationEvent.seq)).toEqual([1, 2]);
    slow.connection.closed();
    expect(hub.size).toBe(1);
  });

  it('serialises an event once for all subscribers with the same document', async () => {
    const { open, hub } = setup(1_000_000);
    const sides = Array.from({ length: 50 }, () => open());
    for (const side of sides) side.connection.message(start('s', 'c2'), false);
    await settle();
    let reads = 0;
    const event = new Proxy(makeEvent({ conversationId: 'c2', turn: 1, seq: 1, type: 'CHUNK', chunk: 'x', createdAt: 1 }), {
      get(target, property, receiver) {
        if (property === 'seq') reads += 1;
        return Reflect.get(target, property, receiver);
      },
    });
    hub.publish('onConversationEvent', 'c2', event);
    expect(reads).toBe(1);
    expect(sides.every((side) => side.socket.sent.some((m) => m.type === 'data'))).toBe(true);
  });

  it('reports how long a connection has been without a subscription', async () => {
    const { open } = setup();
    const side = open();
    await settle();
    expect(side.connection.idleSince).toBeTypeOf('number');
    side.connection.message(start('s', 'c3'), false);
    await settle();
    expect(side.connection.idleSince).toBeUndefined();
    side.connection.message(JSON.stringify({ type: 'stop', id: 's' }), false);
    await settle();
    expect(side.connection.idleSince).toBeTypeOf('number');
  });
});
