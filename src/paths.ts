/**
 * Where longrun's own files are, whether it runs from `src/` (tests, tsx) or from `dist/src/`
 * (the built package): the project root is the nearest folder above this module holding
 * `schema/schema.graphql`.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let folder = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(folder, 'schema', 'schema.graphql'))) {
    const parent = dirname(folder);
    if (parent === folder) throw new Error('longrun: cannot find schema/schema.graphql above ' + fileURLToPath(import.meta.url));
    folder = parent;
  }
  return folder;
}

/** The folder that holds `package.json`, `schema/` and `web/`. */
export const PROJECT_ROOT = findRoot();

/** The one GraphQL schema file. */
export const SCHEMA_PATH = join(PROJECT_ROOT, 'schema', 'schema.graphql');
