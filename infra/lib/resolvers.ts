/**
 * Which AppSync JavaScript resolver (`infra/resolvers/*.js`) serves which field, on which data
 * source. The stack builds its resolvers from this table and `infra/test/resolvers.test.ts` runs
 * the same pipelines against DynamoDB Local, so the two cannot drift apart.
 */
import { fileURLToPath } from 'node:url';

/** The folder of the resolver files. */
export const RESOLVERS_DIR = fileURLToPath(new URL('../resolvers/', import.meta.url));

/** The stack's data sources: the two tables, the worker Lambda, and NONE (local publish). */
export type DataSourceName = 'conversations' | 'events' | 'worker' | 'none';

/** A resolver with one data source. */
export interface UnitResolverDefinition {
  kind: 'unit';
  typeName: 'Query' | 'Mutation';
  fieldName: string;
  /** File name in `RESOLVERS_DIR`. */
  code: string;
  dataSource: DataSourceName;
}

/** A pipeline resolver: its own code around functions run in order. */
export interface PipelineResolverDefinition {
  kind: 'pipeline';
  typeName: 'Query' | 'Mutation';
  fieldName: string;
  code: string;
  functions: Array<{ name: string; code: string; dataSource: DataSourceName }>;
}

export type ResolverDefinition = UnitResolverDefinition | PipelineResolverDefinition;

/**
 * Pages of a DynamoDB Query one field reads before it answers: a Query page is at most 1 MB and a
 * resolver cannot loop over data source calls, so a pipeline repeats one page function.
 */
export const QUERY_PAGES = 4;

const pages = (prefix: string, code: string, dataSource: DataSourceName) =>
  Array.from({ length: QUERY_PAGES }, (_, index) => ({ name: `${prefix}${index + 1}`, code, dataSource }));

/** Every resolver of the API. Subscriptions need none: AppSync filters them on their arguments. */
export const RESOLVERS: readonly ResolverDefinition[] = [
  {
    kind: 'pipeline',
    typeName: 'Mutation',
    fieldName: 'startConversation',
    code: 'startConversation.js',
    functions: [
      { name: 'readConversation', code: 'readConversation.js', dataSource: 'conversations' },
      // Read only when readConversation found a stale turn, which reserveTurn then ends.
      { name: 'lastSeq', code: 'lastSeq.js', dataSource: 'events' },
      { name: 'reserveTurn', code: 'reserveTurn.js', dataSource: 'conversations' },
      { name: 'invokeWorker', code: 'invokeWorker.js', dataSource: 'worker' },
      // Only when the invocation failed: ends the turn, then answers WorkerUnavailable.
      { name: 'releaseTurn', code: 'releaseTurn.js', dataSource: 'conversations' },
    ],
  },
  { kind: 'unit', typeName: 'Mutation', fieldName: 'cancelConversation', code: 'cancelConversation.js', dataSource: 'conversations' },
  {
    kind: 'pipeline',
    typeName: 'Mutation',
    fieldName: 'deleteConversation',
    code: 'deleteConversation.js',
    functions: [
      { name: 'checkDeletable', code: 'checkDeletable.js', dataSource: 'conversations' },
      { name: 'deleteWithWorker', code: 'deleteWithWorker.js', dataSource: 'worker' },
    ],
  },
  { kind: 'unit', typeName: 'Mutation', fieldName: 'publishEvent', code: 'publish.js', dataSource: 'none' },
  { kind: 'unit', typeName: 'Mutation', fieldName: 'sendChunk', code: 'publish.js', dataSource: 'none' },
  { kind: 'unit', typeName: 'Mutation', fieldName: 'completeStream', code: 'publish.js', dataSource: 'none' },
  { kind: 'unit', typeName: 'Mutation', fieldName: 'sendError', code: 'publish.js', dataSource: 'none' },
  {
    kind: 'pipeline',
    typeName: 'Query',
    fieldName: 'conversation',
    code: 'conversation.js',
    functions: [
      ...pages('conversationPage', 'conversationPage.js', 'conversations'),
      { name: 'lastSeq', code: 'lastSeq.js', dataSource: 'events' },
    ],
  },
  {
    kind: 'pipeline',
    typeName: 'Query',
    fieldName: 'conversationEvents',
    code: 'conversationEvents.js',
    functions: [
      ...pages('eventsPage', 'eventsPage.js', 'events'),
      { name: 'conversationExists', code: 'conversationExists.js', dataSource: 'conversations' },
    ],
  },
];

/** The publish mutations: `@aws_iam` only, on the NONE data source, callable by the worker alone. */
export const PUBLISH_MUTATIONS = ['publishEvent', 'sendChunk', 'completeStream', 'sendError'] as const;
