/**
 * The GraphQL operations of the gateway: resolvers for every root field of the schema, AppSync's
 * field authorisation, and AppSync's error shapes. HTTP, the AppSync real-time endpoint and the
 * graphql-ws endpoint all execute through here.
 */
import { randomUUID } from 'node:crypto';
import {
  execute,
  GraphQLError,
  parse,
  validate,
  type DocumentNode,
  type ExecutionResult,
  type GraphQLFieldResolver,
  type GraphQLObjectType,
} from 'graphql';
import { normaliseEvent, type ConversationEvent, type InvocationEvent } from '../domain.js';
import { BadRequestError, LongrunError, NotFoundError } from '../errors.js';
import type { Invoker } from '../invoker/types.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/types.js';
import type { ConversationAccess } from './access.js';
import type { Principal } from './auth.js';
import type { Hub } from './hub.js';
import type { TurnLimiter } from './limits.js';
import type { LoadedSchema } from './schema.js';

/** What the resolvers use. */
export interface GatewayServices {
  store: Store;
  invoker: Invoker;
  hub: Hub;
  logger: Logger;
  clock: () => number;
  maxPromptBytes: number;
  access: ConversationAccess;
  limits: TurnLimiter;
  /** Log prompt text with `turn-started` (LONGRUN_LOG_PROMPTS). */
  logPrompts: boolean;
}

/** The context of one operation. */
export interface OperationContext {
  principal: Principal;
  services: GatewayServices;
}

/** An error in AppSync's shape. */
export interface AppSyncError {
  message: string;
  errorType: string | null;
  path: ReadonlyArray<string | number> | null;
  locations: Array<{ line: number; column: number; sourceName: null }> | null;
  data: null;
  errorInfo: null;
}

const CONVERSATION_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
/** Most events `conversationEvents` returns in one page. */
export const MAX_EVENTS_PAGE = 1000;

