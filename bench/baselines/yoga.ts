/**
 * Baseline (b), what a user would build instead: graphql-yoga 5 on graphql-js 16, its in-memory
 * `createPubSub`, one publish per token, and subscriptions served by the `graphql-ws` server
 * (`graphql-transport-ws` protocol) through yoga's envelop, as yoga's documentation shows. The
 * same schema shapes, request bodies and token stream as the gateway; no store. Nothing is
 * handicapped: yoga's parser and validation caches are on (its defaults), logging and GraphiQL
 * are off. Run as a child of `bench/run.ts`.
 */
import { EventEmitter } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExecutionArgs } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { createPubSub, createSchema, createYoga } from 'graphql-yoga';
import { WebSocketServer } from 'ws';
import type { ConversationEvent } from '../../src/domain.js';
import { serveControl } from '../common.js';
import { stopConversations, streamConversation } from './token-source.js';

// The pubsub's EventTarget warns past 10 listeners per topic; S3 puts a thousand on one, by design.
EventEmitter.defaultMaxListeners = 0;
const pubSub = createPubSub<{ conversationEvent: [conversationId: string, payload: ConversationEvent] }>();

const schema = createSchema({
  typeDefs: /* GraphQL */ `
    type Query {
      health: String
    }
    type Mutation {
      startConversation(input: StartConversationInput!): ConversationResponse!
    }
    type Subscription {
      onConversationEvent(conversationId: ID!): ConversationEvent
    }
    input StartConversationInput {
      prompt: String!
      conversationId: ID
    }
    type ConversationResponse {
      conversationId: ID!
      status: String!
    }
    enum EventType {
      CHUNK
      COMPLETE
      ERROR
      CANCELLED
    }
    type Usage {
      inputTokens: Int!
      outputTokens: Int!
    }
    type ConversationEvent {
      conversationId: ID!
      turn: Int!
      seq: Int!
      type: EventType!
      chunk: String
      error: String
      errorCode: String
      stopReason: String
      usage: Usage
      latencyMs: Int
      createdAt: Float!
    }
  `,
  resolvers: {
    Query: { health: () => 'ok' },
    Mutation: {
      startConversation: (_root: unknown, args: { input: { prompt: string; conversationId?: string | null } }) => {
        const conversationId = args.input.conversationId ?? crypto.randomUUID();
        void streamConversation(
          conversationId,
          args.input.prompt,
          (event) => pubSub.publish('conversationEvent', conversationId, event),
        );
        return { conversationId, status: 'STARTED' };
      },
    },
    Subscription: {
      onConversationEvent: {
        subscribe: (_root: unknown, args: { conversationId: string }) => pubSub.subscribe('conversationEvent', args.conversationId),
        resolve: (payload: ConversationEvent) => payload,
      },
    },
  },
});

const yoga = createYoga({ schema, graphiql: false, logging: false, landingPage: false });
const server = createServer(yoga);
const sockets = new WebSocketServer({ server, path: yoga.graphqlEndpoint, perMessageDeflate: false });

type EnvelopedArgs = ExecutionArgs & { rootValue: { execute: (args: ExecutionArgs) => unknown; subscribe: (args: ExecutionArgs) => unknown } };

// The recipe of yoga's documentation ("Subscriptions over graphql-ws"): every operation runs
// through yoga's envelop (its plugins, caches and context).
const disposable = useServer(
  {
    execute: (args) => (args as EnvelopedArgs).rootValue.execute(args) as never,
    subscribe: (args) => (args as EnvelopedArgs).rootValue.subscribe(args) as never,
    onSubscribe: async (context, _id, params) => {
      const { schema: enveloped, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
        ...context,
        req: context.extra.request,
        socket: context.extra.socket,
        params,
      });
      const args = {
        schema: enveloped,
        operationName: params.operationName,
        document: parse(params.query),
        variableValues: params.variables,
        contextValue: await contextFactory(),
        rootValue: { execute, subscribe },
      };
      const errors = validate(args.schema, args.document);
      if (errors.length > 0) return errors;
      return args;
    },
  },
  sockets,
);

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  serveControl(
    {
      kind: 'yoga',
      protocol: 'graphql-transport-ws',
      wsUrl: `ws://127.0.0.1:${port}${yoga.graphqlEndpoint}`,
      httpUrl: `http://127.0.0.1:${port}${yoga.graphqlEndpoint}`,
      apiKey: 'none',
    },
    async () => {
      stopConversations();
      for (const client of sockets.clients) client.terminate();
      await disposable.dispose();
      await new Promise((resolve) => server.close(resolve));
    },
  );
});
