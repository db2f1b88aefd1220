/**
 * The DynamoDB store: the AWS deployment's storage, used by the worker Lambda. The AppSync
 * resolvers (`infra/resolvers/*.js`) read and write the same items, so the layout below is a
 * contract between this file and them.
 *
 * Two tables, both PAY_PER_REQUEST with TTL on `expiresAt` (epoch seconds):
 *
 * - conversations: partition key `conversationId` (S), sort key `sk` (S).
 *   - `sk = "CONVERSATION"`: `owner`, `status` (the last turn's), `turn` (the last turn's number),
 *     `createdAt`, `updatedAt`, `cancelRequestedTurn` (absent when none), `turns` (a list of
 *     `{ turn, status, modelId, startedAt, endedAt }`, index = turn - 1), `expiresAt`.
 *   - `sk = "MESSAGE#<turn, 10 digits>#<0 user | 1 assistant>#<part, 3 digits>"`: `turn`, `role`,
 *     `part`, `content`, `expiresAt`. A message longer than 100,000 UTF-16 code units is stored in
 *     parts (each under DynamoDB's 400 KB item limit); readers join them in key order.
 * - events: partition key `conversationId` (S), sort key `seq` (N); the `ConversationEvent` fields,
 *   absent when null, `usage` as a map, and `expiresAt`.
 *
 * Messages live in their own items rather than in the conversation item so that a conversation's
 * text is not capped at 400 KB: only a single turn's prompt and answer are bounded, by a
 * transaction's 100 items and 4 MB (about 3.5 MB of text each).
 *
 * Every read is strongly consistent: the worker reads what it has just written.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  BatchWriteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteCommand,
  UpdateCommand,
  type QueryCommandInput,
  type TransactWriteCommandInput,
} from '@aws-sdk/lib-dynamodb';
import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';
import { normaliseEvent, type Conversation, type ConversationEvent, type Message, type Turn, type TurnStatus } from '../domain.js';
import { ConflictError, LongrunError, StoreError, UnauthorizedError } from '../errors.js';
import type { BeginTurnInput, RunningTurn, Store, TurnContext } from './types.js';

/** The sort key of a conversation's own item. */
export const CONVERSATION_SORT_KEY = 'CONVERSATION';
/** The prefix of the sort keys of message items. */
export const MESSAGE_SORT_KEY_PREFIX = 'MESSAGE#';
/** The longest part of a message, in UTF-16 code units (at most 300 KB of UTF-8). */
export const MESSAGE_PART_CHARS = 100_000;
/** A DynamoDB transaction writes at most this many items. */
const MAX_TRANSACTION_ITEMS = 100;

/** Options of the DynamoDB store. */
export interface DynamoDbStoreOptions {
  /** The client to use; one with the SDK's defaults (region, credentials) when omitted. */
  client?: DynamoDBClient;
  /** Table names, as the CDK stack creates them. */
  tables: { conversations: string; events: string };
  /** Items expire this many days after their last write (default 7); 0 writes no `expiresAt`. */
  ttlDays?: number;
  /** Milliseconds since the epoch, for `expiresAt`; `Date.now` by default. */
  now?: () => number;
}

/** CreateTable inputs for the store's tables, for tests and DynamoDB Local (the CDK stack makes its own). */
export function dynamoDbTableDefinitions(tables: { conversations: string; events: string }): CreateTableCommandInput[] {
  return [
    {
      TableName: tables.conversations,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'conversationId', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
      ],
      KeySchema: [
        { AttributeName: 'conversationId', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    },
    {
      TableName: tables.events,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'conversationId', AttributeType: 'S' },
        { AttributeName: 'seq', AttributeType: 'N' },
      ],
      KeySchema: [
        { AttributeName: 'conversationId', KeyType: 'HASH' },
        { AttributeName: 'seq', KeyType: 'RANGE' },
      ],
    },
  ];
}