/** Attaches resolvers (and AppSync's field authorisation) to the schema's root fields. */
export function attachResolvers(loaded: LoadedSchema): void {
  const { schema } = loaded;
  const resolvers: Record<string, Record<string, GraphQLFieldResolver<unknown, OperationContext, any>>> = {
    Query: {
      conversation: async (_root, args: { conversationId: string }, { services, principal }) =>
        services.access.load(principal, checkConversationId(args.conversationId)),
      conversationEvents: async (
        _root,
        args: { conversationId: string; afterSeq?: number | null; limit?: number | null },
        { services, principal },
      ) => {
        const conversationId = checkConversationId(args.conversationId);
        if ((await services.access.load(principal, conversationId)) === null) throw new NotFoundError(conversationId);
        const afterSeq = args.afterSeq ?? 0;
        if (afterSeq < 0) throw new BadRequestError(`afterSeq must be 0 or more; got ${afterSeq}.`);
        const limit = args.limit ?? MAX_EVENTS_PAGE;
        if (limit < 1 || limit > MAX_EVENTS_PAGE) {
          throw new BadRequestError(`limit must be from 1 to ${MAX_EVENTS_PAGE}; got ${limit}. Page with afterSeq for more.`);
        }
        return services.store.listEvents(conversationId, afterSeq, limit);
      },
    },
    Mutation: {
      startConversation: async (_root, args: { input: StartInput }, { services, principal }) => {
        const input = checkStartInput(args.input, services.maxPromptBytes);
        const conversationId = input.conversationId ?? randomUUID();
        const owner = services.access.ownerFor(principal);
        services.limits.admit(principal.id, conversationId);
        let turn: number;
        try {
          turn = await services.store.beginTurn({ conversationId, prompt: input.prompt, modelId: input.modelId, owner, now: services.clock() });
        } catch (error) {
          services.limits.release(conversationId);
          throw error;
        }
        services.access.remember(conversationId, owner);
        const event: InvocationEvent = { ...withoutUndefined(input), conversationId, turn, prompt: input.prompt };
        services.invoker.dispatch(event);
        services.logger.info('turn-started', {
          conversationId,
          turn,
          principal: principal.id,
          promptBytes: Buffer.byteLength(input.prompt, 'utf8'),
          ...(services.logPrompts ? { prompt: input.prompt, system: input.system } : {}),
        });
        return { conversationId, status: 'STARTED' };
      },
      cancelConversation: async (_root, args: { conversationId: string }, { services, principal }) => {
        const conversationId = checkConversationId(args.conversationId);
        const conversation = await services.access.load(principal, conversationId);
        if (conversation === null) throw new NotFoundError(conversationId);
        if (conversation.status !== 'RUNNING') return { conversationId, status: conversation.status };
        await services.store.requestCancel(conversationId);
        services.invoker.cancel(conversationId);
        return { conversationId, status: 'CANCELLING' };
      },
      deleteConversation: async (_root, args: { conversationId: string }, { services, principal }) => {
        const conversationId = checkConversationId(args.conversationId);
        const conversation = await services.access.load(principal, conversationId);
        if (conversation === null) throw new NotFoundError(conversationId);
        if (conversation.status === 'RUNNING') {
          throw new LongrunError('ConflictException', `Conversation ${conversationId} has a turn running; cancel it before deleting the conversation.`);
        }
        await services.store.deleteConversation(conversationId);
        services.access.forget(conversationId);
        services.logger.info('conversation-deleted', { conversationId, principal: principal.id });
        return { conversationId, status: 'DELETED' };
      },
      sendChunk: (_root, args: { conversationId: string; chunk: string }, { services }) => {
        const value = { conversationId: args.conversationId, chunk: args.chunk };
        services.hub.publish('onReceiveChunk', args.conversationId, value);
        return value;
      },
      completeStream: (_root, args: { conversationId: string }) => ({ conversationId: args.conversationId, status: 'COMPLETE' }),
      sendError: (_root, args: { conversationId: string; error: string }) => ({ conversationId: args.conversationId, error: args.error }),
      publishEvent: (_root, args: { event: ConversationEvent }, { services }) => {
        const event = normaliseEvent(args.event);
        services.hub.publish('onConversationEvent', event.conversationId, event);
        return event;
      },
    },
    Subscription: {
      onReceiveChunk: (payload) => payload,
      onConversationEvent: (payload) => payload,
    },
  };

  for (const [typeName, fields] of Object.entries(resolvers)) {
    const type = schema.getType(typeName) as GraphQLObjectType;
    for (const [fieldName, resolve] of Object.entries(fields)) {
      const field = type.getFields()[fieldName];
      if (!field) throw new Error(`schema has no ${typeName}.${fieldName}`);
      const allowed = loaded.allowedModes(typeName, fieldName);
      const guarded: GraphQLFieldResolver<unknown, OperationContext> = (root, args, context, info) => {
        if (!allowed.has(context.principal.mode)) throw notAuthorized(fieldName, typeName);
        return resolve(root, args, context, info);
      };
      if (typeName === 'Subscription') {
        field.resolve = resolve;
        field.subscribe = async (_root, args: { conversationId: string }, context: OperationContext) => {
          if (!allowed.has(context.principal.mode)) throw notAuthorized(fieldName, typeName);
          const conversationId = checkConversationId(args.conversationId);
          const accept = await context.services.access.gate(context.principal, conversationId);
          return context.services.hub.iterate(fieldName as 'onConversationEvent' | 'onReceiveChunk', conversationId, accept);
        };
      } else {
        field.resolve = guarded;
      }
    }
  }
}

/** AppSync's error for a field the caller's auth mode may not use. */
export function notAuthorized(fieldName: string, typeName: string): LongrunError {
  return new LongrunError('Unauthorized', `Not Authorized to access ${fieldName} on type ${typeName}`);
}

/** A GraphQL request as HTTP and WebSocket clients send it. */
export interface GraphQLRequest {
  query: string;
  variables?: Record<string, unknown> | null | undefined;
  operationName?: string | null | undefined;
}

