/**
 * The AWS deployment of longrun: an AppSync GraphQL API (the one schema, `schema/schema.graphql`),
 * JavaScript resolvers over two DynamoDB tables, and the worker Lambda that runs each turn against
 * Amazon Bedrock and publishes its events back through the API's `@aws_iam` mutations.
 *
 * CDK context (`-c name=value`, or `context` in `infra/cdk.json`):
 *
 * | name                  | default                                          | what                                         |
 * |-----------------------|--------------------------------------------------|----------------------------------------------|
 * | `modelId`             | `us.anthropic.claude-3-5-sonnet-20241022-v2:0`   | Bedrock model or inference profile the worker may call |
 * | `apiKeyExpiryDays`    | 7                                                | days until the API key expires (1 to 365)    |
 * | `retentionDays`       | 7                                                | DynamoDB TTL of items and log retention      |
 * | `reservedConcurrency` | none                                             | reserved concurrency of the worker (turns at once) |
 * | `bedrockRegions`      | from the profile's prefix                        | comma-separated regions the profile routes to |
 * | `maxPromptBytes`      | 102400                                           | largest prompt and system prompt, in UTF-8 bytes |
 *
 * The stack is environment-agnostic: it synthesises with no account, region or credentials.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aws, CfnOutput, Duration, Expiration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as appsync from 'aws-cdk-lib/aws-appsync';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { PUBLISH_MUTATIONS, RESOLVERS, RESOLVERS_DIR, type DataSourceName } from './resolvers.js';
import { AppSyncSchemaFile } from './schema.js';

/** The project's root folder (where package.json is). */
export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Lambda's longest run: the worker ends its turn itself 20 s before (src/lambda/handler.ts). */
const WORKER_TIMEOUT = Duration.minutes(15);
/** How long an Event invocation may wait in Lambda's queue (throttled) before Lambda drops it. */
const WORKER_MAX_EVENT_AGE = Duration.minutes(15);
/**
 * A turn still RUNNING this long after it started has no worker left to end it: its invocation
 * waited at most WORKER_MAX_EVENT_AGE, then ran at most WORKER_TIMEOUT. The next startConversation
 * of its conversation ends it (infra/resolvers/readConversation.js, reserveTurn.js).
 */
export const STALE_TURN = Duration.minutes(WORKER_MAX_EVENT_AGE.toMinutes() + WORKER_TIMEOUT.toMinutes() + 1);

/** The model the worker calls unless the `modelId` context names another. */
export const DEFAULT_MODEL_ID = 'us.anthropic.claude-3-5-sonnet-20241022-v2:0';

/**
 * Regions a cross-region inference profile may route a request to, by the profile's prefix. A
 * request through the profile is served by a foundation model in any of them, so the worker
 * needs the foundation model's ARN in each. Lists as AWS documents them for the Anthropic
 * models; a profile that routes elsewhere takes the `bedrockRegions` context.
 */
export const INFERENCE_PROFILE_REGIONS: Readonly<Record<string, readonly string[]>> = {
  us: ['us-east-1', 'us-east-2', 'us-west-2'],
  eu: ['eu-central-1', 'eu-north-1', 'eu-west-1', 'eu-west-3'],
  apac: ['ap-northeast-1', 'ap-northeast-2', 'ap-south-1', 'ap-southeast-1', 'ap-southeast-2'],
};

/** The stack's settings; each defaults to the CDK context value of the same name, then to the documented default. */
export interface LongrunStackProps extends StackProps {
  modelId?: string;
  apiKeyExpiryDays?: number;
  retentionDays?: number;
  reservedConcurrency?: number;
  bedrockRegions?: readonly string[];
  maxPromptBytes?: number;
}

/** The settings after defaults and checks. */
export interface LongrunSettings {
  modelId: string;
  apiKeyExpiryDays: number;
  retentionDays: number;
  reservedConcurrency: number | undefined;
  /** The inference profile's id, or undefined when `modelId` is a foundation model. */
  inferenceProfileId: string | undefined;
  /** The foundation model behind `modelId`. */
  foundationModelId: string;
  /** Regions whose foundation model the worker may invoke; undefined means the stack's own region. */
  bedrockRegions: readonly string[] | undefined;
  maxPromptBytes: number;
}

