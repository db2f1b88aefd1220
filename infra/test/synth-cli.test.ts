/**
 * `npm run synth` works offline with no AWS credentials: the CDK CLI, through the project's
 * wrapper script, synthesises the stack into build/cdk.out.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';

it('synthesises with the CDK CLI, offline and without credentials', () => {
  const environment = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('AWS_') && !name.startsWith('CDK_')),
  );
  const result = spawnSync('sh', [join(PROJECT_ROOT, 'infra/scripts/cdk.sh'), 'synth', '-q'], {
    cwd: PROJECT_ROOT,
    env: { ...environment, HOME: join(PROJECT_ROOT, 'build') },
    encoding: 'utf8',
    timeout: 240_000,
  });
  expect(result.status, result.stderr).toBe(0);
  const template = JSON.parse(readFileSync(join(PROJECT_ROOT, 'build/cdk.out/Longrun.template.json'), 'utf8'));
  expect(Object.values(template.Resources).some((resource: any) => resource.Type === 'AWS::AppSync::GraphQLApi')).toBe(true);
  expect(existsSync(join(PROJECT_ROOT, 'build/cdk-home'))).toBe(true);
}, 300_000);