/** The outcome of an HTTP operation: status and AppSync-shaped body. */
export interface OperationOutcome {
  status: number;
  body: { data?: unknown; errors?: AppSyncError[] };
}

/** Parsed and validated documents, per schema and query text: clients send the same few over and over. */
const parsedDocuments = new WeakMap<LoadedSchema, Map<string, ParsedDocument>>();
/** Documents longer than this are not cached, so distinct large documents cannot fill the cache. */
const MAX_CACHED_QUERY_LENGTH = 4096;
/** Distinct documents kept per schema; the cache starts over past this. */
const MAX_CACHED_DOCUMENTS = 1000;

/** A parsed and validated document, or the AppSync-shaped errors of a bad one. */
export type ParsedDocument = { document: DocumentNode } | { errors: AppSyncError[] };

/**
 * Parses and validates a document, returning AppSync-shaped errors for a bad one. The result
 * depends on the text alone, so it is computed once per distinct text (validation costs about
 * half a millisecond, on every request otherwise). Callers must not change the returned document.
 */
export function parseDocument(loaded: LoadedSchema, query: string): ParsedDocument {
  if (query.length > MAX_CACHED_QUERY_LENGTH) return parseAndValidate(loaded, query);
  let cache = parsedDocuments.get(loaded);
  if (cache === undefined) {
    cache = new Map();
    parsedDocuments.set(loaded, cache);
  }
  let parsed = cache.get(query);
  if (parsed === undefined) {
    if (cache.size >= MAX_CACHED_DOCUMENTS) cache.clear();
    parsed = parseAndValidate(loaded, query);
    cache.set(query, parsed);
  }
  return parsed;
}

function parseAndValidate(loaded: LoadedSchema, query: string): ParsedDocument {
  let document: DocumentNode;
  try {
    document = parse(query, { maxTokens: 10_000 });
  } catch (error) {
    return { errors: [formatError(error as GraphQLError, 'ParseError')] };
  }
  const problems = validate(loaded.schema, document);
  if (problems.length > 0) return { errors: problems.map((problem) => formatError(problem, 'ValidationError')) };
  return { document };
}

/** Executes a query or mutation for an HTTP request. */
export async function executeOperation(
  loaded: LoadedSchema,
  request: GraphQLRequest,
  context: OperationContext,
): Promise<OperationOutcome> {
  const parsed = parseDocument(loaded, request.query);
  if ('errors' in parsed) return { status: 400, body: { errors: parsed.errors } };
  const operation = parsed.document.definitions.find(
    (definition) =>
      definition.kind === 'OperationDefinition' &&
      (request.operationName == null || definition.name?.value === request.operationName),
  );
  if (operation?.kind === 'OperationDefinition' && operation.operation === 'subscription') {
    return {
      status: 400,
      body: {
        errors: [
          appSyncError(
            'UnsupportedOperation',
            'Subscriptions are not served over HTTP; subscribe over the realtime endpoint (/graphql/realtime) or graphql-ws (/graphql).',
          ),
        ],
      },
    };
  }
  const result = (await execute({
    schema: loaded.schema,
    document: parsed.document,
    variableValues: request.variables ?? undefined,
    operationName: request.operationName ?? undefined,
    contextValue: context,
  })) as ExecutionResult;
  return { status: 200, body: formatResult(result, context.services.logger) };
}

/** Formats an execution result in AppSync's shape, masking unexpected errors. */
export function formatResult(result: ExecutionResult, logger: Logger): OperationOutcome['body'] {
  const body: OperationOutcome['body'] = {};
  if (result.data !== undefined) body.data = result.data;
  if (result.errors?.length) body.errors = result.errors.map((error) => formatError(error, undefined, logger));
  return body;
}

