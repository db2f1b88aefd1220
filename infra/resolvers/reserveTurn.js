/**
 * Function of startConversation: reserves the next turn and stores the user's message in one
 * DynamoDB transaction, exactly as the DynamoDB store's beginTurn does (src/store/dynamodb.ts):
 * the conversation item is created, or updated only if its last turn is still the one
 * readConversation saw and is not running. Losing that race to another startConversation gives
 * ConflictException; nothing is then written.
 * Data source: the conversations table. ctx.env: CONVERSATIONS_TABLE, RETENTION_DAYS.
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

  const conversation =
    previousTurn === 0
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
  return { operation: 'TransactWriteItems', transactItems: [conversation, message] };
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
