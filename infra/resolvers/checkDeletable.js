/**
 * Function of deleteConversation: the conversation must exist and have no turn running.
 * Data source: the conversations table.
 */
import { util } from '@aws-appsync/utils';

export function request(ctx) {
  return {
    operation: 'GetItem',
    key: util.dynamodb.toMapValues({ conversationId: ctx.args.conversationId, sk: 'CONVERSATION' }),
    consistentRead: true,
  };
}

export function response(ctx) {
  const conversationId = ctx.args.conversationId;
  if (ctx.error) {
    util.error(ctx.error.message, ctx.error.type);
  }
  if (!ctx.result) {
    util.error(`Conversation ${conversationId} was not found.`, 'NotFoundException');
  }
  if (ctx.result.status === 'RUNNING') {
    util.error(`Conversation ${conversationId} has a turn running; cancel it before deleting the conversation.`, 'ConflictException');
  }
  return null;
}
