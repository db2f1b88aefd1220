/**
 * A local OpenID Connect issuer for tests: serves its JWKS on 127.0.0.1 and signs tokens with jose.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

export interface TestIssuer {
  issuer: string;
  audience: string;
  jwksUrl: string;
  /** A signed token for `sub`; `options` changes claims to make bad tokens. */
  token(sub: string, options?: { audience?: string; expiresIn?: string; issuer?: string; foreignKey?: boolean }): Promise<string>;
  close(): Promise<void>;
}

export async function startTestIssuer(): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const foreign = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const server = createServer((request, response) => {
    if (request.url === '/.well-known/jwks.json') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const audience = 'longrun-test-client';
  return {
    issuer: base,
    audience,
    jwksUrl: `${base}/.well-known/jwks.json`,
    token: (sub, options = {}) =>
      new SignJWT({ scope: 'openid' })
        .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
        .setSubject(sub)
        .setIssuer(options.issuer ?? base)
        .setAudience(options.audience ?? audience)
        .setIssuedAt()
        .setExpirationTime(options.expiresIn ?? '10m')
        .sign(options.foreignKey ? foreign.privateKey : privateKey),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
