/**
 * Function of startConversation, after invokeWorker: when the worker could not be started (the
 * Invoke call itself failed), ends the turn reserveTurn reserved, ERROR in the conversation and
 * in the turn's entry, so that the conversation takes a new turn at once; then answers
 * WorkerUnavailable. The turn has no events: nothing ran. Otherwise it does nothing.
 * Data source: the conversations table.
 */
import { runtime, util } from '@aws-appsync/utils';

export function request(ctx) {
  if (ctx.stash.workerUnavailable == null) {
    runtime.earlyReturn(null);
  }
  const turn = ctx.stash.turn;
  return {
    operation: 'UpdateItem',
    key: util.dynamodb.toMapValues({ conversationId: ctx.stash.conversationId, sk: 'CONVERSATION' }),
    update: {
      expression: `SET #status = :error, updatedAt = :now, #turns[${turn - 1}].#status = :error, #turns[${turn - 1}].endedAt = :now`,
      expressionNames: { '#status': 'status', '#turns': 'turns' },
      expressionValues: util.dynamodb.toMapValues({ ':error': 'ERROR', ':now': ctx.stash.now }),
    },
    // Still the turn reserved here, still running.
    condition: {
      expression: '#turn = :turn AND #status = :running',
      expressionNames: { '#status': 'status', '#turn': 'turn' },
      expressionValues: util.dynamodb.toMapValues({ ':turn': turn, ':running': 'RUNNING' }),
    },
  };
}

export function response(ctx) {
  const ended = ctx.error
    ? ` The turn could not be ended (${ctx.error.message}); the conversation takes a new turn once it is stale.`
    : ' The turn was ended; start it again.';
  util.error(`The turn was reserved but the worker could not be started (${ctx.stash.workerUnavailable}).${ended}`, 'WorkerUnavailable');
  return null;
}
