/**
 * Function of Query.conversationEvents: when no event came back, tells an unknown conversation
 * (NotFoundException) from one that has no events after afterSeq (an empty list).
 * Data source: the conversations table.
 */
import { runtime, util } from '@aws-appsync/utils';

export function request(ctx) {
  if (ctx.stash.events.length > 0) {
    runtime.earlyReturn(null);
  }
  return {
    operation: 'GetItem',
    key: util.dynamodb.toMapValues({ conversationId: ctx.args.conversationId, sk: 'CONVERSATION' }),
    consistentRead: true,
  };
}

export function response(ctx) {
  if (ctx.error) {
    util.error(ctx.error.message, ctx.error.type);
  }
  if (!ctx.result) {
    util.error(`Conversation ${ctx.args.conversationId} was not found.`, 'NotFoundException');
  }
  return null;
}
