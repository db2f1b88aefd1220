/**
 * Query.conversationEvents (pipeline): stored events with seq > afterSeq, oldest first, at most
 * `limit` (1 to 1000, default 1000), read by eventsPage (up to four 1 MB pages). Fewer than
 * `limit` may come back when the events are large: the answer is always the oldest ones, without
 * gaps, and the client asks again from the last seq it got. An unknown conversation is
 * NotFoundException (conversationExists). The checks are the local gateway's.
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
  const afterSeq = ctx.args.afterSeq != null ? ctx.args.afterSeq : 0;
  if (afterSeq < 0) {
    util.error(`afterSeq must be 0 or more; got ${afterSeq}.`, 'BadRequestException');
  }
  const limit = ctx.args.limit != null ? ctx.args.limit : 1000;
  if (limit < 1 || limit > 1000) {
    util.error(`limit must be from 1 to 1000; got ${limit}. Page with afterSeq for more.`, 'BadRequestException');
  }
  ctx.stash.afterSeq = afterSeq;
  ctx.stash.limit = limit;
  ctx.stash.events = [];
  ctx.stash.nextToken = null;
  ctx.stash.done = false;
  return {};
}

export function response(ctx) {
  return ctx.stash.events.map((event) => ({
    conversationId: event.conversationId,
    turn: event.turn,
    seq: event.seq,
    type: event.type,
    chunk: event.chunk != null ? event.chunk : null,
    error: event.error != null ? event.error : null,
    errorCode: event.errorCode != null ? event.errorCode : null,
    stopReason: event.stopReason != null ? event.stopReason : null,
    usage: event.usage != null ? event.usage : null,
    latencyMs: event.latencyMs != null ? event.latencyMs : null,
    createdAt: event.createdAt,
  }));
}
