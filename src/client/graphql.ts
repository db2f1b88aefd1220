/**
 * GraphQL over HTTP, as AppSync serves it: `POST` the GraphQL endpoint with `x-api-key`, read
 * `data` and AppSync's `errors` (each with an `errorType`). Uses the global `fetch` (or one passed
 * in), so it runs unchanged in browsers, Node 20 and other runtimes.
 */
import type { ConversationEvent, Message, Turn, TurnStatus } from '../domain.js';
import { ClientErrorCode, codeForErrorType, describeError, LongrunClientError } from './errors.js';

/** The `fetch` function the SDK calls; the global one by default. */
export type FetchFunction = (input: string, init: RequestInit) => Promise<Response>;

/** Most events one `conversationEvents` call returns (the server's limit, as in the schema). */
export const EVENTS_PAGE_SIZE = 1000;

const EVENT_FIELDS =
  'conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt';

/** The subscription every stream opens before it starts or reads anything. */
export const ON_CONVERSATION_EVENT = `subscription OnConversationEvent($conversationId: ID!) {
  onConversationEvent(conversationId: $conversationId) { ${EVENT_FIELDS} }
}`;

const START_CONVERSATION = `mutation StartConversation($input: StartConversationInput!) {
  startConversation(input: $input) { conversationId status }
}`;

const CANCEL_CONVERSATION = `mutation CancelConversation($conversationId: ID!) {
  cancelConversation(conversationId: $conversationId) { conversationId status }
}`;

const CONVERSATION_POSITION = `query ConversationPosition($conversationId: ID!) {
  conversation(conversationId: $conversationId) { conversationId status lastSeq turns { turn status } }
}`;

const CONVERSATION = `query Conversation($conversationId: ID!) {
  conversation(conversationId: $conversationId) {
    conversationId status lastSeq createdAt updatedAt
    turns { turn status modelId startedAt endedAt }
    messages { turn role content }
  }
}`;

const CONVERSATION_EVENTS = `query ConversationEvents($conversationId: ID!, $afterSeq: Int, $limit: Int) {
  conversationEvents(conversationId: $conversationId, afterSeq: $afterSeq, limit: $limit) { ${EVENT_FIELDS} }
}`;

/** A conversation as `Query.conversation` returns it. */
export interface Conversation {
  conversationId: string;
  /** The status of the last turn. */
  status: TurnStatus;
  /** The `seq` of the last stored event. */
  lastSeq: number;
  createdAt: number;
  updatedAt: number;
  turns: Turn[];
  messages: Message[];
}

/** Where a conversation stands: enough to know where a new turn's events will start. */
export interface ConversationPosition {
  conversationId: string;
  status: TurnStatus;
  lastSeq: number;
  turns: Array<Pick<Turn, 'turn' | 'status'>>;
}

/** The parameters of `startConversation`. */
export interface StartConversationInput {
  prompt: string;
  conversationId: string;
  system?: string | undefined;
  modelId?: string | undefined;
  maxTokens?: number | undefined;
  temperature?: number | undefined;
  topP?: number | undefined;
}

/** What `startConversation` and `cancelConversation` answer. */
export interface ConversationResponse {
  conversationId: string;
  /** STARTED for a start; CANCELLING, or the last turn's status when nothing was running, for a cancel. */
  status: string;
}

/** Options of the HTTP side. */
export interface GraphQLHttpOptions {
  url: string;
  apiKey: string;
  fetch: FetchFunction;
  /** A request with no answer after this long fails with `Timeout`. */
  requestTimeoutMs: number;
}

/** Calls the GraphQL endpoint. Every method rejects with a `LongrunClientError`. */
export class GraphQLHttpClient {
  constructor(private readonly options: GraphQLHttpOptions) {}

