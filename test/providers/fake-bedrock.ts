/**
 * A fake Amazon Bedrock runtime for tests: a cleartext HTTP/2 (h2c) server on 127.0.0.1 that
 * answers `POST /model/{modelId}/converse-stream` with AWS event-stream frames, exactly as the real
 * service does, so the real `@aws-sdk/client-bedrock-runtime` can be pointed at it.
 *
 * Each request takes the next script from a queue (`fake.enqueue`). A script is an HTTP error
 * before the stream, or a list of steps: event frames, exception frames, pauses, a stall until the
 * client goes away, or an abrupt TCP reset. The fake records every request body and when the
 * client closed its stream.
 */
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { wait, writeInPieces } from './pieces.js';

const codec = new EventStreamCodec(toUtf8, fromUtf8);

/** One step of a scripted answer. `delayMs` waits before the step. */
export type BedrockStep =
  | { event: BedrockEventType; body: Record<string, unknown>; delayMs?: number }
  | { exception: BedrockExceptionType; body: Record<string, unknown>; delayMs?: number }
  /** Sends nothing more until the client closes the stream. */
  | { stall: true; delayMs?: number }
  /** Resets the TCP connection (RST), as a crashed load balancer would. */
  | { reset: true; delayMs?: number };

/** Event types of ConverseStream. */
export type BedrockEventType =
  | 'messageStart'
  | 'contentBlockStart'
  | 'contentBlockDelta'
  | 'contentBlockStop'
  | 'messageStop'
  | 'metadata';

/** Exception events ConverseStream may send in the middle of a stream. */
export type BedrockExceptionType =
  | 'throttlingException'
  | 'modelStreamErrorException'
  | 'validationException'
  | 'serviceUnavailableException'
  | 'internalServerException';

/** What the fake answers one request with. */
export type BedrockScript =
  | {
      /** An HTTP error before any stream, e.g. 403 with `AccessDeniedException`. */
      status: number;
      errorType: string;
      message: string;
    }
  | {
      steps: BedrockStep[];
      /**
       * Write the encoded frames in pieces of at most this many bytes, each a separate DATA write
       * with a pause between, so frames (and UTF-8 characters in them) are split across reads.
       */
      chunkBytes?: number;
      /**
       * Also cut the body right after the first byte of every multi-byte UTF-8 character, each piece
       * a separate write, so that no character arrives whole in one read.
       */
      splitInsideCharacters?: boolean;
    };

/** A request the fake received. */
export interface RecordedBedrockRequest {
  /** The model ID from the path, URL-decoded. */
  modelId: string;
  path: string;
  headers: http2.IncomingHttpHeaders;
  /** The parsed JSON body. */
  body: {
    messages?: Array<{ role: string; content: Array<{ text: string }> }>;
    system?: Array<{ text: string }>;
    inferenceConfig?: { maxTokens?: number; temperature?: number; topP?: number };
  };
  /** Resolves when the stream closed before the script finished it: the client went away. */
  clientClosed: Promise<void>;
  /** True once the script ran to its end and the server ended the response. */
  completed: boolean;
}

/** A running fake Bedrock runtime. */
export interface FakeBedrock {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  requests: RecordedBedrockRequest[];
  /** Queues the answer to the next request. */
  enqueue(...scripts: BedrockScript[]): void;
  /** A real Bedrock runtime client pointed at this fake, with static test credentials and `maxAttempts: 1`. */
  client(): BedrockRuntimeClient;
  close(): Promise<void>;
}