/** Reads the settings from props and context; throws an Error naming the bad value. */
export function resolveSettings(scope: Construct, props: LongrunStackProps = {}): LongrunSettings {
  const context = (name: string): unknown => scope.node.tryGetContext(name);
  const whole = (name: string, given: number | undefined, fallback: number | undefined, min: number, max: number): number | undefined => {
    const raw = given ?? context(name);
    if (raw === undefined || raw === null || raw === '') return fallback;
    const value = typeof raw === 'number' ? raw : Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`The "${name}" context value must be a whole number from ${min} to ${max}; got ${JSON.stringify(raw)}.`);
    }
    return value;
  };
  const modelId = String(props.modelId ?? context('modelId') ?? DEFAULT_MODEL_ID);
  if (!/^[A-Za-z0-9._:-]{1,200}$/.test(modelId)) throw new Error(`The "modelId" context value is not a Bedrock model id: ${JSON.stringify(modelId)}.`);
  const givenRegions = props.bedrockRegions ?? parseList(context('bedrockRegions'));
  for (const region of givenRegions ?? []) {
    if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(region)) throw new Error(`The "bedrockRegions" context value has a bad region: ${JSON.stringify(region)}.`);
  }
  const prefix = modelId.split('.')[0]!;
  let isProfile: boolean;
  let bedrockRegions: readonly string[] | undefined;
  if (INFERENCE_PROFILE_REGIONS[prefix] !== undefined) {
    isProfile = true;
    bedrockRegions = givenRegions ?? INFERENCE_PROFILE_REGIONS[prefix];
  } else if (isVendor(prefix)) {
    // A foundation model called directly, in the stack's region unless told otherwise.
    isProfile = false;
    bedrockRegions = givenRegions;
  } else if (givenRegions !== undefined) {
    isProfile = true;
    bedrockRegions = givenRegions;
  } else {
    throw new Error(
      `The "modelId" context value ${JSON.stringify(modelId)} starts with "${prefix}.", which is neither a known inference-profile prefix (${Object.keys(INFERENCE_PROFILE_REGIONS).join(', ')}) nor a model vendor; give the regions it routes to with -c bedrockRegions=region1,region2.`,
    );
  }
  return {
    modelId,
    apiKeyExpiryDays: whole('apiKeyExpiryDays', props.apiKeyExpiryDays, 7, 1, 365)!,
    retentionDays: whole('retentionDays', props.retentionDays, 7, 1, 3650)!,
    reservedConcurrency: whole('reservedConcurrency', props.reservedConcurrency, undefined, 1, 10_000),
    inferenceProfileId: isProfile ? modelId : undefined,
    foundationModelId: isProfile ? modelId.slice(prefix.length + 1) : modelId,
    bedrockRegions,
    // Prompt and system prompt travel together in the Event invocation, whose payload Lambda caps at 256 KB.
    maxPromptBytes: whole('maxPromptBytes', props.maxPromptBytes, 100 * 1024, 1, 120_000)!,
  };
}

/** Vendors of Bedrock foundation model ids (`anthropic.claude-…`, `meta.llama…`): not profile prefixes. */
function isVendor(prefix: string): boolean {
  return ['anthropic', 'amazon', 'meta', 'mistral', 'cohere', 'ai21', 'deepseek', 'writer', 'stability', 'openai', 'qwen'].includes(prefix);
}

function parseList(value: unknown): string[] | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (Array.isArray(value)) return value.map(String);
  return String(value)
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** CloudWatch Logs accepts only these retention periods; the smallest one at least as long is used. */
const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

export function logRetentionFor(days: number): logs.RetentionDays {
  return (LOG_RETENTION_DAYS.find((allowed) => allowed >= days) ?? 3653) as logs.RetentionDays;
}

/** The longrun stack. */
export class LongrunStack extends Stack {
  readonly api: appsync.GraphqlApi;
  readonly worker: NodejsFunction;
  readonly conversationsTable: dynamodb.Table;
  readonly eventsTable: dynamodb.Table;
  readonly settings: LongrunSettings;

