/**
 * Runs the stack's AppSync JavaScript resolvers outside AppSync: unit and pipeline resolvers as
 * `infra/lib/resolvers.ts` wires them, their DynamoDB requests executed against a real DynamoDB
 * (DynamoDB Local), Lambda invocations recorded, NONE data sources echoing their payload.
 *
 * The request objects are checked as AppSync checks them (known operations and fields only), so a
 * misspelt field fails here rather than after a deploy. The test file must mock
 * `@aws-appsync/utils` with `./appsync-utils.js`.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  GetItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { RESOLVERS, RESOLVERS_DIR, type DataSourceName } from '../lib/resolvers.js';
import { appendedErrors, EarlyReturn, ResolverError } from './appsync-utils.js';

interface ResolverModule {
  request(ctx: Context): unknown;
  response(ctx: Context): unknown;
}

interface Context {
  args: Record<string, unknown>;
  arguments: Record<string, unknown>;
  identity: unknown;
  source: null;
  info: { fieldName: string; parentTypeName: string };
  stash: Record<string, unknown>;
  prev: { result: unknown };
  env: Record<string, string>;
  result: unknown;
  error: { message: string; type: string } | undefined;
}

/** A GraphQL field's outcome, as AppSync would answer it. */
export interface FieldResult {
  data: unknown;
  errors: Array<{ message: string; errorType: string | undefined }>;
}

/** A recorded Lambda invocation. */
export interface Invocation {
  invocationType: string | undefined;
  payload: unknown;
}

export interface RunnerOptions {
  client: DynamoDBClient;
  tables: { conversations: string; events: string };
  env: Record<string, string>;
  /** Runs a RequestResponse invocation of the worker Lambda (Event invocations are only recorded). */
  invoke?: (payload: unknown) => Promise<unknown>;
  /** When it returns a message, Lambda refuses the next Event invocation with it (a service error, say). */
  refuseEvent?: () => string | undefined;
}

const ALLOWED_FIELDS: Record<string, readonly string[]> = {
  GetItem: ['operation', 'key', 'consistentRead', 'projection'],
  Query: ['operation', 'query', 'index', 'nextToken', 'limit', 'scanIndexForward', 'consistentRead', 'select', 'filter', 'projection'],
  UpdateItem: ['operation', 'key', 'update', 'condition', '_version'],
  TransactWriteItems: ['operation', 'transactItems'],
  Invoke: ['operation', 'payload', 'invocationType'],
};

