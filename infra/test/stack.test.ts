/**
 * The CDK stack's template: what `npm run deploy` would create, checked offline. One full synth
 * (with the worker bundled by esbuild) for the file; the context variations skip bundling.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { parse, print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LongrunStack, logRetentionFor, PROJECT_ROOT, resolveSettings } from '../lib/longrun-stack.js';
import { PUBLISH_MUTATIONS, RESOLVERS, RESOLVERS_DIR } from '../lib/resolvers.js';
import { schemaForAppSync } from '../lib/schema.js';

type Json = any;

const folders: string[] = [];
afterAll(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

/** Synthesises a stack; `bundle: false` skips esbuild (for tests that only read the template). */
function synth(context: Record<string, unknown> = {}, bundle = false): { stack: LongrunStack; template: Template; outdir: string } {
  const outdir = mkdtempSync(join(tmpdir(), 'longrun-cdk-'));
  folders.push(outdir);
  const app = new App({ outdir, context: bundle ? context : { ...context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new LongrunStack(app, 'Longrun');
  return { stack, template: Template.fromStack(stack), outdir };
}

/** Resolves Ref/Fn::Join/Fn::GetAtt of pseudo parameters and resources to strings, for reading ARNs. */
function resolve(value: Json): Json {
  const pseudo: Record<string, string> = { 'AWS::Region': 'us-east-1', 'AWS::AccountId': '111122223333', 'AWS::Partition': 'aws' };
  if (Array.isArray(value)) return value.map(resolve);
  if (value === null || typeof value !== 'object') return value;
  if ('Ref' in value) return pseudo[value.Ref] ?? `\${${value.Ref}}`;
  if ('Fn::GetAtt' in value) return `\${${value['Fn::GetAtt'][0]}.${value['Fn::GetAtt'][1]}}`;
  if ('Fn::Join' in value) return (resolve(value['Fn::Join'][1]) as string[]).join(value['Fn::Join'][0]);
  return Object.fromEntries(Object.entries(value).map(([key, entry]) => [key, resolve(entry)]));
}

function only(template: Template, type: string, properties: Json = {}): { id: string; resource: Json } {
  const found = template.findResources(type, { Properties: properties });
  expect(Object.keys(found), `${type} matching ${JSON.stringify(properties)}`).toHaveLength(1);
  const [id, resource] = Object.entries(found)[0]!;
  return { id, resource };
}

function workerStatements(template: Template, stack: LongrunStack): Json[] {
  const roleId = stack.getLogicalId(stack.worker.role!.node.defaultChild as never);
  const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((policy: Json) =>
    policy.Properties.Roles.some((role: Json) => role.Ref === roleId),
  );
  expect(policies).toHaveLength(1);
  return resolve((policies[0] as Json).Properties.PolicyDocument.Statement);
}

function bedrockResources(template: Template, stack: LongrunStack): string[] {
  const statement = workerStatements(template, stack).find((entry) => [entry.Action].flat().includes('bedrock:InvokeModelWithResponseStream'));
  return [statement.Resource].flat();
}

/** Every type, field, argument, enum value and directive of an SDL text, descriptions aside. */
function shape(sdl: string): string[] {
  const entries: string[] = [];
  const directives = (nodes: readonly { name: { value: string } }[] | undefined) => (nodes ?? []).map((node) => print(node as never)).join(' ');
  for (const definition of parse(sdl).definitions) {
    if (!('name' in definition) || definition.name === undefined) {
      entries.push(print({ ...definition, description: undefined } as never));
      continue;
    }
    const name = definition.name.value;
    entries.push(`${definition.kind} ${name} ${'directives' in definition ? directives(definition.directives) : ''}`);
    const fields = 'fields' in definition ? (definition.fields ?? []) : [];
    for (const field of fields) {
      const args = 'arguments' in field ? (field.arguments ?? []).map((arg) => `${arg.name.value}: ${print(arg.type)}`).join(', ') : '';
      entries.push(`${name}.${field.name.value}(${args}): ${print(field.type)} ${directives(field.directives)}`);
    }
    for (const value of 'values' in definition ? (definition.values ?? []) : []) entries.push(`${name}.${value.name.value}`);
  }
  return entries;
}

describe('the longrun stack (default context, bundled)', () => {
  let stack: LongrunStack;
  let template: Template;
  let outdir: string;
  const synthesisedAt = Date.now();
  beforeAll(() => {
    ({ stack, template, outdir } = synth({}, true));
  });

  it('serves the one schema with API_KEY by default and AWS_IAM as an additional mode', () => {
    template.hasResourceProperties('AWS::AppSync::GraphQLApi', {
      AuthenticationType: 'API_KEY',
      AdditionalAuthenticationProviders: [{ AuthenticationType: 'AWS_IAM' }],
      LogConfig: { FieldLogLevel: 'ERROR', ExcludeVerboseContent: true },
      EnvironmentVariables: {
        CONVERSATIONS_TABLE: { Ref: Match.anyValue() },
        EVENTS_TABLE: { Ref: Match.anyValue() },
        RETENTION_DAYS: '7',
        MAX_PROMPT_BYTES: '102400',
        // 15 minutes in Lambda's queue at most, 15 running, and a minute more.
        STALE_TURN_MS: String(31 * 60_000),
      },
    });
    // The one schema, without the descriptions AppSync's parser refuses.
    const source = readFileSync(join(PROJECT_ROOT, 'schema', 'schema.graphql'), 'utf8');
    const deployed: string = only(template, 'AWS::AppSync::GraphQLSchema').resource.Properties.Definition;
    expect(deployed).toBe(schemaForAppSync(source));
    expect(deployed).not.toMatch(/^\s*"|"""|#/m);
    expect(deployed).toContain('publishEvent(event: ConversationEventInput!): ConversationEvent @aws_iam');
    expect(deployed).toContain('onConversationEvent(conversationId: ID!): ConversationEvent @aws_subscribe(mutations: ["publishEvent"])');
    expect(shape(deployed)).toEqual(shape(source));
    expect(shape(source).length).toBeGreaterThan(50);
    const { resource } = only(template, 'AWS::AppSync::ApiKey');
    const expires = resource.Properties.Expires * 1000;
    expect(Math.abs(expires - (synthesisedAt + 7 * 86_400_000))).toBeLessThan(120_000);
  });

  it('starts a conversation with a pipeline that reserves the turn, then invokes the worker as an Event', () => {
    const functions = template.findResources('AWS::AppSync::FunctionConfiguration');
    const byName = (name: string) => Object.entries(functions).find(([, resource]: [string, Json]) => resource.Properties.Name === name)!;
    const [readId] = byName('startConversation_readConversation');
    // The last seq, read from the events only when a stale turn is to be ended.
    const [lastSeqId, lastSeq] = byName('startConversation_lastSeq') as [string, Json];
    const [reserveId, reserve] = byName('startConversation_reserveTurn') as [string, Json];
    const [invokeId, invoke] = byName('startConversation_invokeWorker') as [string, Json];
    // Ends the reserved turn when the invocation was refused.
    const [releaseId, release] = byName('startConversation_releaseTurn') as [string, Json];
    template.hasResourceProperties('AWS::AppSync::Resolver', {
      TypeName: 'Mutation',
      FieldName: 'startConversation',
      Kind: 'PIPELINE',
      Runtime: { Name: 'APPSYNC_JS', RuntimeVersion: '1.0.0' },
      PipelineConfig: {
        Functions: [readId, lastSeqId, reserveId, invokeId, releaseId].map((id) => ({ 'Fn::GetAtt': [id, 'FunctionId'] })),
      },
    });
    expect(invoke.Properties.Code).toContain("invocationType: 'Event'");
    expect(invoke.Properties.Code).toContain("operation: 'Invoke'");
    const worker = only(template, 'AWS::AppSync::DataSource', { Type: 'AWS_LAMBDA' });
    expect(invoke.Properties.DataSourceName).toBe(worker.resource.Properties.Name);
    expect(reserve.Properties.Code).toContain("operation: 'TransactWriteItems'");
    expect(reserve.Properties.Code).toContain("'ConflictException'");
    const events = only(template, 'AWS::AppSync::DataSource', { Name: 'EventsSource' });
    expect(lastSeq.Properties.DataSourceName).toBe(events.resource.Properties.Name);
    expect(release.Properties.DataSourceName).toBe(reserve.Properties.DataSourceName);
  });

  it('puts the publish mutations on a NONE data source, and cancel and the queries on DynamoDB', () => {
    const none = only(template, 'AWS::AppSync::DataSource', { Type: 'NONE' });
    for (const field of PUBLISH_MUTATIONS) {
      template.hasResourceProperties('AWS::AppSync::Resolver', {
        TypeName: 'Mutation',
        FieldName: field,
        Kind: 'UNIT',
        DataSourceName: none.resource.Properties.Name,
      });
    }
    const conversations = only(template, 'AWS::AppSync::DataSource', { Description: 'conversations and messages' });
    template.hasResourceProperties('AWS::AppSync::Resolver', {
      FieldName: 'cancelConversation',
      DataSourceName: conversations.resource.Properties.Name,
    });
    template.hasResourceProperties('AWS::AppSync::Resolver', { TypeName: 'Query', FieldName: 'conversation', Kind: 'PIPELINE' });
    template.hasResourceProperties('AWS::AppSync::Resolver', { TypeName: 'Query', FieldName: 'conversationEvents', Kind: 'PIPELINE' });
    // Subscriptions have no resolver: AppSync filters them on conversationId by itself.
    expect(template.findResources('AWS::AppSync::Resolver', { Properties: { TypeName: 'Subscription' } })).toEqual({});
    template.resourceCountIs('AWS::AppSync::Resolver', RESOLVERS.length);
  });

  it('runs the worker on Node 22 for up to 15 minutes, without retries, with its settings', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      Timeout: 900,
      Architectures: ['arm64'],
      Handler: 'index.handler',
      Environment: {
        Variables: {
          LONGRUN_CONVERSATIONS_TABLE: { Ref: stack.getLogicalId(stack.conversationsTable.node.defaultChild as never) },
          LONGRUN_EVENTS_TABLE: { Ref: stack.getLogicalId(stack.eventsTable.node.defaultChild as never) },
          LONGRUN_GRAPHQL_URL: { 'Fn::GetAtt': [Match.anyValue(), 'GraphQLUrl'] },
          LONGRUN_MODEL_ID: 'us.anthropic.claude-3-5-sonnet-20241022-v2:0',
          LONGRUN_RETENTION_DAYS: '7',
          LONGRUN_CANCEL_POLL_MS: '1000',
        },
      },
    });
    const worker = only(template, 'AWS::Lambda::Function', { Runtime: 'nodejs22.x' });
    expect(worker.resource.Properties.ReservedConcurrentExecutions).toBeUndefined();
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: worker.id },
      MaximumRetryAttempts: 0,
      MaximumEventAgeInSeconds: 15 * 60,
    });
    expect(worker.resource.Properties.Timeout).toBe(15 * 60);
  });

  it('bundles the worker with local esbuild into one ESM file that loads and reads its environment', async () => {
    const assetKey: string = template.toJSON().Resources[stack.getLogicalId(stack.worker.node.defaultChild as never)].Properties.Code.S3Key;
    const folder = join(outdir, `asset.${assetKey.replace(/\.zip$/, '')}`);
    expect(readdirSync(folder).sort()).toEqual(['index.mjs', 'index.mjs.map']);
    const bundle = readFileSync(join(folder, 'index.mjs'), 'utf8');
    expect(bundle.startsWith('import { createRequire as __longrunCreateRequire }')).toBe(true);
    const module = (await import(join(folder, 'index.mjs'))) as { handler: (payload: unknown) => Promise<unknown> };
    await expect(module.handler({})).rejects.toThrow(/LONGRUN_GRAPHQL_URL is required/);
  });

  it('creates both tables on demand, keyed as the DynamoDB store expects, with TTL on expiresAt', () => {
    template.resourceCountIs('AWS::DynamoDB::Table', 2);
    for (const sortKey of [
      { AttributeName: 'sk', AttributeType: 'S' },
      { AttributeName: 'seq', AttributeType: 'N' },
    ]) {
      template.hasResourceProperties('AWS::DynamoDB::Table', {
        BillingMode: 'PAY_PER_REQUEST',
        TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
        KeySchema: [
          { AttributeName: 'conversationId', KeyType: 'HASH' },
          { AttributeName: sortKey.AttributeName, KeyType: 'RANGE' },
        ],
        AttributeDefinitions: [{ AttributeName: 'conversationId', AttributeType: 'S' }, sortKey],
      });
    }
  });

  it('keeps logs for the retention period', () => {
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 7 });
    template.hasResourceProperties('Custom::LogRetention', { RetentionInDays: 7, LogGroupName: { 'Fn::Join': ['', ['/aws/appsync/apis/', Match.anyValue()]] } });
    const logGroup = stack.getLogicalId(stack.worker.logGroup.node.defaultChild as never);
    template.hasResourceProperties('AWS::Lambda::Function', { LoggingConfig: { LogGroup: { Ref: logGroup } } });
  });

  it('outputs the GraphQL URL, the real-time URL and the API key', () => {
    const outputs = template.toJSON().Outputs;
    expect(outputs.GraphqlUrl.Value['Fn::GetAtt'][1]).toBe('GraphQLUrl');
    expect(outputs.RealtimeUrl.Value['Fn::GetAtt'][1]).toBe('RealtimeUrl');
    expect(outputs.ApiKey.Value['Fn::GetAtt'][1]).toBe('ApiKey');
  });

  it('gives the worker its own log group, its tables, the publish mutations and the configured model, nothing more', () => {
    const roleId = stack.getLogicalId(stack.worker.role!.node.defaultChild as never);
    const role = template.toJSON().Resources[roleId];
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
    const conversations = stack.getLogicalId(stack.conversationsTable.node.defaultChild as never);
    const events = stack.getLogicalId(stack.eventsTable.node.defaultChild as never);
    const api = stack.getLogicalId(stack.api.node.defaultChild as never);
    const logGroup = stack.getLogicalId(stack.worker.logGroup.node.defaultChild as never);
    expect(workerStatements(template, stack)).toEqual([
      { Effect: 'Allow', Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Resource: `\${${logGroup}.Arn}` },
      {
        Effect: 'Allow',
        Action: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem', 'dynamodb:Query'],
        Resource: [`\${${conversations}.Arn}`, `\${${events}.Arn}`],
      },
      {
        Effect: 'Allow',
        Action: 'appsync:GraphQL',
        Resource: PUBLISH_MUTATIONS.map((field) => `\${${api}.Arn}/types/Mutation/fields/${field}`),
      },
      {
        Effect: 'Allow',
        Action: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
        Resource: [
          'arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0',
          'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-sonnet-20241022-v2:0',
          'arn:aws:bedrock:us-east-2::foundation-model/anthropic.claude-3-5-sonnet-20241022-v2:0',
          'arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-sonnet-20241022-v2:0',
        ],
      },
    ]);
  });

  /** The statements of a data source's role: each statement's actions, and the tables they name. */
  const sourceStatements = (name: string): Array<{ actions: string[]; tables: string[] }> => {
    const source = only(template, 'AWS::AppSync::DataSource', { Name: name });
    const roleId = resolve(source.resource.Properties.ServiceRoleArn).replace(/^\$\{|\.Arn\}$/g, '');
    const policy = Object.values(template.findResources('AWS::IAM::Policy')).find((entry: Json) => entry.Properties.Roles[0].Ref === roleId) as Json;
    return policy.Properties.PolicyDocument.Statement.map((statement: Json) => ({
      actions: [statement.Action].flat(),
      tables: [statement.Resource].flat().map((resource: Json) => JSON.stringify(resource).match(/"(Events|Conversations)[0-9A-F]{8}"/)?.[1] ?? JSON.stringify(resource)),
    }));
  };

  it('lets the events data source only read (the worker writes events)', () => {
    const actions = sourceStatements('EventsSource').flatMap((statement) => statement.actions);
    expect(actions.filter((action) => /Put|Update|Delete|Write/.test(action))).toEqual([]);
  });

  it('lets the conversations data source put one kind of write into the events table: the ERROR of a stale turn', () => {
    const onEvents = sourceStatements('ConversationsSource').filter((statement) => statement.tables.includes('Events'));
    expect(onEvents).toEqual([{ actions: ['dynamodb:PutItem'], tables: ['Events'] }]);
  });
});

