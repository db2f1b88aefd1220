/**
 * The gateway's Prometheus metrics, on a registry of their own (never prom-client's global one, so
 * two gateways in one process, as in the tests, do not share counters). `GET /metrics` serves them
 * in the Prometheus text format; it needs no API key, like the health check, so bind the gateway
 * to a private address (the default, 127.0.0.1) when the figures should stay private.
 *
 * | metric                                   | kind      | what it counts                                              |
 * |------------------------------------------|-----------|-------------------------------------------------------------|
 * | `longrun_time_to_first_token_seconds`    | histogram | turn start in the worker → the model's first text delta     |
 * | `longrun_delivery_lag_seconds`           | histogram | an event's `createdAt` → handed to every subscriber's socket |
 * | `longrun_tokens_total`                   | counter   | text deltas the model produced (`rate()` gives tokens/s)    |
 * | `longrun_events_published_total{type}`   | counter   | events published, by CHUNK, COMPLETE, ERROR, CANCELLED      |
 * | `longrun_errors_total{errorCode}`        | counter   | ERROR events by their code, and `PublishFailed`             |
 * | `longrun_active_turns`, `longrun_queued_turns` | gauge | turns running and waiting for a slot                       |
 * | `longrun_connections`                    | gauge     | open WebSocket connections, both realtime endpoints          |
 * | `longrun_subscriptions`                  | gauge     | subscriptions registered in the fan-out                      |
 *
 * plus prom-client's default process metrics (`process_*`, `nodejs_*`: CPU, RSS, heap, GC, event
 * loop lag). Gauges are read from the gateway's services when scraped, so they cost nothing between
 * scrapes; the counters and histograms cost one increment or observation per event, except the
 * token counter: a text delta only adds one to a plain number, which is added to the counter when
 * it is scraped.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RouteHandler } from './gateway/http.js';
import type { StreamPart } from './providers/types.js';
import type { Publisher } from './publisher/types.js';

/** Where the gauges are read from at scrape time: the gateway's invoker, hub and socket adapter. */
export interface MetricSources {
  invoker: { readonly running: number; readonly queued: number };
  hub: { readonly size: number };
  sockets: { readonly sockets: number };
}

/** The metrics of one gateway and the hooks that feed them. */
export interface GatewayMetrics {
  /** The registry holding every metric below (not prom-client's global registry). */
  readonly registry: Registry;
  /** Serves `GET` and `HEAD /metrics` in the Prometheus text format; declines every other request. */
  readonly route: RouteHandler;
  /**
   * Returns a new `onPart` hook for one turn (`runInvocation`'s `onPart`): it counts text deltas
   * and observes the time to the first one. Call it once per turn.
   */
  observeTurn(): (part: StreamPart, elapsedMs: number) => void;
  /** What `observeTurn` hooks saw elsewhere (in a turn thread): text deltas, and each turn's time to its first one. */
  recordParts(tokens: number, firstTokenMs: readonly number[]): void;
  /**
   * Wraps a publisher: counts the events it publishes by type, ERROR events by `errorCode`, and
   * observes each event's delivery lag once the inner publisher has handed it to the subscribers.
   * A failed publish counts as `PublishFailed` and rejects as before.
   */
  publisher(inner: Publisher): Publisher;
  /** Sets where the gauges are read from; until called they read 0. */
  collectFrom(sources: MetricSources): void;
}

/** Options of `createMetrics`. */
export interface MetricsOptions {
  /** The clock events' `createdAt` was taken with (the gateway's clock); `Date.now` by default. */
  clock?: () => number;
  /** The path served; `/metrics` by default. */
  path?: string;
  /** Also collect prom-client's default process metrics (default true). */
  defaultMetrics?: boolean;
}

/** Upper bounds, in seconds, for the delivery lag: sub-millisecond to one second. */
const LAG_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Upper bounds, in seconds, for the time to first token: models take 0.1 s to tens of seconds. */
const TTFT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];