/** Creates a runner; `run(typeName, fieldName, args)` executes one field. */
export function createAppSyncRunner(options: RunnerOptions) {
  const invocations: Invocation[] = [];
  const modules = new Map<string, Promise<ResolverModule>>();
  const load = (file: string): Promise<ResolverModule> => {
    let loaded = modules.get(file);
    if (loaded === undefined) {
      loaded = import(pathToFileURL(join(RESOLVERS_DIR, file)).href) as Promise<ResolverModule>;
      modules.set(file, loaded);
    }
    return loaded;
  };

  const execute = async (dataSource: DataSourceName, request: unknown): Promise<{ result: unknown; error: Context['error'] }> => {
    if (dataSource === 'none') return { result: (request as { payload?: unknown }).payload, error: undefined };
    const operation = (request as { operation?: string }).operation ?? '';
    const allowed = ALLOWED_FIELDS[operation];
    if (allowed === undefined) throw new Error(`AppSync would reject the request: unknown operation ${JSON.stringify(operation)}`);
    const unknown = Object.keys(request as object).filter((key) => !allowed.includes(key));
    if (unknown.length > 0) throw new Error(`AppSync would reject the ${operation} request: unknown fields ${unknown.join(', ')}`);
    if (dataSource === 'worker') {
      if (operation !== 'Invoke') throw new Error(`${operation} on a Lambda data source`);
      const invoke = request as { payload: unknown; invocationType?: string };
      const payload: unknown = JSON.parse(JSON.stringify(invoke.payload));
      invocations.push({ invocationType: invoke.invocationType, payload });
      if (invoke.invocationType === 'Event') {
        const refused = options.refuseEvent?.();
        return { result: null, error: refused === undefined ? undefined : { type: 'Lambda:ServiceException', message: refused } };
      }
      if (options.invoke === undefined) throw new Error('a RequestResponse invocation, but the runner has no invoke');
      try {
        return { result: JSON.parse(JSON.stringify(await options.invoke(payload))), error: undefined };
      } catch (error) {
        return { result: null, error: { type: 'Lambda:Unhandled', message: (error as Error).message } };
      }
    }
    return dynamodb(options.client, dataSource === 'conversations' ? options.tables.conversations : options.tables.events, request as DynamoDbRequest);
  };

  const run = async (
    typeName: 'Query' | 'Mutation',
    fieldName: string,
    args: Record<string, unknown>,
    identity: unknown = null,
  ): Promise<FieldResult> => {
    const definition = RESOLVERS.find((entry) => entry.typeName === typeName && entry.fieldName === fieldName);
    if (definition === undefined) throw new Error(`no resolver for ${typeName}.${fieldName}`);
    appendedErrors.length = 0;
    const ctx: Context = {
      args,
      arguments: args,
      identity,
      source: null,
      info: { fieldName, parentTypeName: typeName },
      stash: {},
      prev: { result: undefined },
      env: options.env,
      result: undefined,
      error: undefined,
    };
    const resolver = await load(definition.code);
    try {
      let request: unknown;
      try {
        request = resolver.request(ctx);
      } catch (error) {
        if (error instanceof EarlyReturn) return { data: error.value, errors: [...appendedErrors] };
        throw error;
      }
      if (definition.kind === 'unit') {
        const outcome = await execute(definition.dataSource, request);
        ctx.result = outcome.result;
        ctx.error = outcome.error;
      } else {
        for (const step of definition.functions) {
          const module = await load(step.code);
          ctx.result = undefined;
          ctx.error = undefined;
          let stepRequest: unknown;
          try {
            stepRequest = module.request(ctx);
          } catch (error) {
            if (error instanceof EarlyReturn) {
              ctx.prev = { result: error.value };
              continue;
            }
            throw error;
          }
          const outcome = await execute(step.dataSource, stepRequest);
          ctx.result = outcome.result;
          ctx.error = outcome.error;
          ctx.prev = { result: module.response(ctx) };
        }
        ctx.result = ctx.prev.result;
        ctx.error = undefined;
      }
      return { data: resolver.response(ctx), errors: [...appendedErrors] };
    } catch (error) {
      if (error instanceof ResolverError) return { data: null, errors: [...appendedErrors, { message: error.message, errorType: error.errorType }] };
      throw error;
    }
  };

  return { run, invocations };
}

interface Expression {
  expression: string;
  expressionNames?: Record<string, string>;
  expressionValues?: Record<string, AttributeValue>;
}

type DynamoDbRequest =
  | { operation: 'GetItem'; key: Record<string, AttributeValue>; consistentRead?: boolean }
  | {
      operation: 'Query';
      query: Expression;
      limit?: number;
      nextToken?: string;
      scanIndexForward?: boolean;
      consistentRead?: boolean;
    }
  | { operation: 'UpdateItem'; key: Record<string, AttributeValue>; update: Expression; condition?: Expression }
  | { operation: 'TransactWriteItems'; transactItems: TransactRequest[] };

type TransactRequest = {
  table: string;
  operation: 'PutItem' | 'UpdateItem' | 'DeleteItem' | 'ConditionCheck';
  key: Record<string, AttributeValue>;
  attributeValues?: Record<string, AttributeValue>;
  update?: Expression;
  condition?: Expression & { returnValuesOnConditionCheckFailure?: boolean };
};

const merged = (...expressions: Array<Expression | undefined>) => {
  const names = Object.assign({}, ...expressions.map((expression) => expression?.expressionNames ?? {})) as Record<string, string>;
  const values = Object.assign({}, ...expressions.map((expression) => expression?.expressionValues ?? {})) as Record<string, AttributeValue>;
  return {
    ExpressionAttributeNames: Object.keys(names).length > 0 ? names : undefined,
    ExpressionAttributeValues: Object.keys(values).length > 0 ? values : undefined,
  };
};

