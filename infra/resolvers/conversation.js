/**
 * Query.conversation (pipeline): the conversation's own item and its messages, read by
 * conversationPage (up to four 1 MB pages), and the last stored seq (lastSeq). Null when the
 * conversation does not exist. Message parts are joined back into whole messages.
 * Layout: src/store/dynamodb.ts.
 */
import { util } from '@aws-appsync/utils';

export function request(ctx) {
  const conversationId = ctx.args.conversationId;
  if (!util.matches('^[A-Za-z0-9_.:-]{1,128}$', conversationId)) {
    util.error(
      `conversationId ${JSON.stringify(conversationId.slice(0, 140))} is not valid; use 1 to 128 letters, digits, "-", "_", "." or ":" (a UUID fits).`,
      'BadRequestException',
    );
  }
  ctx.stash.items = [];
  ctx.stash.nextToken = null;
  ctx.stash.done = false;
  return {};
}

export function response(ctx) {
  let conversation = null;
  const messages = [];
  let previous = null;
  for (const item of ctx.stash.items) {
    if (item.sk === 'CONVERSATION') {
      conversation = item;
    } else if (item.sk.startsWith('MESSAGE#')) {
      // Items come in key order: the parts of one message are consecutive.
      if (previous && previous.turn === item.turn && previous.role === item.role) {
        messages[messages.length - 1].content = messages[messages.length - 1].content + item.content;
      } else {
        messages.push({ turn: item.turn, role: item.role, content: item.content });
      }
      previous = item;
    }
  }
  if (!conversation) {
    return null;
  }
  if (!ctx.stash.done) {
    util.appendError(
      'The conversation holds more text than one answer carries: its latest messages are left out.',
      'TruncatedResult',
    );
  }
  return {
    conversationId: conversation.conversationId,
    status: conversation.status,
    lastSeq: ctx.stash.lastSeq,
    createdAt: conversation.createdAt,
    updatedAt: conversation.updatedAt,
    turns: conversation.turns.map((turn) => ({
      turn: turn.turn,
      status: turn.status,
      modelId: turn.modelId != null ? turn.modelId : null,
      startedAt: turn.startedAt,
      endedAt: turn.endedAt != null ? turn.endedAt : null,
    })),
    messages,
  };
}
