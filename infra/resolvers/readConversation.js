/**
 * Function of startConversation: reads the conversation's own item, refuses a conversation whose
 * turn is still running (ConflictException) or that belongs to someone else
 * (UnauthorizedException), and keeps the item in the stash for reserveTurn.
 * Data source: the conversations table. Layout: src/store/dynamodb.ts.
 */
import { util } from '@aws-appsync/utils';

export function request(ctx) {
  return {
    operation: 'GetItem',
    key: util.dynamodb.toMapValues({ conversationId: ctx.stash.conversationId, sk: 'CONVERSATION' }),
    consistentRead: true,
  };
}

export function response(ctx) {
  if (ctx.error) {
    util.error(ctx.error.message, ctx.error.type);
  }
  const existing = ctx.result;
  if (existing) {
    if (existing.owner && ctx.stash.owner && existing.owner !== ctx.stash.owner) {
      util.error('You are not authorized to make this call.', 'UnauthorizedException');
    }
    if (existing.status === 'RUNNING') {
      util.error(
        `Conversation ${ctx.stash.conversationId} already has a turn running; wait for its COMPLETE, ERROR or CANCELLED event, or cancel it, before starting another.`,
        'ConflictException',
      );
    }
  }
  ctx.stash.previousTurn = existing ? existing.turn : 0;
  return existing;
}
