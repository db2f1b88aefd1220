/**
 * Mutation.publishEvent, sendChunk, completeStream and sendError (@aws_iam only): the worker's
 * publish mutations, on a NONE data source. They store nothing; AppSync hands their result to the
 * subscriptions that listen to them (onConversationEvent, onReceiveChunk), filtered on
 * conversationId.
 */
export function request(ctx) {
  const args = ctx.args;
  const field = ctx.info.fieldName;
  if (field === 'publishEvent') {
    const event = args.event;
    return {
      payload: {
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
      },
    };
  }
  if (field === 'sendChunk') {
    return { payload: { conversationId: args.conversationId, chunk: args.chunk } };
  }
  if (field === 'completeStream') {
    return { payload: { conversationId: args.conversationId, status: 'COMPLETE' } };
  }
  return { payload: { conversationId: args.conversationId, error: args.error } };
}

export function response(ctx) {
  return ctx.result;
}