  constructor(scope: Construct, id: string, props: LongrunStackProps = {}) {
    super(scope, id, props);
    const settings = resolveSettings(this, props);
    this.settings = settings;
    const retention = logRetentionFor(settings.retentionDays);

    // Both tables: on-demand, items expire `retentionDays` after their last write (src/store/dynamodb.ts).
    const tableProps = {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: 'expiresAt',
      removalPolicy: RemovalPolicy.DESTROY,
      partitionKey: { name: 'conversationId', type: dynamodb.AttributeType.STRING },
    } as const;
    this.conversationsTable = new dynamodb.Table(this, 'Conversations', {
      ...tableProps,
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
    });
    this.eventsTable = new dynamodb.Table(this, 'Events', {
      ...tableProps,
      sortKey: { name: 'seq', type: dynamodb.AttributeType.NUMBER },
    });

    this.api = new appsync.GraphqlApi(this, 'Api', {
      name: `${this.stackName}-api`,
      definition: appsync.Definition.fromSchema(new AppSyncSchemaFile(join(PROJECT_ROOT, 'schema', 'schema.graphql'))),
      authorizationConfig: {
        defaultAuthorization: {
          authorizationType: appsync.AuthorizationType.API_KEY,
          apiKeyConfig: {
            description: `longrun clients; expires ${settings.apiKeyExpiryDays} days after the deploy that created it`,
            expires: Expiration.after(Duration.days(settings.apiKeyExpiryDays)),
          },
        },
        additionalAuthorizationModes: [{ authorizationType: appsync.AuthorizationType.IAM }],
      },
      // Resolver errors only, without request contents; CDK sets the group's retention.
      logConfig: { fieldLogLevel: appsync.FieldLogLevel.ERROR, excludeVerboseContent: true, retention },
      environmentVariables: {
        CONVERSATIONS_TABLE: this.conversationsTable.tableName,
        EVENTS_TABLE: this.eventsTable.tableName,
        RETENTION_DAYS: String(settings.retentionDays),
        MAX_PROMPT_BYTES: String(settings.maxPromptBytes),
        STALE_TURN_MS: String(STALE_TURN.toMilliseconds()),
      },
    });

    const workerLogs = new logs.LogGroup(this, 'WorkerLogs', { retention, removalPolicy: RemovalPolicy.DESTROY });
    const role = new iam.Role(this, 'WorkerRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'longrun worker: its log group, its two tables, the publish mutations and the configured Bedrock model only',
    });
    role.addToPolicy(
      new iam.PolicyStatement({ actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [workerLogs.logGroupArn] }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        // DeleteItem and BatchWriteItem: deleteConversation, which the resolver hands to the worker.
        actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem', 'dynamodb:Query'],
        resources: [this.conversationsTable.tableArn, this.eventsTable.tableArn],
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['appsync:GraphQL'],
        resources: PUBLISH_MUTATIONS.map((field) => `${this.api.arn}/types/Mutation/fields/${field}`),
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
        resources: this.bedrockArns(settings),
      }),
    );

    this.worker = new NodejsFunction(this, 'Worker', {
      description: 'longrun worker: runs one conversation turn against Bedrock and publishes its events; deletes conversations',
      entry: join(PROJECT_ROOT, 'src', 'lambda', 'handler.ts'),
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 512,
      timeout: WORKER_TIMEOUT,
      role,
      logGroup: workerLogs,
      // A retried Event invocation would run the turn twice; a turn that fails ends itself with ERROR.
      retryAttempts: 0,
      // An invocation queued longer (the function throttled) is dropped; its turn is then stale.
      maxEventAge: WORKER_MAX_EVENT_AGE,
      reservedConcurrentExecutions: settings.reservedConcurrency,
      environment: {
        LONGRUN_CONVERSATIONS_TABLE: this.conversationsTable.tableName,
        LONGRUN_EVENTS_TABLE: this.eventsTable.tableName,
        LONGRUN_GRAPHQL_URL: this.api.graphqlUrl,
        LONGRUN_MODEL_ID: settings.modelId,
        LONGRUN_RETENTION_DAYS: String(settings.retentionDays),
        LONGRUN_CANCEL_POLL_MS: '1000',
        LONGRUN_LOG_LEVEL: 'info',
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: {
        // Local esbuild only: no Docker.
        forceDockerBundling: false,
        format: OutputFormat.ESM,
        target: 'node22',
        mainFields: ['module', 'main'],
        minify: true,
        sourceMap: true,
        // The tested SDK versions go in the bundle rather than the runtime's own.
        bundleAwsSDK: true,
        // CommonJS dependencies bundled into ESM still call require().
        banner: "import { createRequire as __longrunCreateRequire } from 'node:module'; const require = __longrunCreateRequire(import.meta.url);",
      },
    });

    const conversationsSource = new appsync.DynamoDbDataSource(this, 'ConversationsSource', {
      api: this.api,
      table: this.conversationsTable,
      description: 'conversations and messages',
    });
    // startConversation ends a stale turn with an ERROR event in the same transaction (infra/resolvers/reserveTurn.js).
    this.eventsTable.grant(conversationsSource, 'dynamodb:PutItem');
    const dataSources: Record<DataSourceName, appsync.BaseDataSource> = {
      conversations: conversationsSource,
      events: new appsync.DynamoDbDataSource(this, 'EventsSource', {
        api: this.api,
        table: this.eventsTable,
        readOnlyAccess: true,
        description: 'events, read only: the worker writes them',
      }),
      worker: new appsync.LambdaDataSource(this, 'WorkerSource', { api: this.api, lambdaFunction: this.worker }),
      none: new appsync.NoneDataSource(this, 'PublishSource', { api: this.api, description: 'publish mutations: delivered to subscribers, stored nowhere' }),
    };
    // Inline: the template carries the resolvers' code itself, and no asset is uploaded for them.
    const code = (file: string) => appsync.Code.fromInline(readFileSync(join(RESOLVERS_DIR, file), 'utf8'));
    const runtime = appsync.FunctionRuntime.JS_1_0_0;
    for (const definition of RESOLVERS) {
      const id = `${definition.typeName}${definition.fieldName[0]!.toUpperCase()}${definition.fieldName.slice(1)}`;
      if (definition.kind === 'unit') {
        new appsync.Resolver(this, id, {
          api: this.api,
          typeName: definition.typeName,
          fieldName: definition.fieldName,
          dataSource: dataSources[definition.dataSource],
          runtime,
          code: code(definition.code),
        });
        continue;
      }
      const functions = definition.functions.map(
        (step) =>
          new appsync.AppsyncFunction(this, `${id}${step.name[0]!.toUpperCase()}${step.name.slice(1)}`, {
            api: this.api,
            name: `${definition.fieldName}_${step.name}`,
            dataSource: dataSources[step.dataSource],
            runtime,
            code: code(step.code),
          }),
      );
      new appsync.Resolver(this, id, {
        api: this.api,
        typeName: definition.typeName,
        fieldName: definition.fieldName,
        runtime,
        code: code(definition.code),
        pipelineConfig: functions,
      });
    }

    new CfnOutput(this, 'GraphqlUrl', { value: this.api.graphqlUrl, description: 'HTTPS endpoint (LONGRUN_URL for the CLI)' });
    new CfnOutput(this, 'RealtimeUrl', {
      value: (this.api.node.defaultChild as appsync.CfnGraphQLApi).attrRealtimeUrl,
      description: 'AppSync real-time WebSocket endpoint',
    });
    new CfnOutput(this, 'ApiKey', { value: this.api.apiKey ?? '', description: `API key (expires after ${settings.apiKeyExpiryDays} days)` });
    new CfnOutput(this, 'Region', { value: Aws.REGION });
    new CfnOutput(this, 'WorkerFunctionName', { value: this.worker.functionName });
  }

  /** The inference profile (in this stack's region) and its foundation model in every region it routes to. */
  private bedrockArns(settings: LongrunSettings): string[] {
    const arns: string[] = [];
    if (settings.inferenceProfileId !== undefined) {
      arns.push(`arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${Aws.ACCOUNT_ID}:inference-profile/${settings.inferenceProfileId}`);
    }
    for (const region of settings.bedrockRegions ?? [Aws.REGION]) {
      arns.push(`arn:${Aws.PARTITION}:bedrock:${region}::foundation-model/${settings.foundationModelId}`);
    }
    return arns;
  }
}