/** The sort key of one part of a message. */
export function messageSortKey(turn: number, role: Message['role'], part: number): string {
  return `${MESSAGE_SORT_KEY_PREFIX}${String(turn).padStart(10, '0')}#${role === 'user' ? 0 : 1}#${String(part).padStart(3, '0')}`;
}

/** Splits a message into parts of at most `MESSAGE_PART_CHARS` code units, never inside a surrogate pair. */
export function splitMessage(text: string, partChars = MESSAGE_PART_CHARS): string[] {
  const parts: string[] = [];
  let start = 0;
  while (start < text.length || parts.length === 0) {
    let end = Math.min(start + partChars, text.length);
    const last = text.charCodeAt(end - 1);
    // Never end a part between the two halves of a surrogate pair (an emoji, say).
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end = end - 1 > start ? end - 1 : end + 1;
    parts.push(text.slice(start, end));
    start = end;
    if (start >= text.length) break;
  }
  return parts;
}

interface ConversationItem {
  conversationId: string;
  sk: string;
  owner?: string | null;
  status: TurnStatus;
  turn: number;
  createdAt: number;
  updatedAt: number;
  cancelRequestedTurn?: number;
  turns: Turn[];
  expiresAt?: number;
}

interface MessageItem {
  conversationId: string;
  sk: string;
  turn: number;
  role: Message['role'];
  part: number;
  content: string;
  expiresAt?: number;
}

type EventItem = Omit<ConversationEvent, 'chunk' | 'error' | 'errorCode' | 'stopReason' | 'usage' | 'latencyMs'> & {
  chunk?: string;
  error?: string;
  errorCode?: string;
  stopReason?: string;
  usage?: { inputTokens: number; outputTokens: number };
  latencyMs?: number;
  expiresAt?: number;
};

/**
 * Creates the DynamoDB store over existing tables. Failures of DynamoDB become `StoreError`;
 * `beginTurn` gives `ConflictError` and `UnauthorizedError` as the interface says.
 */
