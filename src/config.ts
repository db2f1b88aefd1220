/**
 * Configuration: read from the environment once, at start-up, validated into one typed object.
 * A bad value stops start-up with a message naming the variable and what it accepts.
 */
import { z } from 'zod';
import { LongrunError } from './errors.js';
import type { LogLevel } from './log.js';

const integer = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .optional()
    .transform((value, context) => {
      if (value === undefined || value.trim() === '') return fallback;
      const parsed = Number(value);
      if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
        context.addIssue({
          code: 'custom',
          message: `${name} must be a whole number from ${min} to ${max === Number.MAX_SAFE_INTEGER ? 'any size' : max}; got "${value}"`,
        });
        return z.NEVER;
      }
      return parsed;
    });

const choice = <T extends string>(name: string, values: readonly [T, ...T[]], fallback: T) =>
  z
    .string()
    .optional()
    .transform((value, context) => {
      if (value === undefined || value.trim() === '') return fallback;
      if (!(values as readonly string[]).includes(value)) {
        context.addIssue({ code: 'custom', message: `${name} must be one of ${values.join(', ')}; got "${value}"` });
        return z.NEVER;
      }
      return value as T;
    });

const optionalText = z
  .string()
  .optional()
  .transform((value) => (value === undefined || value.trim() === '' ? undefined : value));

