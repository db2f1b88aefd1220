/**
 * Function of startConversation: hands the reserved turn to the worker Lambda as an Event
 * (asynchronous) invocation, so the mutation answers at once while the model runs for up to
 * 15 minutes. The payload is the worker's InvocationEvent (src/domain.ts, src/lambda/handler.ts).
 * Data source: the worker Lambda.
 */

function orNull(value) {
  return value === undefined ? null : value;
}

export function request(ctx) {
  const input = ctx.args.input;
  return {
    operation: 'Invoke',
    invocationType: 'Event',
    payload: {
      conversationId: ctx.stash.conversationId,
      turn: ctx.stash.turn,
      prompt: input.prompt,
      system: orNull(input.system),
      modelId: orNull(input.modelId),
      maxTokens: orNull(input.maxTokens),
      temperature: orNull(input.temperature),
      topP: orNull(input.topP),
    },
  };
}

export function response(ctx) {
  if (ctx.error) {
    // releaseTurn ends the turn, then answers WorkerUnavailable.
    ctx.stash.workerUnavailable = ctx.error.message;
  }
  return null;
}