/** Creates the metrics of one gateway. Nothing is served until `route` is mounted. */
export function createMetrics(options: MetricsOptions = {}): GatewayMetrics {
  const clock = options.clock ?? Date.now;
  const path = options.path ?? '/metrics';
  const registry = new Registry();
  const registers = [registry];
  let sources: MetricSources | undefined;

  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });

  const timeToFirstToken = new Histogram({
    name: 'longrun_time_to_first_token_seconds',
    help: "Time from the start of a turn in the worker to the model's first text delta.",
    buckets: TTFT_BUCKETS,
    registers,
  });
  const deliveryLag = new Histogram({
    name: 'longrun_delivery_lag_seconds',
    help: "Time from an event's createdAt (the worker's clock) to its hand-off to every subscriber's socket.",
    buckets: LAG_BUCKETS,
    registers,
  });
  // Text deltas counted since the last scrape: at tens of thousands a second, prom-client's `inc`
  // (argument checks, a hash-map update) per delta is a cost worth avoiding, so they are added to
  // the counter when it is read.
  let uncountedTokens = 0;
  const tokens = new Counter({
    name: 'longrun_tokens_total',
    help: 'Text deltas produced by the model and published.',
    registers,
    collect() {
      if (uncountedTokens === 0) return;
      this.inc(uncountedTokens);
      uncountedTokens = 0;
    },
  });
  const eventsPublished = new Counter({
    name: 'longrun_events_published_total',
    help: 'Events published to subscribers, by type (CHUNK, COMPLETE, ERROR, CANCELLED).',
    labelNames: ['type'] as const,
    registers,
  });
  const errors = new Counter({
    name: 'longrun_errors_total',
    help: 'Turns that ended with an ERROR event, by errorCode; PublishFailed for events that could not be delivered.',
    labelNames: ['errorCode'] as const,
    registers,
  });
  const gauge = (name: string, help: string, read: (from: MetricSources) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(sources ? read(sources) : 0);
      },
    });
  };
  gauge('longrun_active_turns', 'Turns running now.', (from) => from.invoker.running);
  gauge('longrun_queued_turns', 'Turns waiting for a slot (LONGRUN_MAX_CONCURRENT_TURNS).', (from) => from.invoker.queued);
  gauge('longrun_connections', 'Open WebSocket connections, AppSync real-time and graphql-ws.', (from) => from.sockets.sockets);
  gauge('longrun_subscriptions', 'Subscriptions registered in the fan-out.', (from) => from.hub.size);

  // Labelled children are looked up once per label value, not on every event.
  const eventsByType = new Map<string, Counter.Internal>();
  const countEvent = (type: string): void => {
    let child = eventsByType.get(type);
    if (child === undefined) {
      child = eventsPublished.labels(type);
      eventsByType.set(type, child);
    }
    child.inc();
  };

  const route: RouteHandler = async (request: IncomingMessage, response: ServerResponse) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') return false;
    const { pathname } = new URL(request.url ?? '/', 'http://localhost');
    if (pathname !== path) return false;
    const body = await registry.metrics();
    response.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) });
    response.end(request.method === 'HEAD' ? undefined : body);
    return true;
  };

  return {
    registry,
    route,
    observeTurn() {
      let first = true;
      return (part, elapsedMs) => {
        if (part.type !== 'text-delta') return;
        uncountedTokens += 1;
        if (first) {
          first = false;
          timeToFirstToken.observe(Math.max(0, elapsedMs) / 1000);
        }
      };
    },
    recordParts(count, firstTokenMs) {
      if (count > 0) tokens.inc(count);
      for (const elapsedMs of firstTokenMs) timeToFirstToken.observe(Math.max(0, elapsedMs) / 1000);
    },
    publisher(inner) {
      return {
        async publish(events) {
          try {
            await inner.publish(events);
          } catch (error) {
            errors.labels('PublishFailed').inc(events.length);
            throw error;
          }
          const now = clock();
          for (const event of events) {
            countEvent(event.type);
            if (event.type === 'ERROR') errors.labels(event.errorCode ?? 'Unknown').inc();
            deliveryLag.observe(Math.max(0, now - event.createdAt) / 1000);
          }
        },
        ...(inner.close ? { close: () => inner.close!() } : {}),
      };
    },
    collectFrom(from) {
      sources = from;
    },
  };
}