const environmentSchema = z.object({
  HOST: z.string().optional().transform((value) => value || '127.0.0.1'),
  PORT: integer('PORT', 4000, 0, 65535),
  LONGRUN_DB: z.string().optional().transform((value) => value || '.longrun/longrun.db'),
  LONGRUN_API_KEY: optionalText,
  LONGRUN_PROVIDER: choice('LONGRUN_PROVIDER', ['simulated', 'bedrock', 'openai'], 'simulated'),
  LONGRUN_MODEL_ID: optionalText,
  LONGRUN_WORKER_ACCESS_KEY_ID: optionalText,
  LONGRUN_WORKER_SECRET_ACCESS_KEY: optionalText,
  LONGRUN_TLS_CERT: optionalText,
  LONGRUN_TLS_KEY: optionalText,
  LONGRUN_MAX_CONCURRENT_TURNS: integer('LONGRUN_MAX_CONCURRENT_TURNS', 64, 1, 100_000),
  LONGRUN_TURN_THREADS: integer('LONGRUN_TURN_THREADS', 0, 0, 64),
  LONGRUN_TURN_TIMEOUT_MS: integer('LONGRUN_TURN_TIMEOUT_MS', 15 * 60 * 1000, 1),
  LONGRUN_STALL_TIMEOUT_MS: integer('LONGRUN_STALL_TIMEOUT_MS', 120_000, 1),
  LONGRUN_FLUSH_MS: integer('LONGRUN_FLUSH_MS', 50, 0, 60_000),
  LONGRUN_FLUSH_BYTES: integer('LONGRUN_FLUSH_BYTES', 4096, 1, 200_000),
  LONGRUN_MAX_PROMPT_BYTES: integer('LONGRUN_MAX_PROMPT_BYTES', 100 * 1024, 1, 10 * 1024 * 1024),
  LONGRUN_MAX_BODY_BYTES: integer('LONGRUN_MAX_BODY_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
  LONGRUN_KEEPALIVE_MS: integer('LONGRUN_KEEPALIVE_MS', 60_000, 10, 60_000),
  LONGRUN_CONNECTION_TIMEOUT_MS: integer('LONGRUN_CONNECTION_TIMEOUT_MS', 300_000, 1000),
  LONGRUN_SIM_TTFT_MS: integer('LONGRUN_SIM_TTFT_MS', 300, 0, 600_000),
  LONGRUN_SIM_TOKENS_PER_SEC: integer('LONGRUN_SIM_TOKENS_PER_SEC', 50, 0, 1_000_000),
  LONGRUN_LOG_LEVEL: choice('LONGRUN_LOG_LEVEL', ['debug', 'info', 'warn', 'error', 'silent'], 'info'),
  LONGRUN_LOG_PROMPTS: choice('LONGRUN_LOG_PROMPTS', ['true', 'false'], 'false'),
  LONGRUN_AUTH: choice('LONGRUN_AUTH', ['apikey', 'oidc'], 'apikey'),
  LONGRUN_API_KEYS_FILE: optionalText,
  LONGRUN_OIDC_ISSUER: optionalText,
  LONGRUN_OIDC_AUDIENCE: optionalText,
  LONGRUN_OIDC_JWKS_URL: optionalText,
  LONGRUN_TURNS_PER_MINUTE: integer('LONGRUN_TURNS_PER_MINUTE', 60, 1, 1_000_000),
  LONGRUN_MAX_TURNS_PER_PRINCIPAL: integer('LONGRUN_MAX_TURNS_PER_PRINCIPAL', 16, 1, 100_000),
  LONGRUN_MAX_CONNECTIONS_PER_ADDRESS: integer('LONGRUN_MAX_CONNECTIONS_PER_ADDRESS', 10_000, 1, 10_000_000),
  LONGRUN_MAX_MESSAGE_BYTES: integer('LONGRUN_MAX_MESSAGE_BYTES', 240 * 1024, 1024, 1024 * 1024),
  LONGRUN_IDLE_TIMEOUT_MS: integer('LONGRUN_IDLE_TIMEOUT_MS', 300_000, 100),
  LONGRUN_MAX_BUFFERED_BYTES: integer('LONGRUN_MAX_BUFFERED_BYTES', 8 * 1024 * 1024, 1024),
  LONGRUN_RETENTION_DAYS: integer('LONGRUN_RETENTION_DAYS', 7, 0, 36_500),
  OPENAI_BASE_URL: optionalText,
  OPENAI_API_KEY: optionalText,
  AWS_REGION: optionalText,
});

/** The provider part of the configuration, as `createProvider` takes it. */
export interface ProviderConfig {
  name: 'simulated' | 'bedrock' | 'openai';
  /** LONGRUN_MODEL_ID; each provider has its own default. */
  modelId: string | undefined;
  simulated: { ttftMs: number; tokensPerSecond: number };
  /** OPENAI_BASE_URL (default http://127.0.0.1:11434/v1, a local Ollama) and OPENAI_API_KEY. */
  openai: { baseUrl: string | undefined; apiKey: string | undefined };
  /** Region and credentials come from the AWS SDK's standard settings; AWS_REGION is read here for messages. */
  bedrock: { region: string | undefined };
}

/** The gateway's whole configuration. */
export interface Config {
  host: string;
  port: number;
  /** SQLite file; `:memory:` for a throw-away store. */
  databasePath: string;
  /** The API key; undefined means a dev key is generated once and kept beside the database. */
  apiKey: string | undefined;
  /** Credentials the gateway accepts SigV4 signatures from (the worker's); none means IAM calls are refused. */
  workerCredentials: { accessKeyId: string; secretAccessKey: string } | undefined;
  tls: { certPath: string; keyPath: string } | undefined;
  provider: ProviderConfig;
  maxConcurrentTurns: number;
  /**
   * Worker threads that run turns (model stream, coalescer, store writes) beside the thread that
   * serves sockets (LONGRUN_TURN_THREADS); 0 (the default) runs them on that thread. An in-memory
   * database always runs them there: threads cannot share it.
   */
  turnThreads: number;
  turnTimeoutMs: number;
  stallTimeoutMs: number;
  flushMs: number;
  flushBytes: number;
  maxPromptBytes: number;
  maxBodyBytes: number;
  /** Interval of `ka` messages on realtime connections. */
  keepAliveMs: number;
  /** `connectionTimeoutMs` announced in `connection_ack`. */
  connectionTimeoutMs: number;
  logLevel: LogLevel;
  /** Log prompt text (LONGRUN_LOG_PROMPTS=true); off by default. */
  logPrompts: boolean;
  /** `apikey` (AppSync's API_KEY mode) or `oidc` (OPENID_CONNECT: conversations belong to the token's `sub`). */
  auth:
    | { mode: 'apikey'; keysFile: string | undefined }
    | { mode: 'oidc'; issuer: string; audience: string; jwksUrl: string };
  limits: {
    /** Turns one key or owner may start per minute (LONGRUN_TURNS_PER_MINUTE). */
    turnsPerMinute: number;
    /** Turns one key or owner may have running or queued at once (LONGRUN_MAX_TURNS_PER_PRINCIPAL). */
    turnsPerPrincipal: number;
    /** WebSocket connections one address may hold (LONGRUN_MAX_CONNECTIONS_PER_ADDRESS). */
    connectionsPerAddress: number;
    /** Largest realtime message (LONGRUN_MAX_MESSAGE_BYTES, AppSync's 240 KB by default). */
    messageBytes: number;
    /** A realtime connection without a subscription for this long is closed (LONGRUN_IDLE_TIMEOUT_MS). */
    idleTimeoutMs: number;
    /** A subscriber with more than this waiting to be sent is disconnected (LONGRUN_MAX_BUFFERED_BYTES). */
    bufferedBytes: number;
  };
  /** Conversations not updated for this many days are deleted; 0 keeps them (LONGRUN_RETENTION_DAYS). */
  retentionDays: number;
}

/** Thrown by `loadConfig`; its message lists every bad variable. */
export class ConfigError extends LongrunError {
  constructor(message: string) {
    super('ConfigError', message);
  }
}

/** Reads and validates the configuration from `environment` (default: `process.env`). */
export function loadConfig(environment: Record<string, string | undefined> = process.env): Config {
  const parsed = environmentSchema.safeParse(environment);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  - ${issue.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const env = parsed.data;
  const problems: string[] = [];
  if ((env.LONGRUN_TLS_CERT === undefined) !== (env.LONGRUN_TLS_KEY === undefined)) {
    problems.push('LONGRUN_TLS_CERT and LONGRUN_TLS_KEY must be set together (PEM file paths), or neither');
  }
  if ((env.LONGRUN_WORKER_ACCESS_KEY_ID === undefined) !== (env.LONGRUN_WORKER_SECRET_ACCESS_KEY === undefined)) {
    problems.push('LONGRUN_WORKER_ACCESS_KEY_ID and LONGRUN_WORKER_SECRET_ACCESS_KEY must be set together, or neither');
  }
  if (env.LONGRUN_AUTH === 'oidc') {
    for (const name of ['LONGRUN_OIDC_ISSUER', 'LONGRUN_OIDC_AUDIENCE', 'LONGRUN_OIDC_JWKS_URL'] as const) {
      if (env[name] === undefined) problems.push(`${name} is required when LONGRUN_AUTH=oidc`);
    }
    if (env.LONGRUN_OIDC_JWKS_URL !== undefined && !/^https?:\/\/\S+$/.test(env.LONGRUN_OIDC_JWKS_URL)) {
      problems.push(`LONGRUN_OIDC_JWKS_URL must be an http:// or https:// URL; got "${env.LONGRUN_OIDC_JWKS_URL}"`);
    }
  }
  if (env.OPENAI_BASE_URL !== undefined && !/^https?:\/\/[^\s]+$/.test(env.OPENAI_BASE_URL)) {
    problems.push(`OPENAI_BASE_URL must be an http:// or https:// URL; got "${env.OPENAI_BASE_URL}"`);
  }
  if (problems.length > 0) {
    throw new ConfigError(`Invalid configuration:\n${problems.map((line) => `  - ${line}`).join('\n')}`);
  }
  return {
    host: env.HOST,
    port: env.PORT,
    databasePath: env.LONGRUN_DB,
    apiKey: env.LONGRUN_API_KEY,
    workerCredentials:
      env.LONGRUN_WORKER_ACCESS_KEY_ID && env.LONGRUN_WORKER_SECRET_ACCESS_KEY
        ? { accessKeyId: env.LONGRUN_WORKER_ACCESS_KEY_ID, secretAccessKey: env.LONGRUN_WORKER_SECRET_ACCESS_KEY }
        : undefined,
    tls:
      env.LONGRUN_TLS_CERT && env.LONGRUN_TLS_KEY
        ? { certPath: env.LONGRUN_TLS_CERT, keyPath: env.LONGRUN_TLS_KEY }
        : undefined,
    provider: {
      name: env.LONGRUN_PROVIDER,
      modelId: env.LONGRUN_MODEL_ID,
      simulated: { ttftMs: env.LONGRUN_SIM_TTFT_MS, tokensPerSecond: env.LONGRUN_SIM_TOKENS_PER_SEC },
      openai: { baseUrl: env.OPENAI_BASE_URL, apiKey: env.OPENAI_API_KEY },
      bedrock: { region: env.AWS_REGION },
    },
    maxConcurrentTurns: env.LONGRUN_MAX_CONCURRENT_TURNS,
    turnThreads: env.LONGRUN_TURN_THREADS,
    turnTimeoutMs: env.LONGRUN_TURN_TIMEOUT_MS,
    stallTimeoutMs: env.LONGRUN_STALL_TIMEOUT_MS,
    flushMs: env.LONGRUN_FLUSH_MS,
    flushBytes: env.LONGRUN_FLUSH_BYTES,
    maxPromptBytes: env.LONGRUN_MAX_PROMPT_BYTES,
    maxBodyBytes: env.LONGRUN_MAX_BODY_BYTES,
    keepAliveMs: env.LONGRUN_KEEPALIVE_MS,
    connectionTimeoutMs: env.LONGRUN_CONNECTION_TIMEOUT_MS,
    logLevel: env.LONGRUN_LOG_LEVEL,
    logPrompts: env.LONGRUN_LOG_PROMPTS === 'true',
    auth:
      env.LONGRUN_AUTH === 'oidc'
        ? {
            mode: 'oidc',
            issuer: env.LONGRUN_OIDC_ISSUER!,
            audience: env.LONGRUN_OIDC_AUDIENCE!,
            jwksUrl: env.LONGRUN_OIDC_JWKS_URL!,
          }
        : { mode: 'apikey', keysFile: env.LONGRUN_API_KEYS_FILE },
    limits: {
      turnsPerMinute: env.LONGRUN_TURNS_PER_MINUTE,
      turnsPerPrincipal: env.LONGRUN_MAX_TURNS_PER_PRINCIPAL,
      connectionsPerAddress: env.LONGRUN_MAX_CONNECTIONS_PER_ADDRESS,
      messageBytes: env.LONGRUN_MAX_MESSAGE_BYTES,
      idleTimeoutMs: env.LONGRUN_IDLE_TIMEOUT_MS,
      bufferedBytes: env.LONGRUN_MAX_BUFFERED_BYTES,
    },
    retentionDays: env.LONGRUN_RETENTION_DAYS,
  };
}