/** Formats one error as AppSync does; an unexpected error becomes `internal error (id …)` and is logged with that id. */
export function formatError(error: GraphQLError, fallbackType?: string, logger?: Logger): AppSyncError {
  const original = error.originalError;
  let message = error.message;
  let errorType: string | null = fallbackType ?? null;
  if (original instanceof LongrunError) {
    errorType = original.code;
    message = original.message;
  } else if (original !== undefined && !(original instanceof GraphQLError)) {
    const id = randomUUID();
    logger?.error('unexpected-error', { errorId: id, error: original, path: error.path });
    errorType = 'InternalFailure';
    message = `internal error (id ${id})`;
  } else if (errorType === null) {
    errorType = 'ValidationError';
  }
  return {
    message,
    errorType,
    path: error.path ?? null,
    locations: error.locations?.map((location) => ({ line: location.line, column: location.column, sourceName: null })) ?? null,
    data: null,
    errorInfo: null,
  };
}

/** Builds an error in AppSync's shape without a GraphQLError. */
export function appSyncError(errorType: string, message: string): AppSyncError {
  return { message, errorType, path: null, locations: null, data: null, errorInfo: null };
}

interface StartInput {
  prompt: string;
  conversationId?: string | null;
  system?: string | null;
  modelId?: string | null;
  maxTokens?: number | null;
  temperature?: number | null;
  topP?: number | null;
}

function checkStartInput(input: StartInput, maxPromptBytes: number): Omit<InvocationEvent, 'turn' | 'conversationId'> & { conversationId?: string } {
  if (input.prompt.trim().length === 0) {
    throw new BadRequestError('input.prompt is empty; send the text of the user message (1 byte or more).');
  }
  const promptBytes = Buffer.byteLength(input.prompt, 'utf8');
  if (promptBytes > maxPromptBytes) {
    throw new BadRequestError(
      `input.prompt is ${promptBytes} bytes; the limit is ${maxPromptBytes} bytes (LONGRUN_MAX_PROMPT_BYTES).`,
    );
  }
  if (input.system != null && Buffer.byteLength(input.system, 'utf8') > maxPromptBytes) {
    throw new BadRequestError(`input.system is larger than ${maxPromptBytes} bytes (LONGRUN_MAX_PROMPT_BYTES).`);
  }
  if (input.conversationId != null) checkConversationId(input.conversationId, 'input.conversationId');
  if (input.modelId != null && (input.modelId.length === 0 || input.modelId.length > 256)) {
    throw new BadRequestError('input.modelId must be 1 to 256 characters.');
  }
  if (input.maxTokens != null && (input.maxTokens < 1 || input.maxTokens > 1_000_000)) {
    throw new BadRequestError(`input.maxTokens must be from 1 to 1000000; got ${input.maxTokens}.`);
  }
  if (input.temperature != null && !(input.temperature >= 0 && input.temperature <= 2)) {
    throw new BadRequestError(`input.temperature must be from 0 to 2; got ${input.temperature}.`);
  }
  if (input.topP != null && !(input.topP > 0 && input.topP <= 1)) {
    throw new BadRequestError(`input.topP must be more than 0 and at most 1; got ${input.topP}.`);
  }
  return {
    prompt: input.prompt,
    conversationId: input.conversationId ?? undefined,
    system: input.system ?? undefined,
    modelId: input.modelId ?? undefined,
    maxTokens: input.maxTokens ?? undefined,
    temperature: input.temperature ?? undefined,
    topP: input.topP ?? undefined,
  };
}

/** Checks a conversation id's form: 1 to 128 letters, digits, `-`, `_`, `.` or `:` (a UUID fits). */
export function checkConversationId(conversationId: string, name = 'conversationId'): string {
  if (!CONVERSATION_ID.test(conversationId)) {
    throw new BadRequestError(
      `${name} ${JSON.stringify(conversationId.slice(0, 140))} is not valid; use 1 to 128 letters, digits, "-", "_", "." or ":" (a UUID fits).`,
    );
  }
  return conversationId;
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as T;
}