/** Starts a fake Bedrock runtime on 127.0.0.1, on a free port. */
export async function startFakeBedrock(): Promise<FakeBedrock> {
  const queue: BedrockScript[] = [];
  const requests: RecordedBedrockRequest[] = [];
  const sockets = new Set<Socket>();
  const clients: BedrockRuntimeClient[] = [];
  const server = http2.createServer();

  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path'] ?? '');
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const match = /^\/model\/([^/]+)\/converse-stream$/.exec(path);
      let finishClientClosed: () => void = () => undefined;
      const record: RecordedBedrockRequest = {
        modelId: match?.[1] === undefined ? '' : decodeURIComponent(match[1]),
        path,
        headers,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as RecordedBedrockRequest['body'],
        clientClosed: new Promise<void>((resolve) => {
          finishClientClosed = resolve;
        }),
        completed: false,
      };
      requests.push(record);
      stream.on('close', () => {
        if (!record.completed) finishClientClosed();
      });
      if (headers[':method'] !== 'POST' || match === null) {
        respondError(stream, 404, 'UnknownOperationException', `fake Bedrock: no route for ${String(headers[':method'])} ${path}`);
        record.completed = true;
        return;
      }
      const script = queue.shift();
      if (script === undefined) {
        respondError(stream, 500, 'InternalServerException', 'fake Bedrock: no script queued for this request');
        record.completed = true;
        return;
      }
      void play(stream, script, record);
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    requests,
    enqueue: (...scripts) => queue.push(...scripts),
    client() {
      const client = new BedrockRuntimeClient({
        region: 'us-east-1',
        endpoint: url,
        credentials: { accessKeyId: 'AKIDFAKEBEDROCKTEST', secretAccessKey: 'fake-secret-for-tests' },
        maxAttempts: 1,
      });
      clients.push(client);
      return client;
    },
    async close() {
      for (const client of clients) client.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Encodes one event frame as Bedrock sends it. */
export function eventFrame(eventType: string, body: Record<string, unknown>): Uint8Array {
  return codec.encode({
    headers: {
      ':event-type': { type: 'string', value: eventType },
      ':content-type': { type: 'string', value: 'application/json' },
      ':message-type': { type: 'string', value: 'event' },
    },
    body: fromUtf8(JSON.stringify(body)),
  });
}

/** Encodes one exception frame as Bedrock sends it. */
export function exceptionFrame(exceptionType: string, body: Record<string, unknown>): Uint8Array {
  return codec.encode({
    headers: {
      ':exception-type': { type: 'string', value: exceptionType },
      ':content-type': { type: 'string', value: 'application/json' },
      ':message-type': { type: 'string', value: 'exception' },
    },
    body: fromUtf8(JSON.stringify(body)),
  });
}

function respondError(stream: http2.ServerHttp2Stream, status: number, errorType: string, message: string): void {
  if (stream.destroyed) return;
  // Bedrock names the error in x-amzn-errortype (with a namespace suffix) and puts the text in the body.
  stream.respond({
    ':status': status,
    'content-type': 'application/json',
    'x-amzn-errortype': `${errorType}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
    'x-amzn-requestid': 'fake-request-id',
  });
  stream.end(JSON.stringify({ message }));
}

async function play(stream: http2.ServerHttp2Stream, script: BedrockScript, record: RecordedBedrockRequest): Promise<void> {
  if ('status' in script) {
    respondError(stream, script.status, script.errorType, script.message);
    record.completed = true;
    return;
  }
  stream.respond({
    ':status': 200,
    'content-type': 'application/vnd.amazon.eventstream',
    'x-amzn-requestid': 'fake-request-id',
  });
  for (const step of script.steps) {
    if (stream.destroyed || stream.closed) return;
    if (step.delayMs !== undefined) await wait(step.delayMs);
    if (stream.destroyed || stream.closed) return;
    if ('stall' in step) return; // the stream stays open until the client closes it
    if ('reset' in step) {
      const socket = stream.session?.socket as unknown as Socket | undefined;
      socket?.resetAndDestroy();
      return;
    }
    const frame = 'event' in step ? eventFrame(step.event, step.body) : exceptionFrame(step.exception, step.body);
    await writeInPieces(stream, frame, script);
  }
  if (stream.destroyed || stream.closed) return;
  record.completed = true;
  stream.end();
}

/** Steps of a plain answer: the text as deltas, then stop and metadata. */
export function answerSteps(
  deltas: string[],
  options: { stopReason?: string; inputTokens?: number; outputTokens?: number; latencyMs?: number; delayMs?: number } = {},
): BedrockStep[] {
  const delay = options.delayMs === undefined ? {} : { delayMs: options.delayMs };
  return [
    { event: 'messageStart', body: { role: 'assistant' } },
    ...deltas.map((text): BedrockStep => ({ event: 'contentBlockDelta', body: { contentBlockIndex: 0, delta: { text } }, ...delay })),
    { event: 'contentBlockStop', body: { contentBlockIndex: 0 } },
    { event: 'messageStop', body: { stopReason: options.stopReason ?? 'end_turn' } },
    {
      event: 'metadata',
      body: {
        usage: {
          inputTokens: options.inputTokens ?? 12,
          outputTokens: options.outputTokens ?? deltas.length,
          totalTokens: (options.inputTokens ?? 12) + (options.outputTokens ?? deltas.length),
        },
        metrics: { latencyMs: options.latencyMs ?? 321 },
      },
    },
  ];
}
