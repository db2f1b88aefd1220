/**
 * Function of deleteConversation: asks the worker Lambda, synchronously, to delete the
 * conversation with its messages and events (the DynamoDB store's deleteConversation).
 * Data source: the worker Lambda (src/lambda/handler.ts, parseDeletion).
 */
import { util } from '@aws-appsync/utils';

export function request(ctx) {
  return {
    operation: 'Invoke',
    invocationType: 'RequestResponse',
    payload: { operation: 'deleteConversation', conversationId: ctx.args.conversationId },
  };
}

export function response(ctx) {
  if (ctx.error) {
    util.error(`The conversation could not be deleted: ${ctx.error.message}`, 'InternalFailure');
  }
  return ctx.result;
}
