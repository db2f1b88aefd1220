/**
 * longrun's client SDK (`longrun/client`): start a turn and receive its answer as it is written,
 * every character exactly once and in order, across dropped connections; resume a conversation
 * from any event; cancel a turn. It speaks the AWS AppSync protocols (GraphQL over HTTP and the
 * AppSync real-time WebSocket protocol), so it works against the local gateway and against a
 * deployed AppSync API alike. It runs in browsers and in Node 20 (where it loads the `ws` package
 * for WebSockets, since Node 20 has no global WebSocket).
 *
 * ```ts
 * import { createClient } from 'longrun/client';
 *
 * const client = createClient({ url: 'http://127.0.0.1:4000/graphql', apiKey: 'da2-…' });
 * const stream = client.chat('Tell me a story');
 * for await (const event of stream) {
 *   if (event.type === 'CHUNK') process.stdout.write(event.chunk ?? '');
 * }
 * const { status, usage, error } = await stream.result;
 * client.close();
 * ```
 */
import type { ConversationEvent, EventType, Message, Turn, TurnStatus, Usage } from '../domain.js';
import { ClientErrorCode, LongrunClientError } from './errors.js';
import { GraphQLHttpClient, type Conversation, type ConversationResponse, type FetchFunction } from './graphql.js';
import {
  type ConnectionChange,
  DEFAULT_RECONNECT,
  newId,
  parseUrl,
  RealtimeConnection,
  realtimeUrlFor,
  type ReconnectOptions,
  type WebSocketConstructor,
} from './realtime.js';
import { ConversationStream, type TurnResult } from './stream.js';

export { ClientErrorCode, LongrunClientError } from './errors.js';
export { realtimeUrlFor } from './realtime.js';
export type { ConnectionChange, ConnectionStatus, ReconnectOptions, WebSocketConstructor, WebSocketLike } from './realtime.js';
export type { Conversation, ConversationResponse, FetchFunction } from './graphql.js';
export { ConversationStream } from './stream.js';
export type { TurnResult } from './stream.js';
export type { ConversationEvent, EventType, Message, Turn, TurnStatus, Usage };

/** Options of `createClient`. */
export interface ClientOptions {
  /** The GraphQL endpoint: `http://127.0.0.1:4000/graphql` locally, `https://xxx.appsync-api.<region>.amazonaws.com/graphql` on AWS. */
  url: string;
  /** The API key (AppSync's `x-api-key`). */
  apiKey: string;
  /** The real-time endpoint; derived from `url` as AppSync clients derive it when omitted (see `realtimeUrlFor`). */
  realtimeUrl?: string;
  /** WebSocket constructor; default `globalThis.WebSocket`, else the `ws` package, loaded on first use. */
  WebSocket?: WebSocketConstructor;
  /** fetch function; default `globalThis.fetch`. */
  fetch?: FetchFunction;
  /** Reconnection after a drop; defaults: 30 s budget, 200 ms first delay, 5 s largest delay. */
  reconnect?: ReconnectOptions;
  /** Wait this long for `connection_ack` before counting an attempt as failed (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** An HTTP request with no answer after this long fails with `Timeout` (default 30 000 ms). */
  requestTimeoutMs?: number;
  /**
   * When to read the store for events the subscription did not deliver: a gap in the live `seq`s
   * that lasts `gapMs` (default 500 ms), or no event at all for `idleMs` (default 15 000 ms).
   */
  backfill?: { gapMs?: number; idleMs?: number };
}

/** Options of `client.chat`. */
export interface ChatOptions {
  /** Continue this conversation; a new one (with a client-generated UUID) when omitted. */
  conversationId?: string;
  /** System prompt for this turn. */
  system?: string;
  /** Model for this turn; the deployment's default when omitted. */
  modelId?: string;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  /** Stops the stream locally (the turn goes on on the server; use `cancel` to stop it there). */
  signal?: AbortSignal;
}

/** Options of `client.resume`. */
export interface ResumeOptions {
  /** Deliver events with `seq` greater than this (default 0: from the first event). */
  afterSeq?: number;
  /** Stops the stream locally. */
  signal?: AbortSignal;
}

/** A longrun client; see the module comment. */
export interface LongrunClient {
  /**
   * Starts a turn with `prompt` and streams its events until the turn's terminal event. Nothing
   * is sent until the subscription is acknowledged, so no event can be missed. A turn already
   * running in the conversation gives `ConflictException`; a bad input `BadRequestException`.
   */
  chat(prompt: string, options?: ChatOptions): ConversationStream;
  /**
   * Streams a conversation's events after `afterSeq` until its current turn ends; for a finished
   * conversation, replays the stored events and ends. `NotFoundException` when it does not exist.
   */
  resume(conversationId: string, options?: ResumeOptions): ConversationStream;
  /** Cancels the conversation's running turn; its stream ends with CANCELLED. Answers CANCELLING, or the last turn's status when none runs. */
  cancel(conversationId: string): Promise<ConversationResponse>;
  /** The conversation with its turns and messages; null when it does not exist. */
  conversation(conversationId: string): Promise<Conversation | null>;
  /**
   * Calls `listener` at every change of the real-time connection's status (`ConnectionStatus`:
   * `connecting`, `connected`, `reconnecting` with the `reason` it dropped, `idle`, `closed`), for
   * a page to show "Reconnecting…" while streams wait. Returns the function that removes it.
   */
  onConnectionChange(listener: (change: ConnectionChange) => void): () => void;
  /** Closes the connection; open streams end with `Aborted`, later calls fail with `ClientClosed`. */
  close(): void;
}

