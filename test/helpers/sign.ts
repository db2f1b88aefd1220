/**
 * Signs a GraphQL request with the AWS SDK's own SigV4 signer, as the worker's AppSync publisher
 * and any AWS client would, so the gateway's verifier is checked against the real thing.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

export async function signedHeaders(
  url: string,
  body: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  signingDate?: Date,
): Promise<Record<string, string>> {
  const target = new URL(url);
  const signer = new SignatureV4({ credentials, region: 'us-east-1', service: 'appsync', sha256: Sha256 });
  const signed = await signer.sign(
    {
      method: 'POST',
      protocol: target.protocol,
      hostname: target.hostname,
      port: Number(target.port),
      path: target.pathname,
      headers: { host: target.host, 'content-type': 'application/json' },
      body,
    },
    signingDate ? { signingDate } : {},
  );
  return signed.headers as Record<string, string>;
}