  /** Starts a turn; answers once the server accepted it (the model runs in the background). */
  async startConversation(input: StartConversationInput, signal?: AbortSignal): Promise<ConversationResponse> {
    const variables = { input: Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined)) };
    return (await this.request<{ startConversation: ConversationResponse }>(START_CONVERSATION, variables, signal)).startConversation;
  }

  /** Asks the server to cancel the running turn. */
  async cancelConversation(conversationId: string, signal?: AbortSignal): Promise<ConversationResponse> {
    return (await this.request<{ cancelConversation: ConversationResponse }>(CANCEL_CONVERSATION, { conversationId }, signal))
      .cancelConversation;
  }

  /** The conversation with its turns and messages; null when it does not exist. */
  async conversation(conversationId: string, signal?: AbortSignal): Promise<Conversation | null> {
    return (await this.request<{ conversation: Conversation | null }>(CONVERSATION, { conversationId }, signal)).conversation;
  }

  /** The conversation's status, last seq and turns, without its messages; null when it does not exist. */
  async position(conversationId: string, signal?: AbortSignal): Promise<ConversationPosition | null> {
    return (await this.request<{ conversation: ConversationPosition | null }>(CONVERSATION_POSITION, { conversationId }, signal))
      .conversation;
  }

  /** One page of stored events after `afterSeq`, oldest first: at most `EVENTS_PAGE_SIZE`. */
  async events(conversationId: string, afterSeq: number, signal?: AbortSignal): Promise<ConversationEvent[]> {
    return (
      await this.request<{ conversationEvents: ConversationEvent[] }>(
        CONVERSATION_EVENTS,
        { conversationId, afterSeq, limit: EVENTS_PAGE_SIZE },
        signal,
      )
    ).conversationEvents;
  }

  /**
   * POSTs one operation and returns its `data`. Rejects with: `Unauthorized` (401/403 or an
   * UnauthorizedException), the server's `errorType` for a GraphQL error, `ConnectionFailed`
   * (retryable) when the request could not be sent, `Timeout` (retryable) after
   * `requestTimeoutMs`, `Aborted` when `signal` aborted, `ProtocolError` for an answer that is not
   * GraphQL (retryable for 5xx).
   */
  async request<T>(query: string, variables: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    const { url, apiKey, requestTimeoutMs } = this.options;
    // AbortSignal.any and AbortSignal.timeout are not in every runtime the SDK targets; one
    // controller joins the caller's signal and the time-out.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, requestTimeoutMs);
    const onAbort = (): void => controller.abort();
    if (signal?.aborted) controller.abort();
    else signal?.addEventListener('abort', onAbort, { once: true });

    let status: number;
    let text: string;
    try {
      const response = await this.options.fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
        body: JSON.stringify({ query, variables }),
        signal: controller.signal,
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      if (signal?.aborted) throw new LongrunClientError(ClientErrorCode.Aborted, 'The request was aborted.', { cause: error });
      if (timedOut) {
        throw new LongrunClientError(ClientErrorCode.Timeout, `${url} did not answer within ${requestTimeoutMs} ms.`, {
          cause: error,
          retryable: true,
        });
      }
      throw new LongrunClientError(ClientErrorCode.ConnectionFailed, `Could not reach ${url} (${describeError(error)}).`, {
        cause: error,
        retryable: true,
      });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }

    let body: { data?: unknown; errors?: Array<{ errorType?: string | null; message?: string }> } | undefined;
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      body = undefined;
    }
    const first = body?.errors?.[0];
    if (status === 401 || status === 403) {
      throw new LongrunClientError(
        ClientErrorCode.Unauthorized,
        `${url} refused the API key (HTTP ${status}${first?.message ? `: ${first.message}` : ''}).`,
        { status },
      );
    }
    if (first !== undefined) {
      throw new LongrunClientError(codeForErrorType(first.errorType), first.message ?? `${url} answered an error without a message.`, {
        status,
        retryable: status >= 500,
      });
    }
    if (status !== 200 || body === null || typeof body !== 'object' || typeof body.data !== 'object' || body.data === null) {
      throw new LongrunClientError(
        ClientErrorCode.ProtocolError,
        `${url} answered HTTP ${status} without a GraphQL result: ${JSON.stringify(text.slice(0, 200))}.`,
        { status, retryable: status >= 500 },
      );
    }
    return body.data as T;
  }
}
