/**
 * Amazon Bedrock through the Converse API (`ConverseStream`): one request shape for every model
 * family Bedrock hosts.
 *
 * Region, credentials and endpoint come from the AWS SDK's standard settings (AWS_REGION,
 * AWS_PROFILE, AWS_ACCESS_KEY_ID, SSO, instance roles, AWS_ENDPOINT_URL_BEDROCK_RUNTIME, ...).
 *
 * Retries: the SDK's own retries are turned off (`maxAttempts: 1`) because the SDK cannot know
 * whether text has already reached the client. This provider retries throttling, 5xx and
 * connection failures itself, with bounded backoff, and only before the first token.
 */
import {
  BedrockRuntimeClient,
  ConverseStreamCommand,
  type ConverseStreamCommandInput,
  type ConverseStreamOutput,
  type InferenceConfiguration,
} from '@aws-sdk/client-bedrock-runtime';
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

/** The model used when neither LONGRUN_MODEL_ID nor the request names one: Claude 3.5 Sonnet v2 through the US cross-region inference profile. */
export const DEFAULT_BEDROCK_MODEL_ID = 'us.anthropic.claude-3-5-sonnet-20241022-v2:0';

/** Options of `createBedrockProvider`. */
export interface BedrockProviderOptions {
  /** The model (or inference profile) used when a request names none; default `DEFAULT_BEDROCK_MODEL_ID`. */
  modelId?: string | undefined;
  /**
   * The client to call. Default: `new BedrockRuntimeClient({ maxAttempts: 1 })`, configured by the
   * SDK's standard settings. A client passed in should also have `maxAttempts: 1`, or the SDK
   * retries under this provider's retries.
   */
  client?: BedrockRuntimeClient | undefined;
  /** Retries of throttling, 5xx and connection failures before the first token (default 3). */
  maxRetries?: number | undefined;
  /** First backoff in milliseconds, doubled on each retry (default 500). */
  retryBaseMs?: number | undefined;
  /** Longest single backoff in milliseconds (default 8000). */
  maxRetryDelayMs?: number | undefined;
}

/** The Bedrock provider; `close()` releases the client's connections if the provider created the client. */
export interface BedrockProvider extends ModelProvider {
  close(): void;
}

/**
 * Creates the Bedrock provider. `stream` never throws: every Bedrock exception, HTTP error and
 * network failure becomes one `error` part whose `code` is the exception's name
 * (`ThrottlingException`, `AccessDeniedException`, `ValidationException`, ...) or, for network
 * failures, `ConnectionRefused`, `Unreachable`, `HostNotFound`, `ConnectionReset` or `Timeout`;
 * a stream that ends before `messageStop` gives `IncompleteStream`.
 */
export function createBedrockProvider(options: BedrockProviderOptions = {}): BedrockProvider {
  const ownsClient = options.client === undefined;
  const client = options.client ?? new BedrockRuntimeClient({ maxAttempts: 1 });
  const defaultModelId = options.modelId ?? DEFAULT_BEDROCK_MODEL_ID;
  const policy: RetryPolicy = {
    maxRetries: options.maxRetries ?? defaultRetryPolicy.maxRetries,
    retryBaseMs: options.retryBaseMs ?? defaultRetryPolicy.retryBaseMs,
    maxDelayMs: options.maxRetryDelayMs ?? defaultRetryPolicy.maxDelayMs,
  };

  return {
    name: 'bedrock',
    defaultModelId,
    stream(request: ModelRequest): AsyncIterable<StreamPart> {
      const input = converseInput(request, request.modelId ?? defaultModelId);
      return retryBeforeFirstToken(() => streamOnce(client, input, request.signal), policy, request.signal);
    },
    close(): void {
      if (ownsClient) client.destroy();
    },
  };
}

/** The Converse request for `request`: the whole history, the system prompt and the inference settings given. */
export function converseInput(request: Omit<ModelRequest, 'signal'>, modelId: string): ConverseStreamCommandInput {
  const inferenceConfig: InferenceConfiguration = {};
  if (request.maxTokens !== undefined) inferenceConfig.maxTokens = request.maxTokens;
  if (request.temperature !== undefined) inferenceConfig.temperature = request.temperature;
  if (request.topP !== undefined) inferenceConfig.topP = request.topP;
  return {
    modelId,
    messages: request.messages.map((message) => ({ role: message.role, content: [{ text: message.content }] })),
    ...(request.system !== undefined && request.system !== '' ? { system: [{ text: request.system }] } : {}),
    ...(Object.keys(inferenceConfig).length > 0 ? { inferenceConfig } : {}),
  };
}

