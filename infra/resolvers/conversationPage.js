/**
 * Function of Query.conversation, repeated in the pipeline: reads one page (at most 1 MB) of the
 * conversation's items, its own item first, then its message parts in key order. A page after
 * the last one does nothing.
 * Data source: the conversations table.
 */
import { runtime, util } from '@aws-appsync/utils';

export function request(ctx) {
  if (ctx.stash.done) {
    runtime.earlyReturn(null);
  }
  const query = {
    operation: 'Query',
    query: {
      expression: 'conversationId = :id',
      expressionValues: util.dynamodb.toMapValues({ ':id': ctx.args.conversationId }),
    },
    consistentRead: true,
  };
  if (ctx.stash.nextToken) {
    query.nextToken = ctx.stash.nextToken;
  }
  return query;
}

export function response(ctx) {
  if (ctx.error) {
    util.error(ctx.error.message, ctx.error.type);
  }
  ctx.stash.items = ctx.stash.items.concat(ctx.result.items);
  ctx.stash.nextToken = ctx.result.nextToken ? ctx.result.nextToken : null;
  ctx.stash.done = !ctx.stash.nextToken;
  return null;
}
