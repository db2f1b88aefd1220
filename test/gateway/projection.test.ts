/**
 * The fan-out's compiled serialiser must produce exactly what graphql-js execution produces, or
 * decline (and the server falls back to execution).
 */
import { execute, parse, type FieldNode, type GraphQLObjectType, type OperationDefinitionNode } from 'graphql';
import { describe, expect, it } from 'vitest';
import { makeEvent } from '../../src/domain.js';
import { compileProjection, loadSchema } from '../../src/gateway/schema.js';

const loaded = loadSchema();
const subscription = loaded.schema.getSubscriptionType() as GraphQLObjectType;
const event = makeEvent({
  conversationId: 'c1',
  turn: 2,
  seq: 7,
  type: 'COMPLETE',
  stopReason: 'end_turn',
  usage: { inputTokens: 10, outputTokens: 20 },
  createdAt: 1_700_000_000_123.5,
});
const chunk = makeEvent({ conversationId: 'c1', turn: 1, seq: 1, type: 'CHUNK', chunk: 'a "b"\n\\ 🦊 \u2028', createdAt: 1 });

function both(query: string, value: unknown) {
  const document = parse(query);
  const operation = document.definitions[0] as OperationDefinitionNode;
  const field = operation.selectionSet.selections[0] as FieldNode;
  const compiled = compileProjection(loaded.schema, subscription, field);
  const executed = execute({ schema: loaded.schema, document, rootValue: { [field.name.value]: value }, variableValues: { id: 'c1' } });
  return { compiled: compiled?.(value), expected: JSON.stringify((executed as { data: unknown }).data) };
}

describe('compileProjection', () => {
  it.each([
    ['every field', 'subscription($id: ID!) { onConversationEvent(conversationId: $id) { conversationId turn seq type chunk error errorCode stopReason usage { inputTokens outputTokens } latencyMs createdAt } }'],
    ['aliases and __typename', 'subscription { e: onConversationEvent(conversationId: "c1") { __typename n: seq kind: type usage { __typename out: outputTokens } } }'],
    ['a reordered subset', 'subscription { onConversationEvent(conversationId: "c1") { usage { outputTokens inputTokens } seq } }'],
  ])('matches graphql-js for %s', (_name, query) => {
    for (const value of [event, chunk]) {
      const { compiled, expected } = both(query, value);
      expect(compiled).toBe(expected);
      expect(JSON.parse(compiled!)).toEqual(JSON.parse(expected));
    }
  });

  it('matches graphql-js for the pattern subscription', () => {
    const { compiled, expected } = both('subscription { onReceiveChunk(conversationId: "c1") { conversationId chunk } }', { conversationId: 'c1', chunk: 'x\ny' });
    expect(compiled).toBe(expected);
  });

  it.each([
    ['fragments', 'subscription { onConversationEvent(conversationId: "c1") { ...F } } fragment F on ConversationEvent { seq }'],
    ['inline fragments', 'subscription { onConversationEvent(conversationId: "c1") { ... on ConversationEvent { seq } } }'],
    ['directives', 'subscription { onConversationEvent(conversationId: "c1") { seq @include(if: true) } }'],
    ['repeated keys', 'subscription { onConversationEvent(conversationId: "c1") { seq seq } }'],
  ])('declines %s, leaving them to graphql-js', (_name, query) => {
    expect(both(query, event).compiled).toBeUndefined();
  });
});