/** One ConverseStream call, its events as parts; failures become one `error` part. */
async function* streamOnce(
  client: BedrockRuntimeClient,
  input: ConverseStreamCommandInput,
  requestSignal: AbortSignal,
): AsyncGenerator<StreamPart> {
  if (requestSignal.aborted) return;
  const attemptAbort = attemptController(requestSignal);

  let stopReason: string | undefined;
  let usage: Usage | undefined;
  let latencyMs: number | undefined;
  try {
    const command = new ConverseStreamCommand(input);
    const body = watchResponseBody(command);
    const response = await client.send(command, { abortSignal: attemptAbort.signal });
    if (response.stream === undefined) {
      yield incompleteStream(input.modelId);
      return;
    }
    for await (const event of untilAborted<ConverseStreamOutput>(response.stream, attemptAbort.signal)) {
      const text = event.contentBlockDelta?.delta?.text;
      if (text !== undefined) {
        yield { type: 'text-delta', delta: text };
      } else if (event.messageStop !== undefined) {
        stopReason = (event.messageStop.stopReason ?? 'end_turn').toLowerCase();
      } else if (event.metadata !== undefined) {
        const reported = event.metadata.usage;
        if (reported?.inputTokens !== undefined && reported.outputTokens !== undefined) {
          usage = { inputTokens: reported.inputTokens, outputTokens: reported.outputTokens };
        }
        latencyMs = event.metadata.metrics?.latencyMs;
        // metadata is the last event Bedrock sends; finishing here does not wait for the
        // connection to wind down.
        if (stopReason !== undefined) {
          yield { type: 'finish', stopReason, usage, latencyMs };
          return;
        }
      } else {
        // The SDK throws modelled exception events, but the union also allows them as members.
        const exception = exceptionMember(event);
        if (exception !== undefined) {
          yield describeBedrockFailure(exception, { modelId: input.modelId, region: await regionOf(client) });
          return;
        }
      }
    }
    if (attemptAbort.signal.aborted) return;
    if (stopReason !== undefined) {
      yield { type: 'finish', stopReason, usage, latencyMs };
    } else if (body.cut()) {
      yield connectionCut(input.modelId, await regionOf(client));
    } else {
      yield incompleteStream(input.modelId);
    }
  } catch (error) {
    if (attemptAbort.signal.aborted) return;
    yield describeBedrockFailure(error, { modelId: input.modelId, region: await regionOf(client) });
  } finally {
    attemptAbort.release();
  }
}

/**
 * Watches the HTTP response body of one command. When the connection is cut mid-stream, the SDK's
 * event iteration just ends as if the stream were complete; only the body, closed without having
 * ended, tells a cut connection from a finished one.
 */
function watchResponseBody(command: ConverseStreamCommand): { cut: () => boolean } {
  let body: { readableEnded?: unknown } | undefined;
  command.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      const candidate = (result.response as { body?: unknown } | undefined)?.body;
      if (typeof candidate === 'object' && candidate !== null) body = candidate as { readableEnded?: unknown };
      return result;
    },
    { step: 'deserialize', name: 'longrunWatchResponseBody' },
  );
  // A body that is not a Node.js stream (no `readableEnded`) cannot tell, and is taken as ended.
  return { cut: () => body?.readableEnded === false };
}

function connectionCut(modelId: string | undefined, region: string | undefined): ErrorPart {
  return {
    type: 'error',
    code: 'ConnectionReset',
    message: `The connection to Amazon Bedrock in ${region ?? 'the configured region'} was cut before the answer of ${modelId ?? DEFAULT_BEDROCK_MODEL_ID} finished; the answer is cut short. Try again; if it repeats, check the network path (proxy, VPC endpoint) to Bedrock.`,
    isRetryable: true,
  };
}

function incompleteStream(modelId: string | undefined): ErrorPart {
  return {
    type: 'error',
    code: 'IncompleteStream',
    message: `The answer stream of Bedrock model ${modelId ?? '(default)'} ended before the model said it had finished (no messageStop event); the answer may be cut short. Try again.`,
    isRetryable: true,
  };
}

