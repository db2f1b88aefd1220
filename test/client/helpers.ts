/**
 * Test doubles for the client tests that stand between the SDK and a real gateway: a TCP proxy
 * that can be cut, refuse or go silent, and a WebSocket wrapper that counts connections, records
 * every frame and can drop chosen frames. Both are real network code; nothing of the SDK is mocked.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { WebSocketConstructor, WebSocketLike } from '../../src/client/index.js';
import { simulatedAnswer } from '../../src/providers/simulated.js';

/** The simulated model's answer to `prompt` after `history`. */
export const expectedText = (prompt: string, history: Array<{ role: 'user' | 'assistant'; content: string }> = []): string =>
  simulatedAnswer({ messages: [...history, { role: 'user', content: prompt }] }).tokens.join('');

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `check()` is true; rejects after `timeoutMs` naming `what`. */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

interface ProxiedPair {
  client: Socket;
  upstream: Socket;
  /** Server-to-client bytes are dropped and the server's close is hidden from the client. */
  silenced: boolean;
  /** Who closed first. */
  closedBy: 'client' | 'server' | 'proxy' | undefined;
  /** What happened to the pair, in order: `server-closed`, `client-closed`, `severed`. */
  log: string[];
}

/** What the proxy does with new connections. */
export type ProxyMode = 'forward' | 'refuse';

/** A TCP proxy in front of `127.0.0.1:targetPort`. */
export class TcpProxy {
  mode: ProxyMode = 'forward';
  /** Connections accepted, refused ones included. */
  accepted = 0;
  readonly pairs: ProxiedPair[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    const proxy = new TcpProxy(server, typeof address === 'object' && address ? address.port : 0);
    server.on('connection', (client) => proxy.accept(client, targetPort));
    return proxy;
  }

  /** `http://127.0.0.1:<port><path>` */
  url(path = '/graphql', scheme = 'http'): string {
    return `${scheme}://127.0.0.1:${this.port}${path}`;
  }

  /** Open pairs, in the order they were accepted. */
  get open(): ProxiedPair[] {
    return this.pairs.filter((pair) => pair.closedBy === undefined);
  }

  /** Destroys every open connection, both sides, as a network failure would. */
  sever(): void {
    for (const pair of this.open) {
      pair.closedBy = 'proxy';
      pair.log.push('severed');
      pair.client.destroy();
      pair.upstream.destroy();
    }
  }

  /** Open connections stop carrying server-to-client bytes, and stay open: the client hears silence. */
  silence(): void {
    for (const pair of this.open) pair.silenced = true;
  }

  async close(): Promise<void> {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, targetPort: number): void {
    this.accepted += 1;
    if (this.mode === 'refuse') {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, '127.0.0.1');
    const pair: ProxiedPair = { client, upstream, silenced: false, closedBy: undefined, log: [] };
    this.pairs.push(pair);
    client.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      if (!pair.silenced) client.write(data);
    });
    const closed = (side: 'client' | 'server'): void => {
      pair.closedBy ??= side;
      pair.log.push(`${side}-closed`);
      if (side === 'server' && pair.silenced) {
        // Hide the server's close: only the client's keep-alive watchdog can notice now.
        upstream.destroy();
        return;
      }
      client.destroy();
      upstream.destroy();
    };
    client.on('close', () => closed('client'));
    upstream.on('close', () => closed('server'));
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  }
}

/** A frame the SDK received, with the index of its socket and when it arrived. */
export interface RecordedFrame {
  socket: number;
  at: number;
  message: { type: string; id?: string; payload?: any };
}

/** What an instrumented WebSocket saw. */
export interface SocketRecord {
  /** Sockets constructed, failed attempts included. */
  opened: number;
  urls: string[];
  protocols: Array<string | string[] | undefined>;
  /** Frames delivered to the SDK. */
  frames: RecordedFrame[];
  /** Frames dropped by `drop`. */
  dropped: RecordedFrame[];
  /** Messages the SDK sent. */
  sent: Array<{ socket: number; message: any }>;
}

/**
 * A WebSocket constructor for the SDK that wraps `ws`: it records what passes and drops incoming
 * frames for which `drop` returns true (a message lost in transit).
 */
export function instrumentedWebSocket(drop: (frame: RecordedFrame) => boolean = () => false): {
  WebSocket: WebSocketConstructor;
  record: SocketRecord;
} {
  const record: SocketRecord = { opened: 0, urls: [], protocols: [], frames: [], dropped: [], sent: [] };

  class InstrumentedWebSocket implements WebSocketLike {
    onopen: WebSocketLike['onopen'] = null;
    onmessage: WebSocketLike['onmessage'] = null;
    onerror: WebSocketLike['onerror'] = null;
    onclose: WebSocketLike['onclose'] = null;
    private readonly inner: WebSocket;
    private readonly index: number;

    constructor(url: string, protocols?: string | string[]) {
      this.index = record.opened;
      record.opened += 1;
      record.urls.push(url);
      record.protocols.push(protocols);
      this.inner = new WebSocket(url, protocols);
      this.inner.onopen = (event) => this.onopen?.(event);
      this.inner.onerror = (event) => this.onerror?.(event);
      this.inner.onclose = (event) => this.onclose?.(event);
      this.inner.onmessage = (event) => {
        const frame: RecordedFrame = { socket: this.index, at: Date.now(), message: JSON.parse(String(event.data)) };
        if (drop(frame)) {
          record.dropped.push(frame);
          return;
        }
        record.frames.push(frame);
        this.onmessage?.(event);
      };
    }

    get readyState(): number {
      return this.inner.readyState;
    }

    send(data: string): void {
      record.sent.push({ socket: this.index, message: JSON.parse(data) });
      this.inner.send(data);
    }

    close(code?: number, reason?: string): void {
      this.inner.close(code, reason);
    }

    terminate(): void {
      this.inner.terminate();
    }
  }

  return { WebSocket: InstrumentedWebSocket, record };
}

/** The seq of a recorded `data` frame's event, or undefined. */
export const frameSeq = (frame: RecordedFrame): number | undefined =>
  frame.message.type === 'data' ? (frame.message.payload?.data?.onConversationEvent?.seq as number | undefined) : undefined;

/** A port nothing listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