export function createDynamoDbStore(options: DynamoDbStoreOptions): Store {
  const ownsClient = options.client === undefined;
  const client = options.client ?? new DynamoDBClient({});
  const documents = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  const tables = options.tables;
  const now = options.now ?? Date.now;
  const ttlSeconds = (options.ttlDays ?? 7) * 86_400;
  const expiresAt = (): number | undefined => (ttlSeconds > 0 ? Math.floor(now() / 1000) + ttlSeconds : undefined);
  const metaKey = (conversationId: string) => ({ conversationId, sk: CONVERSATION_SORT_KEY });

  const readMeta = async (conversationId: string): Promise<ConversationItem | undefined> => {
    const result = await documents.send(
      new GetCommand({ TableName: tables.conversations, Key: metaKey(conversationId), ConsistentRead: true }),
    );
    return result.Item as ConversationItem | undefined;
  };

  const queryAll = async <T>(input: QueryCommandInput, limit = Number.POSITIVE_INFINITY): Promise<T[]> => {
    const items: T[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const remaining = limit - items.length;
      const page = await documents.send(
        new QueryCommand({
          ...input,
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
          Limit: Number.isFinite(remaining) ? remaining : undefined,
        }),
      );
      items.push(...((page.Items ?? []) as T[]));
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined && items.length < limit);
    return items;
  };

  const lastSeq = async (conversationId: string): Promise<number> => {
    const page = await documents.send(
      new QueryCommand({
        TableName: tables.events,
        KeyConditionExpression: 'conversationId = :id',
        ExpressionAttributeValues: { ':id': conversationId },
        ProjectionExpression: 'seq',
        ScanIndexForward: false,
        Limit: 1,
        ConsistentRead: true,
      }),
    );
    return (page.Items?.[0]?.seq as number | undefined) ?? 0;
  };

  const messagePuts = (conversationId: string, turn: number, role: Message['role'], content: string, expires: number | undefined) =>
    splitMessage(content).map((part, index) => ({
      Put: {
        TableName: tables.conversations,
        Item: {
          conversationId,
          sk: messageSortKey(turn, role, index),
          turn,
          role,
          part: index,
          content: part,
          expiresAt: expires,
        } satisfies MessageItem,
      },
    }));

  const transact = async (items: NonNullable<TransactWriteCommandInput['TransactItems']>, what: string): Promise<void> => {
    if (items.length > MAX_TRANSACTION_ITEMS) {
      throw new StoreError(
        `Could not ${what}: it needs ${items.length} writes and a DynamoDB transaction takes at most ${MAX_TRANSACTION_ITEMS} (a message of more than about 9.9 million characters, or more than 100 events at once).`,
      );
    }
    await documents.send(new TransactWriteCommand({ TransactItems: items }));
  };

  const readMessages = async (conversationId: string, beforeTurn?: number): Promise<Message[]> => {
    const items = await queryAll<MessageItem>({
      TableName: tables.conversations,
      KeyConditionExpression: 'conversationId = :id AND sk BETWEEN :from AND :to',
      ExpressionAttributeValues: {
        ':id': conversationId,
        ':from': MESSAGE_SORT_KEY_PREFIX,
        // The turn's own key, `MESSAGE#<turn>`, sorts before its parts: BETWEEN stops short of them.
        ':to': beforeTurn === undefined ? `${MESSAGE_SORT_KEY_PREFIX}~` : `${MESSAGE_SORT_KEY_PREFIX}${String(beforeTurn).padStart(10, '0')}`,
      },
    });
    return joinMessageParts(items);
  };

  return {
    beginTurn: (input) =>
      guard('start the turn', async () => {
        const existing = await readMeta(input.conversationId);
        const expires = expiresAt();
        const turnEntry: Turn = { turn: 1, status: 'RUNNING', modelId: input.modelId ?? null, startedAt: input.now, endedAt: null };
        let turn: number;
        let metaWrite: NonNullable<TransactWriteCommandInput['TransactItems']>[number];
        if (existing === undefined) {
          turn = 1;
          const item: ConversationItem = {
            ...metaKey(input.conversationId),
            owner: input.owner ?? null,
            status: 'RUNNING',
            turn,
            createdAt: input.now,
            updatedAt: input.now,
            turns: [turnEntry],
            expiresAt: expires,
          };
          metaWrite = {
            Put: { TableName: tables.conversations, Item: item, ConditionExpression: 'attribute_not_exists(conversationId)' },
          };
        } else {
          checkOwner(existing, input);
          if (existing.status === 'RUNNING') throw new ConflictError(input.conversationId);
          turn = existing.turn + 1;
          metaWrite = {
            Update: {
              TableName: tables.conversations,
              Key: metaKey(input.conversationId),
              UpdateExpression: `SET #status = :running, #turn = :turn, updatedAt = :now, turns = list_append(turns, :entry)${
                expires === undefined ? '' : ', expiresAt = :expiresAt'
              } REMOVE cancelRequestedTurn`,
              // The turn we read must still be the last one and not running: a concurrent
              // beginTurn that got there first makes this one a conflict.
              ConditionExpression: '#turn = :previous AND #status <> :running',
              ExpressionAttributeNames: { '#status': 'status', '#turn': 'turn' },
              ExpressionAttributeValues: {
                ':running': 'RUNNING',
                ':turn': turn,
                ':previous': existing.turn,
                ':now': input.now,
                ':entry': [{ ...turnEntry, turn }],
                ...(expires === undefined ? {} : { ':expiresAt': expires }),
              },
            },
          };
        }
        try {
          await transact([metaWrite, ...messagePuts(input.conversationId, turn, 'user', input.prompt, expires)], 'start the turn');
        } catch (error) {
          if (!isConditionFailure(error)) throw error;
          const winner = await readMeta(input.conversationId);
          if (winner !== undefined) checkOwner(winner, input);
          throw new ConflictError(input.conversationId);
        }
        return turn;
      }),

    turnContext: (conversationId, turn): Promise<TurnContext> =>
      guard('read the conversation', async () => {
        const [history, seq] = await Promise.all([readMessages(conversationId, turn), lastSeq(conversationId)]);
        return { history, lastSeq: seq };
      }),

    appendEvents: (events) =>
      guard('store the events', async () => {
        const expires = expiresAt();
        if (events.length === 0) return;
        if (events.length === 1) {
          const event = events[0]!;
          try {
            await documents.send(
              new PutCommand({
                TableName: tables.events,
                Item: toEventItem(event, expires),
                ConditionExpression: 'attribute_not_exists(seq)',
              }),
            );
          } catch (error) {
            if (!isConditionFailure(error)) throw error;
            // The SDK retries a write whose answer was lost; the item is then already ours.
            const stored = await documents.send(
              new GetCommand({ TableName: tables.events, Key: { conversationId: event.conversationId, seq: event.seq }, ConsistentRead: true }),
            );
            if (stored.Item === undefined || !sameEvent(fromEventItem(stored.Item as EventItem), event)) {
              throw new StoreError(`Event ${event.seq} of conversation ${event.conversationId} is already stored; an event is never overwritten.`, error);
            }
          }
          return;
        }
        try {
          await transact(
            events.map((event) => ({
              Put: { TableName: tables.events, Item: toEventItem(event, expires), ConditionExpression: 'attribute_not_exists(seq)' },
            })),
            'store the events',
          );
        } catch (error) {
          if (!isConditionFailure(error)) throw error;
          const seqs = events.map((event) => event.seq).join(', ');
          throw new StoreError(`One of the events ${seqs} is already stored; none of them was written.`, error);
        }
      }),

    endTurn: ({ event, assistantText }) =>
      guard('end the turn', async () => {
        const expires = expiresAt();
        const index = event.turn - 1;
        if (!Number.isInteger(index) || index < 0) throw new StoreError(`Turn ${event.turn} is not a turn number.`);
        const items: NonNullable<TransactWriteCommandInput['TransactItems']> = [
          {
            Put: { TableName: tables.events, Item: toEventItem(event, expires), ConditionExpression: 'attribute_not_exists(seq)' },
          },
          {
            Update: {
              TableName: tables.conversations,
              Key: metaKey(event.conversationId),
              UpdateExpression: `SET #status = :status, updatedAt = :at, #turns[${index}].#status = :status, #turns[${index}].endedAt = :at${
                expires === undefined ? '' : ', expiresAt = :expiresAt'
              }`,
              ConditionExpression: 'attribute_exists(conversationId) AND #turn = :turn',
              ExpressionAttributeNames: { '#status': 'status', '#turn': 'turn', '#turns': 'turns' },
              ExpressionAttributeValues: {
                ':status': event.type,
                ':at': event.createdAt,
                ':turn': event.turn,
                ...(expires === undefined ? {} : { ':expiresAt': expires }),
              },
            },
          },
        ];
        if (assistantText.length > 0) items.push(...messagePuts(event.conversationId, event.turn, 'assistant', assistantText, expires));
        try {
          await transact(items, 'end the turn');
        } catch (error) {
          if (!isConditionFailure(error)) throw error;
          const reasons = cancellationCodes(error);
          const why =
            reasons[0] === 'ConditionalCheckFailed'
              ? `event ${event.seq} is already stored`
              : `turn ${event.turn} is not the conversation's last turn (or the conversation was deleted)`;
          throw new StoreError(`Could not end turn ${event.turn} of conversation ${event.conversationId}: ${why}; nothing was written.`, error);
        }
      }),

    getConversation: (conversationId) =>
      guard('read the conversation', async (): Promise<Conversation | null> => {
        const [items, seq] = await Promise.all([
          queryAll<ConversationItem | MessageItem>({
            TableName: tables.conversations,
            KeyConditionExpression: 'conversationId = :id',
            ExpressionAttributeValues: { ':id': conversationId },
          }),
          lastSeq(conversationId),
        ]);
        const meta = items.find((item): item is ConversationItem => item.sk === CONVERSATION_SORT_KEY);
        if (meta === undefined) return null;
        const parts = items.filter((item): item is MessageItem => item.sk.startsWith(MESSAGE_SORT_KEY_PREFIX));
        return {
          conversationId,
          owner: meta.owner ?? null,
          status: meta.status,
          lastSeq: seq,
          createdAt: meta.createdAt,
          updatedAt: meta.updatedAt,
          turns: meta.turns.map((turn) => ({
            turn: turn.turn,
            status: turn.status,
            modelId: turn.modelId ?? null,
            startedAt: turn.startedAt,
            endedAt: turn.endedAt ?? null,
          })),
          messages: joinMessageParts(parts),
        };
      }),

    listEvents: (conversationId, afterSeq, limit) =>
      guard('read the events', async () => {
        if (limit === 0) return [];
        const items = await queryAll<EventItem>(
          {
            TableName: tables.events,
            KeyConditionExpression: 'conversationId = :id AND seq > :after',
            ExpressionAttributeValues: { ':id': conversationId, ':after': afterSeq },
          },
          limit === undefined || limit < 0 ? Number.POSITIVE_INFINITY : limit,
        );
        return items.map(fromEventItem);
      }),

    requestCancel: (conversationId) =>
      guard('request cancellation', async () => {
        try {
          await documents.send(
            new UpdateCommand({
              TableName: tables.conversations,
              Key: metaKey(conversationId),
              UpdateExpression: 'SET cancelRequestedTurn = #turn',
              ConditionExpression: '#status = :running',
              ExpressionAttributeNames: { '#status': 'status', '#turn': 'turn' },
              ExpressionAttributeValues: { ':running': 'RUNNING' },
            }),
          );
          return true;
        } catch (error) {
          if (isConditionFailure(error)) return false;
          throw error;
        }
      }),

    isCancelRequested: (conversationId, turn) =>
      guard('read the conversation', async () => {
        const result = await documents.send(
          new GetCommand({
            TableName: tables.conversations,
            Key: metaKey(conversationId),
            ProjectionExpression: 'cancelRequestedTurn',
            ConsistentRead: true,
          }),
        );
        return result.Item?.cancelRequestedTurn === turn;
      }),

    // Restart recovery only (the local gateway's): a Scan reads the whole table. The Lambda never
    // calls it; in AWS a turn whose Lambda died stays RUNNING until its items expire.
    listRunningTurns: () =>
      guard('list running turns', async (): Promise<RunningTurn[]> => {
        const running: Array<{ conversationId: string; turn: number }> = [];
        let startKey: Record<string, unknown> | undefined;
        do {
          const page = await documents.send(
            new ScanCommand({
              TableName: tables.conversations,
              FilterExpression: 'sk = :meta AND #status = :running',
              ExpressionAttributeNames: { '#status': 'status', '#turn': 'turn' },
              ExpressionAttributeValues: { ':meta': CONVERSATION_SORT_KEY, ':running': 'RUNNING' },
              ProjectionExpression: 'conversationId, #turn',
              ConsistentRead: true,
              ExclusiveStartKey: startKey,
            }),
          );
          for (const item of page.Items ?? []) running.push({ conversationId: item.conversationId as string, turn: item.turn as number });
          startKey = page.LastEvaluatedKey;
        } while (startKey !== undefined);
        return Promise.all(running.map(async (turn) => ({ ...turn, lastSeq: await lastSeq(turn.conversationId) })));
      }),

    deleteConversation: (conversationId) =>
      guard('delete the conversation', async () => {
        const existed = (await readMeta(conversationId)) !== undefined;
        // Events first, the conversation's own item last: a delete cut short leaves a conversation
        // that still exists and can be deleted again, never events without their conversation.
        const events = await queryAll<{ seq: number }>({
          TableName: tables.events,
          KeyConditionExpression: 'conversationId = :id',
          ExpressionAttributeValues: { ':id': conversationId },
          ProjectionExpression: 'seq',
        });
        await deleteKeys(tables.events, events.map((event) => ({ conversationId, seq: event.seq })));
        const items = await queryAll<{ sk: string }>({
          TableName: tables.conversations,
          KeyConditionExpression: 'conversationId = :id',
          ExpressionAttributeValues: { ':id': conversationId },
          ProjectionExpression: 'sk',
        });
        const keys = items.map((item) => ({ conversationId, sk: item.sk }));
        keys.sort((a, b) => Number(a.sk === CONVERSATION_SORT_KEY) - Number(b.sk === CONVERSATION_SORT_KEY));
        await deleteKeys(tables.conversations, keys);
        return existed;
      }),

    // DynamoDB's TTL (`expiresAt`, set from ttlDays on every write) expires old items itself.
    pruneConversations: async () => 0,
    close: async () => {
      if (ownsClient) client.destroy();
    },
  };

  async function deleteKeys(table: string, keys: Array<Record<string, unknown>>): Promise<void> {
    // The conversation's own item goes in the last batch, after its messages.
    for (let start = 0; start < keys.length; start += 25) {
      let requests = keys.slice(start, start + 25).map((Key) => ({ DeleteRequest: { Key } }));
      for (let attempt = 0; requests.length > 0; attempt += 1) {
        if (attempt >= 8) throw new StoreError(`DynamoDB kept refusing deletes from ${table}; try again.`);
        if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
        const result = await documents.send(new BatchWriteCommand({ RequestItems: { [table]: requests } }));
        requests = (result.UnprocessedItems?.[table] ?? []) as typeof requests;
      }
    }
  }
}

