/**
 * Loads `schema/schema.graphql` for the gateway: declares AppSync's built-in directives, builds the
 * graphql-js schema, and reads the auth directives into a rule per root field, as AppSync applies
 * them (API_KEY is the default mode; a field's directives win over its type's).
 */
import { readFileSync } from 'node:fs';
import {
  buildSchema,
  getNamedType,
  isObjectType,
  type FieldNode,
  type GraphQLObjectType,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import { SCHEMA_PATH } from '../paths.js';

// AppSync declares these itself; graphql-js needs them spelled out.
const APPSYNC_BUILTINS = `
directive @aws_api_key on FIELD_DEFINITION | OBJECT
directive @aws_iam on FIELD_DEFINITION | OBJECT
directive @aws_oidc on FIELD_DEFINITION | OBJECT
directive @aws_cognito_user_pools(cognito_groups: [String]) on FIELD_DEFINITION | OBJECT
directive @aws_lambda on FIELD_DEFINITION | OBJECT
directive @aws_subscribe(mutations: [String]) on FIELD_DEFINITION
`;

/** The auth modes of AppSync the gateway knows. */
export type AuthMode = 'API_KEY' | 'AWS_IAM' | 'OPENID_CONNECT';

const directiveModes: Record<string, AuthMode> = {
  aws_api_key: 'API_KEY',
  aws_iam: 'AWS_IAM',
  aws_oidc: 'OPENID_CONNECT',
};

/** The schema with, for each root field (`Mutation.sendChunk`), the auth modes allowed to call it. */
export interface LoadedSchema {
  schema: GraphQLSchema;
  sdl: string;
  allowedModes(typeName: string, fieldName: string): ReadonlySet<AuthMode>;
  /** `Subscription` field → the mutations that trigger it (`@aws_subscribe`). */
  subscriptionTriggers: ReadonlyMap<string, readonly string[]>;
}

/**
 * Loads and builds the schema. `defaultModes` are the modes allowed on anything without an auth
 * directive (AppSync: the API's default mode; OIDC mode replaces API_KEY).
 */
export function loadSchema(path = SCHEMA_PATH, defaultModes: readonly AuthMode[] = ['API_KEY']): LoadedSchema {
  const sdl = readFileSync(path, 'utf8');
  const schema = buildSchema(APPSYNC_BUILTINS + sdl);
  const rules = new Map<string, Set<AuthMode>>();
  const triggers = new Map<string, string[]>();
  for (const root of [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]) {
    if (!root) continue;
    const typeModes = modesOf(root.astNode?.directives?.map((d) => d.name.value) ?? []);
    for (const field of Object.values(root.getFields())) {
      const names = field.astNode?.directives?.map((d) => d.name.value) ?? [];
      const fieldModes = modesOf(names);
      rules.set(`${root.name}.${field.name}`, new Set(fieldModes.length ? fieldModes : typeModes.length ? typeModes : defaultModes));
      const subscribe = field.astNode?.directives?.find((d) => d.name.value === 'aws_subscribe');
      const argument = subscribe?.arguments?.find((a) => a.name.value === 'mutations');
      if (argument?.value.kind === 'ListValue') {
        triggers.set(
          field.name,
          argument.value.values.flatMap((value) => (value.kind === 'StringValue' ? [value.value] : [])),
        );
      }
    }
  }
  const none = new Set<AuthMode>();
  return {
    schema,
    sdl,
    allowedModes: (typeName, fieldName) => rules.get(`${typeName}.${fieldName}`) ?? none,
    subscriptionTriggers: triggers,
  };
}

function modesOf(directives: readonly string[]): AuthMode[] {
  return directives.flatMap((name) => (directiveModes[name] ? [directiveModes[name]] : []));
}

/**
 * Compiles the selection of a subscription's root field into a function that serialises a value
 * to the JSON of the GraphQL `data` object, exactly as graphql-js would: keys in selection order,
 * aliases, `__typename`, nested objects, missing values as null. Returns undefined when the
 * selection uses fragments, directives or repeated keys, for which the caller falls back to
 * graphql-js `execute`.
 */
export function compileProjection(
  schema: GraphQLSchema,
  rootType: GraphQLObjectType,
  rootField: FieldNode,
): ((value: unknown) => string) | undefined {
  const field = rootType.getFields()[rootField.name.value];
  if (!field || rootField.directives?.length) return undefined;
  const key = JSON.stringify(rootField.alias?.value ?? rootField.name.value);
  const type = getNamedType(field.type);
  if (!isObjectType(type) || !rootField.selectionSet) return undefined;
  const inner = compileSelection(schema, type, rootField.selectionSet);
  if (!inner) return undefined;
  return (value) => `{${key}:${value === null || value === undefined ? 'null' : inner(value as Record<string, unknown>)}}`;
}

function compileSelection(
  schema: GraphQLSchema,
  type: GraphQLObjectType,
  selectionSet: SelectionSetNode,
): ((value: Record<string, unknown>) => string) | undefined {
  const parts: Array<(value: Record<string, unknown>) => string> = [];
  const seen = new Set<string>();
  for (const selection of selectionSet.selections) {
    if (selection.kind !== 'Field' || selection.directives?.length || selection.arguments?.length) return undefined;
    const responseKey = selection.alias?.value ?? selection.name.value;
    if (seen.has(responseKey)) return undefined;
    seen.add(responseKey);
    const prefix = `${JSON.stringify(responseKey)}:`;
    const name = selection.name.value;
    if (name === '__typename') {
      const typeName = JSON.stringify(type.name);
      parts.push(() => prefix + typeName);
      continue;
    }
    const definition = type.getFields()[name];
    if (!definition) return undefined;
    const named = getNamedType(definition.type);
    if (isObjectType(named)) {
      if (!selection.selectionSet) return undefined;
      const nested = compileSelection(schema, named, selection.selectionSet);
      if (!nested) return undefined;
      parts.push((value) => {
        const child = value[name];
        return prefix + (child === null || child === undefined ? 'null' : nested(child as Record<string, unknown>));
      });
    } else if (!selection.selectionSet) {
      parts.push((value) => {
        const scalar = value[name];
        return prefix + (scalar === undefined ? 'null' : JSON.stringify(scalar));
      });
    } else {
      return undefined;
    }
  }
  return (value) => `{${parts.map((part) => part(value)).join(',')}}`;
}