async function dynamodb(client: DynamoDBClient, table: string, request: DynamoDbRequest): Promise<{ result: unknown; error: Context['error'] }> {
  try {
    switch (request.operation) {
      case 'GetItem': {
        const output = await client.send(new GetItemCommand({ TableName: table, Key: request.key, ConsistentRead: request.consistentRead }));
        return { result: output.Item === undefined ? null : unmarshall(output.Item), error: undefined };
      }
      case 'Query': {
        const output = await client.send(
          new QueryCommand({
            TableName: table,
            KeyConditionExpression: request.query.expression,
            ...merged(request.query),
            Limit: request.limit,
            ScanIndexForward: request.scanIndexForward,
            ConsistentRead: request.consistentRead,
            ExclusiveStartKey: request.nextToken === undefined ? undefined : JSON.parse(Buffer.from(request.nextToken, 'base64').toString('utf8')),
          }),
        );
        return {
          result: {
            items: (output.Items ?? []).map(unmarshall),
            nextToken: output.LastEvaluatedKey === undefined ? null : Buffer.from(JSON.stringify(output.LastEvaluatedKey)).toString('base64'),
            scannedCount: output.ScannedCount,
          },
          error: undefined,
        };
      }
      case 'UpdateItem': {
        const output = await client.send(
          new UpdateItemCommand({
            TableName: table,
            Key: request.key,
            UpdateExpression: request.update.expression,
            ConditionExpression: request.condition?.expression,
            ...merged(request.update, request.condition),
            ReturnValues: 'ALL_NEW',
          }),
        );
        return { result: output.Attributes === undefined ? null : unmarshall(output.Attributes), error: undefined };
      }
      case 'TransactWriteItems': {
        const items = request.transactItems.map((item): TransactWriteItem => {
          const common = { TableName: item.table, ConditionExpression: item.condition?.expression };
          switch (item.operation) {
            case 'PutItem':
              return { Put: { ...common, Item: { ...item.key, ...item.attributeValues }, ...merged(item.condition) } };
            case 'UpdateItem':
              return { Update: { ...common, Key: item.key, UpdateExpression: item.update!.expression, ...merged(item.update, item.condition) } };
            case 'DeleteItem':
              return { Delete: { ...common, Key: item.key, ...merged(item.condition) } };
            case 'ConditionCheck':
              return { ConditionCheck: { ...common, Key: item.key, ConditionExpression: item.condition!.expression, ...merged(item.condition) } };
          }
        });
        try {
          await client.send(new TransactWriteItemsCommand({ TransactItems: items }));
          return { result: { keys: request.transactItems.map((item) => unmarshall(item.key)), cancellationReasons: null }, error: undefined };
        } catch (error) {
          const reasons = (error as { CancellationReasons?: Array<{ Code?: string; Message?: string }> }).CancellationReasons;
          if (reasons === undefined) throw error;
          return {
            result: { keys: null, cancellationReasons: reasons.map((reason) => ({ type: reason.Code, message: reason.Message ?? null })) },
            error: { type: 'DynamoDB:TransactionCanceledException', message: (error as Error).message },
          };
        }
      }
    }
  } catch (error) {
    return { result: null, error: { type: `DynamoDB:${(error as Error).name}`, message: (error as Error).message } };
  }
}

function unmarshall(item: Record<string, AttributeValue>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(item).map(([key, value]) => [key, fromAttribute(value)]));
}

function fromAttribute(value: AttributeValue): unknown {
  if (value.S !== undefined) return value.S;
  if (value.N !== undefined) return Number(value.N);
  if (value.BOOL !== undefined) return value.BOOL;
  if (value.NULL !== undefined) return null;
  if (value.L !== undefined) return value.L.map(fromAttribute);
  if (value.M !== undefined) return unmarshall(value.M);
  throw new Error(`unsupported attribute ${JSON.stringify(value)}`);
}