/**
 * Creates a client. Nothing is connected until the first `chat` or `resume`. Throws
 * `InvalidOptions` when `url` does not parse, `apiKey` is empty, or no `fetch` exists.
 */
export function createClient(options: ClientOptions): LongrunClient {
  const endpoint = parseUrl(options.url);
  if (typeof options.apiKey !== 'string' || options.apiKey.trim() === '') {
    throw new LongrunClientError(ClientErrorCode.InvalidOptions, 'apiKey is empty; pass the API key of the longrun gateway or AppSync API.');
  }
  const realtimeUrl = options.realtimeUrl ?? realtimeUrlFor(options.url);
  parseUrl(realtimeUrl);
  const fetchFunction: FetchFunction | undefined =
    options.fetch ?? (typeof globalThis.fetch === 'function' ? (input, init) => globalThis.fetch(input, init) : undefined);
  if (fetchFunction === undefined) {
    throw new LongrunClientError(ClientErrorCode.InvalidOptions, 'This runtime has no global fetch; pass one as the `fetch` option.');
  }
  const reconnect = { ...DEFAULT_RECONNECT, ...definedOnly(options.reconnect ?? {}) };
  const http = new GraphQLHttpClient({
    url: options.url,
    apiKey: options.apiKey,
    fetch: fetchFunction,
    requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
  });
  const connectionListeners = new Set<(change: ConnectionChange) => void>();
  const realtime = new RealtimeConnection({
    realtimeUrl,
    host: endpoint.host,
    apiKey: options.apiKey,
    webSocket: () => resolveWebSocket(options.WebSocket),
    reconnect,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    onStatus: (change) => {
      // Each listener on its own: one that throws does not keep the others from hearing.
      for (const listener of [...connectionListeners]) {
        try {
          listener(change);
        } catch (error) {
          setTimeout(() => {
            throw error;
          });
        }
      }
    },
  });
  const dependencies = {
    http,
    realtime,
    reconnect,
    repair: { gapMs: options.backfill?.gapMs ?? 500, idleMs: options.backfill?.idleMs ?? 15_000 },
  };
  let closed = false;
  const ensureOpen = (): void => {
    if (closed) throw new LongrunClientError(ClientErrorCode.ClientClosed, 'The client is closed; create another one.');
  };

  return {
    chat(prompt, chatOptions = {}) {
      ensureOpen();
      const conversationId = chatOptions.conversationId ?? newId();
      return new ConversationStream(
        {
          kind: 'chat',
          conversationId,
          continued: chatOptions.conversationId !== undefined,
          input: {
            prompt,
            conversationId,
            system: chatOptions.system,
            modelId: chatOptions.modelId,
            maxTokens: chatOptions.maxTokens,
            temperature: chatOptions.temperature,
            topP: chatOptions.topP,
          },
          signal: chatOptions.signal,
        },
        dependencies,
      );
    },
    resume(conversationId, resumeOptions = {}) {
      ensureOpen();
      return new ConversationStream(
        { kind: 'resume', conversationId, afterSeq: resumeOptions.afterSeq ?? 0, signal: resumeOptions.signal },
        dependencies,
      );
    },
    async cancel(conversationId) {
      ensureOpen();
      return http.cancelConversation(conversationId);
    },
    async conversation(conversationId) {
      ensureOpen();
      return http.conversation(conversationId);
    },
    onConnectionChange(listener) {
      connectionListeners.add(listener);
      return () => void connectionListeners.delete(listener);
    },
    close() {
      closed = true;
      realtime.close();
    },
  };
}

let loadedWs: Promise<WebSocketConstructor> | undefined;

/** The injected constructor, else the global one, else the `ws` package (Node 20). */
async function resolveWebSocket(injected: WebSocketConstructor | undefined): Promise<WebSocketConstructor> {
  if (injected) return injected;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return global;
  loadedWs ??= (async () => {
    // A computed specifier keeps bundlers from pulling `ws` into browser builds, which have a
    // global WebSocket and never reach this line.
    const specifier = 'ws';
    try {
      const module = (await import(/* @vite-ignore */ specifier)) as { default?: WebSocketConstructor; WebSocket?: WebSocketConstructor };
      const constructor = module.WebSocket ?? module.default;
      if (typeof constructor !== 'function') throw new Error('the "ws" module has no WebSocket export');
      return constructor;
    } catch (error) {
      loadedWs = undefined;
      throw new LongrunClientError(
        ClientErrorCode.InvalidOptions,
        `This runtime has no global WebSocket and the "ws" package could not be loaded (${String(error)}); install "ws" or pass a WebSocket constructor as the \`WebSocket\` option.`,
        { cause: error },
      );
    }
  })();
  return loadedWs;
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as Partial<T>;
}
