/**
 * Function of startConversation: reserves the next turn and stores the user's message in one
 * DynamoDB transaction, exactly as the DynamoDB store's beginTurn does (src/store/dynamodb.ts):
 * the conversation item is created, or updated only if its last turn is still the one
 * readConversation saw and is not running. Losing that race to another startConversation gives
 * ConflictException; nothing is then written.
 *
 * When that turn is still RUNNING but stale (readConversation's `staleTurn`: its worker is gone),
 * the same transaction ends it as the local gateway's restart recovery does: ERROR `Interrupted`
 * in its entry of `turns`, and an ERROR event after the conversation's last (lastSeq), so that a
 * client reading its events sees an end. Its text so far stays in its events; it gets no assistant
 * message, so the model's history leaves that turn out.
 * Data source: the conversations table (and a put into the events table).
 * ctx.env: CONVERSATIONS_TABLE, EVENTS_TABLE, RETENTION_DAYS, STALE_TURN_MS.
 */
import { util } from '@aws-appsync/utils';

function conflict(ctx) {
  util.error(
    `Conversation ${ctx.stash.conversationId} already has a turn running; wait for its COMPLETE, ERROR or CANCELLED event, or cancel it, before starting another.`,
    'ConflictException',
  );
}

export function request(ctx) {
  const input = ctx.args.input;
  const table = ctx.env.CONVERSATIONS_TABLE;
  const conversationId = ctx.stash.conversationId;
  const now = ctx.stash.now;
  const previousTurn = ctx.stash.previousTurn;
  const turn = previousTurn + 1;
  const expiresAt = Math.floor(now / 1000) + Number(ctx.env.RETENTION_DAYS) * 86400;
  const entry = { turn, status: 'RUNNING', modelId: input.modelId != null ? input.modelId : null, startedAt: now, endedAt: null };
  const key = util.dynamodb.toMapValues({ conversationId, sk: 'CONVERSATION' });
  ctx.stash.turn = turn;

  const staleTurn = ctx.stash.staleTurn;
  const conversation =
    staleTurn != null
      ? endStaleTurn(ctx, { key, turn, entry, expiresAt })
      : previousTurn === 0
      ? {
          table,
          operation: 'PutItem',
          key,
          attributeValues: util.dynamodb.toMapValues({
            owner: ctx.stash.owner,
            status: 'RUNNING',
            turn,
            createdAt: now,
            updatedAt: now,
            turns: [entry],
            expiresAt,
          }),
          condition: { expression: 'attribute_not_exists(conversationId)', returnValuesOnConditionCheckFailure: false },
        }
      : {
          table,
          operation: 'UpdateItem',
          key,
          update: {
            expression:
              'SET #status = :running, #turn = :turn, updatedAt = :now, turns = list_append(turns, :entry), expiresAt = :expiresAt REMOVE cancelRequestedTurn',
            expressionNames: { '#status': 'status', '#turn': 'turn' },
            expressionValues: util.dynamodb.toMapValues({
              ':running': 'RUNNING',
              ':turn': turn,
              ':now': now,
              ':entry': [entry],
              ':expiresAt': expiresAt,
            }),
          },
          condition: {
            expression: '#turn = :previous AND #status <> :running',
            expressionNames: { '#status': 'status', '#turn': 'turn' },
            expressionValues: util.dynamodb.toMapValues({ ':previous': previousTurn, ':running': 'RUNNING' }),
            returnValuesOnConditionCheckFailure: false,
          },
        };

  // The prompt is one message part: MAX_PROMPT_BYTES keeps it far below DynamoDB's 400 KB item limit.
  const message = {
    table,
    operation: 'PutItem',
    key: util.dynamodb.toMapValues({ conversationId, sk: `MESSAGE#${`0000000000${turn}`.slice(-10)}#0#000` }),
    attributeValues: util.dynamodb.toMapValues({ turn, role: 'user', part: 0, content: input.prompt, expiresAt }),
  };
  const items = [conversation, message];
  if (staleTurn != null) items.push(staleTurnError(ctx, expiresAt));
  return { operation: 'TransactWriteItems', transactItems: items };
}

/** The update that starts `turn` after the stale one, whose entry in `turns` it ends. */
function endStaleTurn(ctx, { key, turn, entry, expiresAt }) {
  const now = ctx.stash.now;
  const turns = ctx.stash.conversation.turns.map((existing) =>
    existing.turn === ctx.stash.staleTurn ? { ...existing, status: 'ERROR', endedAt: now } : existing,
  );
  turns.push(entry);
  return {
    table: ctx.env.CONVERSATIONS_TABLE,
    operation: 'UpdateItem',
    key,
    update: {
      expression: 'SET #status = :running, #turn = :turn, updatedAt = :now, turns = :turns, expiresAt = :expiresAt REMOVE cancelRequestedTurn',
      expressionNames: { '#status': 'status', '#turn': 'turn' },
      expressionValues: util.dynamodb.toMapValues({ ':running': 'RUNNING', ':turn': turn, ':now': now, ':turns': turns, ':expiresAt': expiresAt }),
    },
    // Still the stale turn, still running: another startConversation that took it over first wins.
    condition: {
      expression: '#turn = :previous AND #status = :running',
      expressionNames: { '#status': 'status', '#turn': 'turn' },
      expressionValues: util.dynamodb.toMapValues({ ':previous': ctx.stash.staleTurn, ':running': 'RUNNING' }),
      returnValuesOnConditionCheckFailure: false,
    },
  };
}

/** The stale turn's ERROR event, the item the worker's store would write (src/store/dynamodb.ts). */
function staleTurnError(ctx, expiresAt) {
  const minutes = Math.round(Number(ctx.env.STALE_TURN_MS) / 60000);
  return {
    table: ctx.env.EVENTS_TABLE,
    operation: 'PutItem',
    key: util.dynamodb.toMapValues({ conversationId: ctx.stash.conversationId, seq: ctx.stash.lastSeq + 1 }),
    attributeValues: util.dynamodb.toMapValues({
      turn: ctx.stash.staleTurn,
      type: 'ERROR',
      errorCode: 'Interrupted',
      error: `The turn was interrupted: its worker stopped without ending it, and the next startConversation ended it (more than ${minutes} minutes after it started). Its text so far is in the conversation's events; start the turn again to continue.`,
      createdAt: ctx.stash.now,
      expiresAt,
    }),
    condition: { expression: 'attribute_not_exists(seq)', returnValuesOnConditionCheckFailure: false },
  };
}

export function response(ctx) {
  if (ctx.error) {
    // A cancelled transaction is a lost race, unless its reasons name something else (an item
    // too large, say): then that error is passed on as it is.
    const cancelled = ctx.error.type === 'DynamoDB:TransactionCanceledException';
    const reasons = ctx.result && ctx.result.cancellationReasons ? ctx.result.cancellationReasons : [];
    const lost = reasons.filter((reason) => {
      const code = reason ? reason.type || reason.code : null;
      return code === 'ConditionalCheckFailed' || code === 'TransactionConflict';
    });
    if (cancelled && (reasons.length === 0 || lost.length > 0)) {
      conflict(ctx);
    }
    util.error(ctx.error.message, ctx.error.type);
  }
  return { conversationId: ctx.stash.conversationId, turn: ctx.stash.turn };
}
