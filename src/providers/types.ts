/**
 * The model provider interface. A provider turns a request into a stream of typed parts; nothing
 * above the provider knows a vendor's event names. Vendor exceptions become `error` parts at the
 * provider edge, never thrown, so the worker handles every failure the same way.
 */
import type { Message, Usage } from '../domain.js';

/** A piece of text the model produced. */
export interface TextDeltaPart {
  type: 'text-delta';
  delta: string;
}

/** The model finished normally. */
export interface FinishPart {
  type: 'finish';
  /** Why it stopped, in the vendor's words lower-cased: `end_turn`, `max_tokens`, `stop`, ... */
  stopReason: string;
  usage?: Usage | undefined;
  /** The vendor's own latency figure, where it reports one (Bedrock `metrics.latencyMs`). */
  latencyMs?: number | undefined;
}

/** The model or the connection to it failed. */
export interface ErrorPart {
  type: 'error';
  /** Stable code, e.g. `ThrottlingException`, `HttpError`, `ConnectionReset`, `ModelFailure`. */
  code: string;
  /** What failed and what to do about it, for a person. */
  message: string;
  /** True when the same request may succeed later (throttling, 5xx, connection reset). */
  isRetryable: boolean;
}

/** One part of a model's output stream. */
export type StreamPart = TextDeltaPart | FinishPart | ErrorPart;

/** What a provider is asked for: the whole history, ending with the new user message. */
export interface ModelRequest {
  /** The model; the provider's default when undefined. */
  modelId?: string | undefined;
  system?: string | undefined;
  /** Alternating user and assistant messages, ending with a user message. */
  messages: Array<Pick<Message, 'role' | 'content'>>;
  maxTokens?: number | undefined;
  temperature?: number | undefined;
  topP?: number | undefined;
  /** Aborting it must abort the underlying stream (close the HTTP connection), not merely stop reading. */
  signal: AbortSignal;
}

/**
 * A model provider. `stream` never throws for vendor failures: it yields one `error` part and ends.
 * It ends after a `finish` or `error` part; when `signal` aborts it stops promptly and may end
 * without either.
 */
export interface ModelProvider {
  /** `simulated`, `bedrock` or `openai`. */
  readonly name: string;
  /** The model used when a request names none. */
  readonly defaultModelId: string;
  stream(request: ModelRequest): AsyncIterable<StreamPart>;
  /** Releases connections the provider holds; the gateway calls it when it stops. */
  close?(): void | Promise<void>;
}
