/**
 * A fake OpenAI-compatible server for tests (what Ollama, vLLM and llama.cpp expose): `node:http`
 * on 127.0.0.1 answering `POST /v1/chat/completions` with a Server-Sent Events body
 * (`data: {json}\n\n` lines, then `data: [DONE]`), so the real `openai` SDK can be pointed at it.
 *
 * Each request takes the next script from a queue (`fake.enqueue`): an HTTP error before the
 * stream, or steps (SSE data lines, raw bytes, pauses, a stall until the client goes away, an
 * abrupt TCP reset). The fake records every request and when the client closed the connection.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { wait, writeInPieces } from './pieces.js';

/** One step of a scripted answer. `delayMs` waits before the step. */
export type OpenAIStep =
  /** One `data: <json>\n\n` event; a string is sent as is after `data: ` (e.g. `[DONE]`). */
  | { data: Record<string, unknown> | string; delayMs?: number }
  /** Bytes of the body exactly as given, for SSE framing that `data` cannot express. */
  | { raw: string; delayMs?: number }
  /** Sends nothing more until the client closes the connection. */
  | { stall: true; delayMs?: number }
  /** Resets the TCP connection (RST). */
  | { reset: true; delayMs?: number };

/** What the fake answers one request with. */
export type OpenAIScript =
  | {
      /** An HTTP error before the stream, with an OpenAI-style `{"error": {...}}` body. */
      status: number;
      message: string;
      type?: string;
    }
  | {
      steps: OpenAIStep[];
      /**
       * Write the body in pieces of at most this many bytes with a pause between, so that events
       * (and UTF-8 characters in them) are split across reads.
       */
      chunkBytes?: number;
      /**
       * Also cut the body right after the first byte of every multi-byte UTF-8 character, each piece
       * a separate write, so that no character arrives whole in one read.
       */
      splitInsideCharacters?: boolean;
    };

/** A request the fake received. */
export interface RecordedOpenAIRequest {
  path: string;
  headers: http.IncomingHttpHeaders;
  /** The parsed JSON body. */
  body: {
    model?: string;
    messages?: Array<{ role: string; content: string }>;
    stream?: boolean;
    stream_options?: { include_usage?: boolean };
    max_tokens?: number;
    temperature?: number;
    top_p?: number;
  };
  /** Resolves when the client closed the connection before the script finished the response. */
  clientClosed: Promise<void>;
  completed: boolean;
}

/** A running fake OpenAI-compatible server. */
export interface FakeOpenAI {
  /** The base URL to give the SDK: `http://127.0.0.1:<port>/v1`. */
  baseUrl: string;
  requests: RecordedOpenAIRequest[];
  enqueue(...scripts: OpenAIScript[]): void;
  close(): Promise<void>;
}

/** Starts a fake OpenAI-compatible server on 127.0.0.1, on a free port. */
export async function startFakeOpenAI(): Promise<FakeOpenAI> {
  const queue: OpenAIScript[] = [];
  const requests: RecordedOpenAIRequest[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      let finishClientClosed: () => void = () => undefined;
      const record: RecordedOpenAIRequest = {
        path: request.url ?? '',
        headers: request.headers,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as RecordedOpenAIRequest['body'],
        clientClosed: new Promise<void>((resolve) => {
          finishClientClosed = resolve;
        }),
        completed: false,
      };
      requests.push(record);
      response.on('close', () => {
        if (!record.completed) finishClientClosed();
      });
      if (request.method !== 'POST' || request.url !== '/v1/chat/completions') {
        record.completed = true;
        sendError(response, 404, `fake OpenAI: no route for ${String(request.method)} ${String(request.url)}`, 'not_found');
        return;
      }
      const script = queue.shift();
      if (script === undefined) {
        record.completed = true;
        sendError(response, 500, 'fake OpenAI: no script queued for this request', 'server_error');
        return;
      }
      void play(request.socket, response, script, record);
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;

  return {
    baseUrl,
    requests,
    enqueue: (...scripts) => queue.push(...scripts),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function sendError(response: http.ServerResponse, status: number, message: string, type: string): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify({ error: { message, type, param: null, code: null } }));
}

async function play(socket: Socket, response: http.ServerResponse, script: OpenAIScript, record: RecordedOpenAIRequest): Promise<void> {
  if ('status' in script) {
    record.completed = true;
    sendError(response, script.status, script.message, script.type ?? 'api_error');
    return;
  }
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  response.flushHeaders();
  for (const step of script.steps) {
    if (response.destroyed) return;
    if (step.delayMs !== undefined) await wait(step.delayMs);
    if (response.destroyed) return;
    if ('stall' in step) return;
    if ('reset' in step) {
      socket.resetAndDestroy();
      return;
    }
    const text = 'raw' in step ? step.raw : `data: ${typeof step.data === 'string' ? step.data : JSON.stringify(step.data)}\n\n`;
    await writeInPieces(response, Buffer.from(text, 'utf8'), script);
  }
  if (response.destroyed) return;
  record.completed = true;
  response.end();
}

/** One `chat.completion.chunk` as Ollama sends it. */
export function completionChunk(content: string, finishReason: string | null = null): Record<string, unknown> {
  return {
    id: 'chatcmpl-test',
    object: 'chat.completion.chunk',
    created: 1_730_000_000,
    model: 'llama3.2',
    system_fingerprint: 'fp_ollama',
    choices: [{ index: 0, delta: { role: 'assistant', content }, finish_reason: finishReason }],
  };
}

/** The usage chunk sent last when `stream_options.include_usage` is set. */
export function usageChunk(promptTokens: number, completionTokens: number): Record<string, unknown> {
  return {
    id: 'chatcmpl-test',
    object: 'chat.completion.chunk',
    created: 1_730_000_000,
    model: 'llama3.2',
    choices: [],
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
  };
}

/** Steps of a plain answer: the text as chunks, a finish chunk, the usage chunk and `[DONE]`. */
export function answerSteps(
  deltas: string[],
  options: { finishReason?: string; promptTokens?: number; completionTokens?: number; delayMs?: number } = {},
): OpenAIStep[] {
  const delay = options.delayMs === undefined ? {} : { delayMs: options.delayMs };
  return [
    ...deltas.map((text): OpenAIStep => ({ data: completionChunk(text), ...delay })),
    { data: completionChunk('', options.finishReason ?? 'stop') },
    { data: usageChunk(options.promptTokens ?? 9, options.completionTokens ?? deltas.length) },
    { data: '[DONE]' },
  ];
}
