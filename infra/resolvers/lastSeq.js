/**
 * Function of Query.conversation: the seq of the conversation's last stored event (0 when none),
 * read as the highest sort key of the events table.
 * Data source: the events table.
 */
import { util } from '@aws-appsync/utils';

export function request(ctx) {
  return {
    operation: 'Query',
    query: {
      expression: 'conversationId = :id',
      expressionValues: util.dynamodb.toMapValues({ ':id': ctx.args.conversationId }),
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