function checkOwner(existing: ConversationItem, input: BeginTurnInput): void {
  if (existing.owner != null && input.owner != null && existing.owner !== input.owner) throw new UnauthorizedError();
}

/** Runs a store operation; domain errors pass through, anything else becomes `StoreError`. */
async function guard<T>(what: string, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof LongrunError) throw error;
    throw new StoreError(`Could not ${what}: ${(error as Error).message ?? String(error)}`, error);
  }
}

function isConditionFailure(error: unknown): boolean {
  const name = (error as { name?: string } | undefined)?.name;
  if (name === 'ConditionalCheckFailedException') return true;
  return name === 'TransactionCanceledException' && cancellationCodes(error).includes('ConditionalCheckFailed');
}

function cancellationCodes(error: unknown): string[] {
  const reasons = (error as { CancellationReasons?: Array<{ Code?: string }> }).CancellationReasons ?? [];
  return reasons.map((reason) => reason.Code ?? 'None');
}

function joinMessageParts(items: MessageItem[]): Message[] {
  const messages: Message[] = [];
  let previous: MessageItem | undefined;
  for (const item of [...items].sort((a, b) => (a.sk < b.sk ? -1 : a.sk > b.sk ? 1 : 0))) {
    const last = messages.at(-1);
    if (previous !== undefined && last !== undefined && previous.turn === item.turn && previous.role === item.role) {
      last.content += item.content;
    } else {
      messages.push({ turn: item.turn, role: item.role, content: item.content });
    }
    previous = item;
  }
  return messages;
}

function toEventItem(event: ConversationEvent, expiresAt: number | undefined): EventItem {
  return {
    conversationId: event.conversationId,
    seq: event.seq,
    turn: event.turn,
    type: event.type,
    chunk: event.chunk ?? undefined,
    error: event.error ?? undefined,
    errorCode: event.errorCode ?? undefined,
    stopReason: event.stopReason ?? undefined,
    usage: event.usage === null ? undefined : { inputTokens: event.usage.inputTokens, outputTokens: event.usage.outputTokens },
    latencyMs: event.latencyMs ?? undefined,
    createdAt: event.createdAt,
    expiresAt,
  };
}

function fromEventItem(item: EventItem): ConversationEvent {
  return normaliseEvent(item);
}

function sameEvent(a: ConversationEvent, b: ConversationEvent): boolean {
  return JSON.stringify(fromEventItem(toEventItem(a, undefined))) === JSON.stringify(fromEventItem(toEventItem(b, undefined)));
}