describe('context values change the template', () => {
  it('an eu. inference profile allows its profile and the eu regions it routes to', () => {
    const { stack, template } = synth({ modelId: 'eu.anthropic.claude-3-7-sonnet-20250219-v1:0' });
    expect(bedrockResources(template, stack)).toEqual([
      'arn:aws:bedrock:us-east-1:111122223333:inference-profile/eu.anthropic.claude-3-7-sonnet-20250219-v1:0',
      ...['eu-central-1', 'eu-north-1', 'eu-west-1', 'eu-west-3'].map(
        (region) => `arn:aws:bedrock:${region}::foundation-model/anthropic.claude-3-7-sonnet-20250219-v1:0`,
      ),
    ]);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ LONGRUN_MODEL_ID: 'eu.anthropic.claude-3-7-sonnet-20250219-v1:0' }) },
    });
  });

  it('a foundation model id allows that model in the stack region only', () => {
    const { stack, template } = synth({ modelId: 'anthropic.claude-3-haiku-20240307-v1:0' });
    expect(bedrockResources(template, stack)).toEqual(['arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0']);
  });

  it('bedrockRegions overrides the regions (as a comma-separated string from -c)', () => {
    const { stack, template } = synth({ modelId: 'global.anthropic.claude-sonnet-4-20250514-v1:0', bedrockRegions: 'us-east-1, eu-west-1' });
    expect(bedrockResources(template, stack)).toEqual([
      'arn:aws:bedrock:us-east-1:111122223333:inference-profile/global.anthropic.claude-sonnet-4-20250514-v1:0',
      'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0',
      'arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0',
    ]);
  });

  it('apiKeyExpiryDays, retentionDays and reservedConcurrency (strings, as -c gives them)', () => {
    const before = Date.now();
    const { template } = synth({ apiKeyExpiryDays: '30', retentionDays: '10', reservedConcurrency: '5' });
    const expires = only(template, 'AWS::AppSync::ApiKey').resource.Properties.Expires * 1000;
    expect(Math.abs(expires - (before + 30 * 86_400_000))).toBeLessThan(120_000);
    // CloudWatch has no 10-day retention: the next longer one, 14.
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 14 });
    template.hasResourceProperties('Custom::LogRetention', { RetentionInDays: 14 });
    template.hasResourceProperties('AWS::Lambda::Function', {
      ReservedConcurrentExecutions: 5,
      Environment: { Variables: Match.objectLike({ LONGRUN_RETENTION_DAYS: '10' }) },
    });
    template.hasResourceProperties('AWS::AppSync::GraphQLApi', { EnvironmentVariables: Match.objectLike({ RETENTION_DAYS: '10' }) });
  });

  it('refuses a bad value with a message naming it', () => {
    const settings = (context: Record<string, unknown>) => resolveSettings(new App({ context }));
    expect(() => settings({ apiKeyExpiryDays: '400' })).toThrow('The "apiKeyExpiryDays" context value must be a whole number from 1 to 365; got "400".');
    expect(() => settings({ reservedConcurrency: 'many' })).toThrow(/"reservedConcurrency"/);
    expect(() => settings({ modelId: 'global.anthropic.claude-sonnet-4-20250514-v1:0' })).toThrow(/-c bedrockRegions=/);
    expect(() => settings({ bedrockRegions: 'mars-1' })).toThrow(/bad region: "mars-1"/);
    expect(logRetentionFor(400)).toBe(400);
    expect(logRetentionFor(5000)).toBe(3653);
  });
});

describe('resolver files', () => {
  it('every file in infra/resolvers is used by the stack, and every used file exists', () => {
    const used = new Set(RESOLVERS.flatMap((definition) => [definition.code, ...(definition.kind === 'pipeline' ? definition.functions.map((step) => step.code) : [])]));
    const files = readdirSync(RESOLVERS_DIR).filter((file) => file.endsWith('.js'));
    expect([...used].sort()).toEqual(files.sort());
    for (const file of used) expect(existsSync(join(RESOLVERS_DIR, file))).toBe(true);
  });
});