function exceptionMember(event: ConverseStreamOutput): (Error & { name: string }) | undefined {
  const members = [
    ['internalServerException', event.internalServerException],
    ['modelStreamErrorException', event.modelStreamErrorException],
    ['validationException', event.validationException],
    ['throttlingException', event.throttlingException],
    ['serviceUnavailableException', event.serviceUnavailableException],
  ] as const;
  for (const [member, value] of members) {
    if (value !== undefined) {
      const error = new Error(value.message ?? member);
      error.name = member.charAt(0).toUpperCase() + member.slice(1);
      return Object.assign(error, value);
    }
  }
  return undefined;
}

async function regionOf(client: BedrockRuntimeClient): Promise<string | undefined> {
  try {
    return await client.config.region();
  } catch {
    return undefined;
  }
}

/** Where a Bedrock failure happened, for the message. */
export interface BedrockFailureContext {
  modelId: string | undefined;
  region: string | undefined;
}

/**
 * Turns anything the Bedrock SDK throws into an `error` part: `code` is the exception name (or the
 * network failure kind), `message` says what failed and what to do, `isRetryable` is true for
 * throttling, 5xx, model-not-ready/time-out and connection failures.
 */
export function describeBedrockFailure(error: unknown, context: BedrockFailureContext): ErrorPart {
  const model = context.modelId ?? DEFAULT_BEDROCK_MODEL_ID;
  const region = context.region ?? 'the configured region';
  const name = error instanceof Error ? error.name : 'Error';
  const detail = vendorDetail(error);
  const status = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
  const part = (code: string, message: string, isRetryable: boolean): ErrorPart => ({
    type: 'error',
    code,
    message,
    isRetryable,
  });

  switch (name) {
    case 'ThrottlingException':
      return part(
        name,
        `Amazon Bedrock is throttling requests to ${model} in ${region} (ThrottlingException: ${detail}). The account's requests-per-minute or tokens-per-minute quota for this model is used up: wait a minute and try again, use a cross-region inference profile (for example the "us." model ID) to spread load, or ask for a higher quota in the Service Quotas console under Amazon Bedrock.`,
        true,
      );
    case 'ServiceQuotaExceededException':
      return part(
        name,
        `Amazon Bedrock refused the request to ${model} because an account quota is exceeded (ServiceQuotaExceededException: ${detail}). Ask for a higher quota in the Service Quotas console under Amazon Bedrock, in ${region}.`,
        false,
      );
    case 'ServiceUnavailableException':
      return part(
        name,
        `Amazon Bedrock is temporarily unavailable for ${model} in ${region} (ServiceUnavailableException: ${detail}). Try again in a moment; a cross-region inference profile spreads requests over several regions.`,
        true,
      );
    case 'InternalServerException':
      return part(
        name,
        `Amazon Bedrock had an internal error while serving ${model} (InternalServerException: ${detail}). Try again; if it keeps happening, check the AWS Health Dashboard for ${region}.`,
        true,
      );
    case 'ModelStreamErrorException': {
      const original = error as { originalStatusCode?: number; originalMessage?: string };
      const cause =
        original.originalMessage !== undefined
          ? ` The model reported${original.originalStatusCode === undefined ? '' : ` status ${original.originalStatusCode}`}: ${original.originalMessage}.`
          : '';
      return part(
        name,
        `Model ${model} failed while streaming its answer (ModelStreamErrorException: ${detail}).${cause} The text received so far is kept; try again.`,
        true,
      );
    }
    case 'ModelTimeoutException':
      return part(
        name,
        `Model ${model} took too long to answer (ModelTimeoutException: ${detail}). Try again, or ask for a shorter answer (lower maxTokens).`,
        true,
      );
    case 'ModelNotReadyException':
      return part(
        name,
        `Model ${model} is not ready to serve requests yet (ModelNotReadyException: ${detail}). Try again in a few seconds.`,
        true,
      );
    case 'ModelErrorException':
      return part(
        name,
        `Model ${model} failed to process the request (ModelErrorException: ${detail}). Try again; if it repeats, the prompt may be something this model cannot handle.`,
        false,
      );
    case 'AccessDeniedException':
      return part(
        name,
        `Amazon Bedrock denied access to ${model} in ${region} (AccessDeniedException: ${detail}). Check two things. Model access: open the model in the Bedrock console's Model catalog in ${region} (Anthropic models ask first-time users for use-case details once; older consoles have a "Model access" page where it must be enabled, for an inference profile in every region it routes to). IAM: the identity needs bedrock:InvokeModelWithResponseStream on the inference profile ARN and on the foundation-model ARNs in every region the profile routes to, and no Service Control Policy may deny them. See docs/providers.md.`,
        false,
      );
    case 'ResourceNotFoundException':
      return part(
        name,
        `Amazon Bedrock has no model ${model} in ${region} (ResourceNotFoundException: ${detail}). Check LONGRUN_MODEL_ID and AWS_REGION: cross-region inference profile IDs start with a geography prefix such as "us." or "eu." that must match the region, and not every model is offered in every region.`,
        false,
      );
    case 'ValidationException': {
      const advice = /on-demand throughput/i.test(detail)
        ? `This model cannot be called by its plain model ID in ${region}: use the ID of an inference profile that contains it instead (for example "us.${model.replace(/^(us|eu|apac|us-gov)\./, '')}"), and set LONGRUN_MODEL_ID to it.`
        : /model identifier is invalid|model id/i.test(detail)
          ? `Check LONGRUN_MODEL_ID (and the request's modelId): it must be a Bedrock model ID or inference profile ID available in ${region}.`
          : `Check LONGRUN_MODEL_ID and the turn's maxTokens, temperature and topP against what ${model} accepts.`;
      return part(name, `Amazon Bedrock rejected the request to ${model} as invalid (ValidationException: ${detail}). ${advice}`, false);
    }
    case 'UnrecognizedClientException':
    case 'InvalidSignatureException':
    case 'ExpiredTokenException':
    case 'IncompleteSignatureException':
    case 'CredentialsProviderError':
      return part(
        name,
        `AWS did not accept the credentials used to call Bedrock (${name}: ${detail}). Check AWS_PROFILE or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or renew an expired session (for SSO: aws sso login).`,
        false,
      );
    default:
      break;
  }

  const network = classifyNetworkError(networkErrorCode(error)) ?? (isHttp2StreamReset(error) ? classifyNetworkError('ECONNRESET') : undefined);
  if (network !== undefined && status === undefined) {
    const what =
      network.code === 'ConnectionReset'
        ? `The connection to Amazon Bedrock in ${region} was cut before the answer finished`
        : network.code === 'Timeout'
          ? `The connection to Amazon Bedrock in ${region} timed out`
          : network.code === 'HostNotFound'
            ? `The Amazon Bedrock endpoint for ${region} could not be found (DNS)`
            : `The Amazon Bedrock endpoint for ${region} is not reachable`;
    const todo =
      network.code === 'ConnectionReset' || network.code === 'Timeout'
        ? 'Try again; if it repeats, check the network path (proxy, VPC endpoint) to Bedrock.'
        : 'Check AWS_REGION and, if set, AWS_ENDPOINT_URL_BEDROCK_RUNTIME, and that this machine can reach it (proxy, VPC endpoint, firewall).';
    return part(network.code, `${what} (${network.nodeCode}: ${messageOf(error)}). ${todo}`, network.isRetryable);
  }

  if (name === 'TimeoutError') {
    return part('Timeout', `The call to Amazon Bedrock in ${region} timed out (${detail}). Try again.`, true);
  }
  if (/region is missing/i.test(detail)) {
    return part(
      'RegionMissing',
      'No AWS region is configured for Bedrock. Set AWS_REGION (for example us-east-1) or a region in the AWS profile.',
      false,
    );
  }
  if (/credential/i.test(name) || /could not load credentials/i.test(detail)) {
    return part(
      'CredentialsProviderError',
      `No AWS credentials were found to call Bedrock (${detail}). Set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on a machine with an IAM role.`,
      false,
    );
  }
  if (status !== undefined) {
    const retryable = status >= 500 || status === 429;
    return part(
      name === 'Error' ? 'HttpError' : name,
      `Amazon Bedrock answered HTTP ${status} for ${model} in ${region} (${name}: ${detail}). ${retryable ? 'Try again in a moment.' : 'Check LONGRUN_MODEL_ID, AWS_REGION and the IAM permissions described in docs/providers.md.'}`,
      retryable,
    );
  }
  return part(
    name === 'Error' ? 'BedrockError' : name,
    `The call to Amazon Bedrock (${model} in ${region}) failed (${name}: ${detail}).`,
    false,
  );
}

function vendorDetail(error: unknown): string {
  const message = messageOf(error).trim();
  return message === '' || message === 'UnknownError' ? 'no details given' : message.replace(/\.$/, '');
}

function isHttp2StreamReset(error: unknown): boolean {
  // @smithy/node-http-handler reports a reset HTTP/2 stream with a plain Error and no code.
  return error instanceof Error && /HTTP\/2 stream is abnormally aborted|premature close|socket hang up|other side closed/i.test(error.message);
}
