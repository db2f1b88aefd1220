/**
 * The schema as AppSync is given it: `schema/schema.graphql` without its descriptions and
 * comments. AppSync's schema parser has refused SDL descriptions (aws/aws-appsync-community#38:
 * "Failed to parse schema document"), so the stack deploys the same types, fields, arguments and
 * directives with the documentation left in the repository's file.
 */
import { readFileSync } from 'node:fs';
import { type ASTNode, parse, print, visit } from 'graphql';
import * as appsync from 'aws-cdk-lib/aws-appsync';

/** The SDL text without descriptions or comments; throws if the text is not valid SDL. */
export function schemaForAppSync(text: string): string {
  const document = visit(parse(text), {
    enter(node: ASTNode) {
      return 'description' in node && node.description !== undefined ? { ...node, description: undefined } : undefined;
    },
  });
  return `${print(document)}\n`;
}

/** A schema file deployed as `schemaForAppSync` prints it. */
export class AppSyncSchemaFile extends appsync.SchemaFile {
  private readonly text: string;

  constructor(filePath: string) {
    super({ filePath });
    this.text = schemaForAppSync(readFileSync(filePath, 'utf8'));
  }

  override bind(api: Parameters<appsync.SchemaFile['bind']>[0], options?: appsync.SchemaBindOptions): appsync.ISchemaConfig {
    return { ...super.bind(api, options), definition: this.text };
  }
}
