/**
 * Mutation.deleteConversation (pipeline): refuses an unknown conversation (NotFoundException) or
 * one whose turn runs (ConflictException) in checkDeletable, then has the worker Lambda delete
 * every event and message (deleteWithWorker: more writes than a resolver can make) and answers
 * DELETED, as the local gateway does.
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
  return {};
}

export function response(ctx) {
  return { conversationId: ctx.args.conversationId, status: 'DELETED' };
}
