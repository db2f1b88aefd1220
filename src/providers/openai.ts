/**
 * OpenAI-compatible chat servers: a local Ollama, vLLM, llama.cpp's server, LM Studio, or OpenAI
 * itself, through the `openai` SDK's streaming Chat Completions.
 *
 * Retries: the SDK's own retries are turned off (`maxRetries: 0`) because the SDK cannot know
 * whether text has already reached the client. This provider retries 429, 5xx and connection
 * failures itself, with bounded backoff, and only before the first token.
 */
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import type { ChatCompletionChunk, ChatCompletionCreateParamsStreaming, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import type { Usage } from '../domain.js';
import {
  attemptController,
  classifyNetworkError,
  defaultRetryPolicy,
  messageOf,
  networkErrorCode,
  retryBeforeFirstToken,
  untilAborted,
  type RetryPolicy,
} from './retry.js';
import type { ErrorPart, ModelProvider, ModelRequest, StreamPart } from './types.js';

/** The server used when OPENAI_BASE_URL is unset: a local Ollama. */
export const DEFAULT_OPENAI_BASE_URL = 'http://127.0.0.1:11434/v1';
/** The model used when neither LONGRUN_MODEL_ID nor the request names one (Ollama's `llama3.2`). */
export const DEFAULT_OPENAI_MODEL_ID = 'llama3.2';
// Local servers ignore the key, but the SDK refuses to start without one.
const PLACEHOLDER_API_KEY = 'not-needed';

/** Options of `createOpenAIProvider`. */
export interface OpenAIProviderOptions {
  /** The server's base URL, usually ending in `/v1` (OPENAI_BASE_URL); default `DEFAULT_OPENAI_BASE_URL`. */
  baseUrl?: string | undefined;
  /** The API key (OPENAI_API_KEY); a placeholder when unset, which local servers ignore. */
  apiKey?: string | undefined;
  /** The model used when a request names none (LONGRUN_MODEL_ID); default `DEFAULT_OPENAI_MODEL_ID`. */
  modelId?: string | undefined;
  /** Retries of 429, 5xx and connection failures before the first token (default 3). */
  maxRetries?: number | undefined;
  /** First backoff in milliseconds, doubled on each retry (default 500). */
  retryBaseMs?: number | undefined;
  /** Longest single backoff in milliseconds (default 8000). */
  maxRetryDelayMs?: number | undefined;
  /** The `fetch` the SDK uses; the global one by default. */
  fetch?: typeof fetch | undefined;
}

/**
 * Creates the OpenAI-compatible provider. `stream` never throws: failures become one `error` part
 * with `code` `AuthenticationError` (401), `PermissionDeniedError` (403), `NotFoundError` (404),
 * `RateLimitError` (429), `BadRequestError` (400), `UnprocessableEntityError` (422),
 * `InternalServerError` (5xx), `HttpError` (other statuses), `ModelFailure` (an error event in the
 * stream), `ConnectionRefused`, `Unreachable`, `HostNotFound`, `ConnectionReset`, `Timeout`, or
 * `IncompleteStream` (the stream ended without a finish reason).
 */
export function createOpenAIProvider(options: OpenAIProviderOptions = {}): ModelProvider {
  const baseUrl = (options.baseUrl ?? DEFAULT_OPENAI_BASE_URL).replace(/\/+$/, '');
  const defaultModelId = options.modelId ?? DEFAULT_OPENAI_MODEL_ID;
  const client = new OpenAI({
    baseURL: baseUrl,
    apiKey: options.apiKey ?? PLACEHOLDER_API_KEY,
    maxRetries: 0,
    // Organisation and project headers from the environment mean nothing to a local server.
    organization: null,
    project: null,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  const policy: RetryPolicy = {
    maxRetries: options.maxRetries ?? defaultRetryPolicy.maxRetries,
    retryBaseMs: options.retryBaseMs ?? defaultRetryPolicy.retryBaseMs,
    maxDelayMs: options.maxRetryDelayMs ?? defaultRetryPolicy.maxDelayMs,
  };

  return {
    name: 'openai',
    defaultModelId,
    stream(request: ModelRequest): AsyncIterable<StreamPart> {
      const body = chatCompletionBody(request, request.modelId ?? defaultModelId);
      const context = { baseUrl, modelId: body.model };
      return retryBeforeFirstToken(() => streamOnce(client, body, context, request.signal), policy, request.signal);
    },
  };
}

/** The Chat Completions request for `request`: system prompt first, then the whole history. */
export function chatCompletionBody(request: Omit<ModelRequest, 'signal'>, modelId: string): ChatCompletionCreateParamsStreaming {
  const messages: ChatCompletionMessageParam[] = [];
  if (request.system !== undefined && request.system !== '') messages.push({ role: 'system', content: request.system });
  for (const message of request.messages) messages.push({ role: message.role, content: message.content });
  return {
    model: modelId,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    // `max_tokens`, not `max_completion_tokens`: Ollama, vLLM and llama.cpp all understand it.
    ...(request.maxTokens === undefined ? {} : { max_tokens: request.maxTokens }),
    ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
    ...(request.topP === undefined ? {} : { top_p: request.topP }),
  };
}

/** Where an OpenAI-compatible failure happened, for the message. */
export interface OpenAIFailureContext {
  baseUrl: string;
  modelId: string;
}

async function* streamOnce(
  client: OpenAI,
  body: ChatCompletionCreateParamsStreaming,
  context: OpenAIFailureContext,
  requestSignal: AbortSignal,
): AsyncGenerator<StreamPart> {
  if (requestSignal.aborted) return;
  const attemptAbort = attemptController(requestSignal);

  let finishReason: string | undefined;
  let usage: Usage | undefined;
  try {
    const stream = await client.chat.completions.create(body, { signal: attemptAbort.signal });
    for await (const chunk of untilAborted<ChatCompletionChunk>(stream, attemptAbort.signal)) {
      const choice = chunk.choices?.[0];
      const text = choice?.delta?.content;
      if (typeof text === 'string' && text.length > 0) yield { type: 'text-delta', delta: text };
      if (choice?.finish_reason) finishReason = choice.finish_reason.toLowerCase();
      if (chunk.usage) usage = { inputTokens: chunk.usage.prompt_tokens, outputTokens: chunk.usage.completion_tokens };
    }
    if (attemptAbort.signal.aborted) return;
    // The usage chunk comes after the chunk with the finish reason, so finish only at the end.
    yield finishReason !== undefined ? { type: 'finish', stopReason: finishReason, usage } : incompleteStream(context);
  } catch (error) {
    if (attemptAbort.signal.aborted || error instanceof APIUserAbortError) return;
    yield describeOpenAIFailure(error, context);
  } finally {
    attemptAbort.release();
  }
}

function incompleteStream(context: OpenAIFailureContext): ErrorPart {
  return {
    type: 'error',
    code: 'IncompleteStream',
    message: `The answer stream of model ${context.modelId} from ${context.baseUrl} ended without a finish reason; the answer may be cut short. Try again; if it repeats, check the server's log.`,
    isRetryable: true,
  };
}

/**
 * Turns anything the `openai` SDK throws into an `error` part: `code` names the failure (see
 * `createOpenAIProvider`), `message` says what failed and what to do, `isRetryable` is true for
 * 408, 409, 429, 5xx, error events in the stream and connection failures.
 */
export function describeOpenAIFailure(error: unknown, context: OpenAIFailureContext): ErrorPart {
  const { baseUrl, modelId } = context;
  const part = (code: string, message: string, isRetryable: boolean): ErrorPart => ({ type: 'error', code, message, isRetryable });

  if (error instanceof APIConnectionTimeoutError) {
    return part('Timeout', `The model server at ${baseUrl} did not start answering in time (${messageOf(error)}). Try again; a large model may still be loading.`, true);
  }
  const network = classifyNetworkError(networkErrorCode(error)) ?? (isCutConnection(error) ? classifyNetworkError('ECONNRESET') : undefined);
  if (network !== undefined && (error instanceof APIConnectionError || !(error instanceof APIError))) {
    const cause = `${network.nodeCode}: ${innermostMessage(error)}`;
    switch (network.code) {
      case 'ConnectionRefused':
      case 'Unreachable':
        return part(
          network.code,
          `The model server at ${baseUrl} is not reachable (${cause}). Start it (for Ollama: "ollama serve"), or set OPENAI_BASE_URL to the address it listens on.`,
          network.isRetryable,
        );
      case 'HostNotFound':
        return part(network.code, `The host of the model server ${baseUrl} was not found (${cause}). Check OPENAI_BASE_URL.`, network.isRetryable);
      case 'Timeout':
        return part(network.code, `The connection to the model server at ${baseUrl} timed out (${cause}). Try again.`, network.isRetryable);
      case 'ConnectionReset':
        return part(
          network.code,
          `The connection to the model server at ${baseUrl} was cut before the answer finished (${cause}). Try again; if it repeats, check the server's log (it may have crashed or run out of memory).`,
          network.isRetryable,
        );
    }
  }
  if (error instanceof APIConnectionError) {
    return part(
      'ConnectionRefused',
      `The model server at ${baseUrl} is not reachable (${innermostMessage(error)}). Start it, or set OPENAI_BASE_URL to the address it listens on.`,
      true,
    );
  }
  if (error instanceof APIError) {
    const detail = apiErrorDetail(error);
    const status = error.status;
    if (status === undefined) {
      // The server sent an error event in the middle of the stream.
      return part('ModelFailure', `Model ${modelId} at ${baseUrl} failed while streaming its answer (${detail}). Try again.`, true);
    }
    if (status === 401 || status === 403) {
      return part(
        status === 401 ? 'AuthenticationError' : 'PermissionDeniedError',
        `The model server at ${baseUrl} refused the API key (${status}: ${detail}). Set OPENAI_API_KEY to a key this server accepts${status === 403 ? ' and that may use model ' + modelId : ''}; local servers such as Ollama need none.`,
        false,
      );
    }
    if (status === 404) {
      return part(
        'NotFoundError',
        `The model server at ${baseUrl} does not have model "${modelId}" (404: ${detail}). For Ollama, download it with "ollama pull ${modelId}"; otherwise set LONGRUN_MODEL_ID to a model the server lists at ${baseUrl}/models. If that list is not found either, OPENAI_BASE_URL is wrong (it usually ends in /v1).`,
        false,
      );
    }
    if (status === 429) {
      return part(
        'RateLimitError',
        `The model server at ${baseUrl} is rate limiting requests (429: ${detail}). Wait and try again, or raise the key's rate limit or quota.`,
        true,
      );
    }
    if (status >= 500) {
      return part(
        'InternalServerError',
        `The model server at ${baseUrl} failed with HTTP ${status} (${detail}). Try again; if it repeats, check the server's log (for example, not enough memory to load ${modelId}).`,
        true,
      );
    }
    if (status === 400 || status === 422) {
      return part(
        status === 400 ? 'BadRequestError' : 'UnprocessableEntityError',
        `The model server at ${baseUrl} rejected the request (${status}: ${detail}). Check LONGRUN_MODEL_ID and the turn's maxTokens, temperature and topP against what ${modelId} accepts.`,
        false,
      );
    }
    return part('HttpError', `The model server at ${baseUrl} answered HTTP ${status} (${detail}).`, status === 408 || status === 409);
  }
  return part(
    'ModelFailure',
    `The call to the model server at ${baseUrl} failed (${error instanceof Error ? error.name + ': ' : ''}${messageOf(error)}).`,
    false,
  );
}

function apiErrorDetail(error: APIError): string {
  const body = error.error as { message?: unknown } | undefined;
  const message = typeof body?.message === 'string' ? body.message : error.message.replace(/^\d{3} /, '');
  return message.trim() === '' ? 'no details given' : message.trim().replace(/\.$/, '');
}

function innermostMessage(error: unknown): string {
  let current: unknown = error;
  let message = messageOf(error);
  while (current instanceof Error) {
    if (current.message) message = current.message;
    current = current.cause;
  }
  return message;
}

function isCutConnection(error: unknown): boolean {
  // undici reports a body cut short as `TypeError: terminated`, with the socket error as cause.
  return error instanceof TypeError && /terminated|other side closed/i.test(error.message);
}
