/**
 * Mutation.cancelConversation: marks the conversation's last turn for cancellation
 * (cancelRequestedTurn = turn); the worker Lambda polls it and ends the turn with CANCELLED.
 * Answers CANCELLING while the turn runs, else the last turn's status, as the local gateway does.
 * The mark left on an ended turn is harmless: the next startConversation removes it.
 * Data source: the conversations table.
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
  return {
    operation: 'UpdateItem',
    key: util.dynamodb.toMapValues({ conversationId, sk: 'CONVERSATION' }),
    update: { expression: 'SET cancelRequestedTurn = #turn', expressionNames: { '#turn': 'turn' } },
    condition: { expression: 'attribute_exists(conversationId)' },
  };
}

export function response(ctx) {
  const conversationId = ctx.args.conversationId;
  if (ctx.error) {
    if (ctx.error.type === 'DynamoDB:ConditionalCheckFailedException') {
      util.error(`Conversation ${conversationId} was not found.`, 'NotFoundException');
    }
    util.error(ctx.error.message, ctx.error.type);
  }
  return { conversationId, status: ctx.result.status === 'RUNNING' ? 'CANCELLING' : ctx.result.status };
}
