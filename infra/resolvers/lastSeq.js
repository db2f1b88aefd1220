/**
 * Function of Query.conversation and of startConversation: the seq of the conversation's last
 * stored event (0 when none), read as the highest sort key of the events table. startConversation
 * needs it only to end a stale turn (readConversation's `staleTurn`), and skips the read otherwise.
 * Data source: the events table.
 */
import { runtime, util } from '@aws-appsync/utils';

export function request(ctx) {
  const starting = ctx.args.input != null;
  if (starting && ctx.stash.staleTurn == null) {
    runtime.earlyReturn(null);
  }
  return {
    operation: 'Query',
    query: {
      expression: 'conversationId = :id',
      expressionValues: util.dynamodb.toMapValues({ ':id': starting ? ctx.stash.conversationId : ctx.args.conversationId }),
    },
    scanIndexForward: false,
    limit: 1,
    consistentRead: true,
  };
}

export function response(ctx) {
  if (ctx.error) {
    util.error(ctx.error.message, ctx.error.type);
  }
  const items = ctx.result.items;
  ctx.stash.lastSeq = items.length > 0 ? items[0].seq : 0;
  return ctx.stash.lastSeq;
}
