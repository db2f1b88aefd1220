/**
 * Function of startConversation: reads the conversation's own item, refuses a conversation whose
 * turn is still running (ConflictException) or that belongs to someone else
 * (UnauthorizedException), and keeps the item in the stash for reserveTurn.
 *
 * A turn still RUNNING STALE_TURN_MS after it started has lost its worker: no invocation waits
 * longer than the function's maximum event age, and none runs longer than its timeout, so nothing
 * will end it (a worker killed for memory, a runtime crash, an invocation dropped from the queue).
 * It does not block the conversation: its number goes to the stash as `staleTurn`, lastSeq then
 * reads the seq its ERROR takes, and reserveTurn ends it in the transaction that starts the next.
 * Data source: the conversations table. Layout: src/store/dynamodb.ts. ctx.env: STALE_TURN_MS.
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
      const current = existing.turns != null ? existing.turns[existing.turn - 1] : null;
      // Unset or not a number: never stale.
      const stale = current != null && current.startedAt < ctx.stash.now - Number(ctx.env.STALE_TURN_MS);
      if (!stale) {
        util.error(
          `Conversation ${ctx.stash.conversationId} already has a turn running; wait for its COMPLETE, ERROR or CANCELLED event, or cancel it, before starting another.`,
          'ConflictException',
        );
      }
      ctx.stash.staleTurn = existing.turn;
    }
  }
  ctx.stash.previousTurn = existing ? existing.turn : 0;
  ctx.stash.conversation = existing;
  return existing;
}
