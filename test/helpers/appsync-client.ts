/**
 * A raw AppSync real-time protocol client for tests: it speaks the wire protocol by hand, as
 * AppSync's documentation describes it, so the tests check the gateway against the protocol and
 * not against our own SDK.
 */
import WebSocket from 'ws';

export type AuthStyle = 'query' | 'subprotocol';

export interface RawMessage {
  type: string;
  id?: string;
  payload?: any;
}

export class RawAppSyncClient {
  readonly messages: RawMessage[] = [];
  closeCode: number | undefined;
  closeReason = '';
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      this.messages.push(JSON.parse(data.toString()) as RawMessage);
      this.notify();
    });
    socket.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.notify();
    });
  }

  /** Opens a connection with the API key passed in the chosen style; resolves once open. */
  static async connect(url: string, apiKey: string | undefined, style: AuthStyle = 'query', host = '127.0.0.1'): Promise<RawAppSyncClient> {
    const header = apiKey === undefined ? undefined : { host, 'x-api-key': apiKey };
    let target = url;
    const protocols = ['graphql-ws'];
    if (header && style === 'query') {
      target = `${url}?header=${Buffer.from(JSON.stringify(header)).toString('base64')}&payload=e30=`;
    } else if (header) {
      protocols.unshift(`header-${Buffer.from(JSON.stringify(header)).toString('base64url')}`);
    }
    const socket = new WebSocket(target, protocols);
    const client = new RawAppSyncClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return client;
  }

  /** Connects and completes connection_init / connection_ack. */
  static async ready(url: string, apiKey: string, style: AuthStyle = 'query'): Promise<RawAppSyncClient> {
    const client = await RawAppSyncClient.connect(url, apiKey, style);
    client.send({ type: 'connection_init' });
    await client.waitFor((message) => message.type === 'connection_ack');
    return client;
  }

  send(message: unknown): void {
    this.socket.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  /** Sends a start message and waits for its start_ack or error. */
  async subscribe(id: string, query: string, variables: Record<string, unknown>, apiKey?: string): Promise<RawMessage> {
    this.send({
      id,
      type: 'start',
      payload: {
        data: JSON.stringify({ query, variables }),
        extensions: { authorization: apiKey === undefined ? { host: '127.0.0.1' } : { host: '127.0.0.1', 'x-api-key': apiKey } },
      },
    });
    return this.waitFor((message) => message.id === id && (message.type === 'start_ack' || message.type === 'error'));
  }

  /** Data payloads received for a subscription id, in order. */
  data(id: string): any[] {
    return this.messages.filter((message) => message.type === 'data' && message.id === id).map((message) => message.payload.data);
  }

  /** Resolves with the first message (from the start of the connection) matching `predicate`. */
  waitFor(predicate: (message: RawMessage) => boolean, timeoutMs = 10_000): Promise<RawMessage> {
    return this.until(() => this.messages.find(predicate), timeoutMs, 'message');
  }

  /** Resolves once `check` returns a value other than undefined. */
  until<T>(check: () => T | undefined, timeoutMs = 10_000, what = 'condition'): Promise<T> {
    return new Promise((resolve, reject) => {
      const attempt = (): boolean => {
        const value = check();
        if (value === undefined) return false;
        clearTimeout(timer);
        resolve(value);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((waiter) => waiter !== listener);
        reject(new Error(`timed out waiting for ${what}; received: ${JSON.stringify(this.messages.slice(-5))}`));
      }, timeoutMs);
      const listener = (): void => {
        if (attempt()) this.waiters = this.waiters.filter((waiter) => waiter !== listener);
      };
      if (!attempt()) this.waiters.push(listener);
    });
  }

  /** Resolves when the socket has closed. */
  closed(timeoutMs = 10_000): Promise<number> {
    return this.until(() => this.closeCode, timeoutMs, 'close');
  }

  close(): void {
    this.socket.close();
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/** Collects the events of an onConversationEvent subscription until a terminal one. */
export async function eventsUntilEnd(client: RawAppSyncClient, id: string, timeoutMs = 20_000): Promise<any[]> {
  await client.until(
    () => (client.data(id).some((data) => data.onConversationEvent?.type !== 'CHUNK') ? true : undefined),
    timeoutMs,
    `terminal event on ${id}`,
  );
  return client.data(id).map((data) => data.onConversationEvent);
}
