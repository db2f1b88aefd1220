/**
 * Function of Query.conversationEvents, repeated in the pipeline: reads one page (at most 1 MB)
 * of events after the stash's seq, up to the limit still open. A page after the last does nothing.
 * Data source: the events table.
 */
import { runtime, util } from '@aws-appsync/utils';

export function request(ctx) {
  if (ctx.stash.done) {
    runtime.earlyReturn(null);
  }
  const query = {
    operation: 'Query',
    query: {
      expression: 'conversationId = :id AND seq > :after',
      expressionValues: util.dynamodb.toMapValues({ ':id': ctx.args.conversationId, ':after': ctx.stash.afterSeq }),
    },
    limit: ctx.stash.limit - ctx.stash.events.length,
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
  ctx.stash.events = ctx.stash.events.concat(ctx.result.items);
  ctx.stash.nextToken = ctx.result.nextToken ? ctx.result.nextToken : null;
  ctx.stash.done = !ctx.stash.nextToken || ctx.stash.events.length >= ctx.stash.limit;
  return null;
}
