/**
 * Mutation.startConversation (pipeline): checks the input, names the conversation, and answers
 * STARTED once the functions have reserved the turn (readConversation, reserveTurn) and handed it
 * to the worker Lambda as an Event invocation (invokeWorker). The model runs in the background.
 *
 * The checks and their messages are the local gateway's (src/gateway/operations.ts).
 * ctx.env: MAX_PROMPT_BYTES (the prompt's and the system prompt's limit in UTF-8 bytes).
 */
import { util } from '@aws-appsync/utils';

/** UTF-8 length of a string, from its base64 form (APPSYNC_JS has no TextEncoder). */
function utf8Bytes(text) {
  const encoded = util.base64Encode(text);
  const padding = encoded.endsWith('==') ? 2 : encoded.endsWith('=') ? 1 : 0;
  return (encoded.length / 4) * 3 - padding;
}

function badRequest(message) {
  util.error(message, 'BadRequestException');
}

export function request(ctx) {
  const input = ctx.args.input;
  const maxPromptBytes = Number(ctx.env.MAX_PROMPT_BYTES);
  if (input.prompt.trim().length === 0) {
    badRequest('input.prompt is empty; send the text of the user message (1 byte or more).');
  }
  const promptBytes = utf8Bytes(input.prompt);
  if (promptBytes > maxPromptBytes) {
    badRequest(`input.prompt is ${promptBytes} bytes; the limit is ${maxPromptBytes} bytes (LONGRUN_MAX_PROMPT_BYTES).`);
  }
  if (input.system != null && utf8Bytes(input.system) > maxPromptBytes) {
    badRequest(`input.system is larger than ${maxPromptBytes} bytes (LONGRUN_MAX_PROMPT_BYTES).`);
  }
  if (input.conversationId != null && !util.matches('^[A-Za-z0-9_.:-]{1,128}$', input.conversationId)) {
    badRequest(
      `input.conversationId ${JSON.stringify(input.conversationId.slice(0, 140))} is not valid; use 1 to 128 letters, digits, "-", "_", "." or ":" (a UUID fits).`,
    );
  }
  if (input.modelId != null && (input.modelId.length === 0 || input.modelId.length > 256)) {
    badRequest('input.modelId must be 1 to 256 characters.');
  }
  if (input.maxTokens != null && (input.maxTokens < 1 || input.maxTokens > 1000000)) {
    badRequest(`input.maxTokens must be from 1 to 1000000; got ${input.maxTokens}.`);
  }
  if (input.temperature != null && !(input.temperature >= 0 && input.temperature <= 2)) {
    badRequest(`input.temperature must be from 0 to 2; got ${input.temperature}.`);
  }
  if (input.topP != null && !(input.topP > 0 && input.topP <= 1)) {
    badRequest(`input.topP must be more than 0 and at most 1; got ${input.topP}.`);
  }
  ctx.stash.conversationId = input.conversationId != null ? input.conversationId : util.autoId();
  ctx.stash.now = util.time.nowEpochMilliSeconds();
  // API keys carry no identity: conversations started with one have no owner.
  ctx.stash.owner = ctx.identity && ctx.identity.sub ? ctx.identity.sub : null;
  return {};
}

export function response(ctx) {
  return { conversationId: ctx.stash.conversationId, status: 'STARTED' };
}
