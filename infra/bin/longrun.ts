/**
 * The CDK app: one LongrunStack, environment-agnostic (no account or region at synth time; the
 * deploy takes them from the AWS CLI's profile). Settings come from CDK context; see
 * infra/lib/longrun-stack.ts and docs/aws.md. Run through `sh infra/scripts/cdk.sh <command>`.
 */
import { App } from 'aws-cdk-lib';
import { LongrunStack } from '../lib/longrun-stack.js';

const app = new App();
const stackName = String(app.node.tryGetContext('stackName') ?? 'Longrun');
new LongrunStack(app, stackName, {
  description: 'longrun: long-running LLM answers streamed through AppSync (AppSync, Lambda, DynamoDB, Bedrock)',
});
app.synth();
