// @peculiar/x509 resolves its codecs through tsyringe, which needs the Reflect metadata API loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, webcrypto, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { INSPECT_CA_FILE, INSPECT_CA_KEY_FILE } from './files.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { INSPECT_CA_FILE, INSPECT_CA_KEY_FILE };

export class InspectCaError extends Error {
  override name = 'InspectCaError';
}

/** The inspection CA: its certificate and signing key, loaded once per start (or policy reload). */
export interface InspectionCa {
  cert: x509.X509Certificate;
  certPem: string;
  key: CryptoKey;
  signingAlgorithm: Algorithm & { hash?: string };
}

/** Load a CA certificate and its private key (PEM, PKCS#8 or the traditional EC/RSA forms). */
export async function loadInspectionCa(certFile: string, keyFile: string): Promise<InspectionCa> {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = readFileSync(certFile, 'utf8');
  } catch (e) {
    throw new InspectCaError(`cannot read the inspection CA ${certFile}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  try {
    keyPem = readFileSync(keyFile, 'utf8');
  } catch (e) {
    throw new InspectCaError(`cannot read the inspection CA key ${keyFile}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch {
    throw new InspectCaError(`${certFile} is not a PEM certificate`);
  }
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new InspectCaError(`${certFile} is not a CA certificate (basicConstraints CA:TRUE is missing)`);
  let keyObj;
  try {
    keyObj = createPrivateKey(keyPem);
  } catch {
    throw new InspectCaError(`${keyFile} is not a PEM private key`);
  }
  const der = keyObj.export({ type: 'pkcs8', format: 'der' });
  let importAlg: EcKeyImportParams | RsaHashedImportParams;
  let signingAlgorithm: InspectionCa['signingAlgorithm'];
  if (keyObj.asymmetricKeyType === 'ec') {
    const curve = keyObj.asymmetricKeyDetails?.namedCurve;
    const named = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : null;
    if (!named) throw new InspectCaError(`${keyFile}: EC curve ${curve} is not supported (use P-256 or P-384)`);
    importAlg = { name: 'ECDSA', namedCurve: named };
    signingAlgorithm = { name: 'ECDSA', hash: named === 'P-256' ? 'SHA-256' : 'SHA-384' };
  } else if (keyObj.asymmetricKeyType === 'rsa') {
    importAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    signingAlgorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  } else {
    throw new InspectCaError(`${keyFile}: key type ${keyObj.asymmetricKeyType} is not supported (use EC P-256 or RSA)`);
  }
  const key = await webcrypto.subtle.importKey('pkcs8', der, importAlg, false, ['sign']);
  // The key must belong to the certificate, or every minted leaf would fail verification at the client.
  const probe = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=probe',
    keys: { privateKey: key, publicKey: await cert.publicKey.export(importAlg, ['verify']) },
    signingAlgorithm,
  }).catch(() => null);
  if (!probe || !(await probe.verify({ publicKey: cert.publicKey, signatureOnly: true }))) {
    throw new InspectCaError(`${keyFile} is not the private key of ${certFile}`);
  }
  return { cert, certPem, key, signingAlgorithm };
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}


/**
 * `certs init --inspect`: an ECDSA P-256 CA for inspection only (not the listener CA), key mode 0600.
 * An existing CA is kept unless `force`: replacing it would break every agent that trusts it.
 */
export async function createInspectionCa(dir: string, opts: { days: number; force: boolean }): Promise<{ created: string[]; reused: string[] }> {
  const certFile = join(dir, INSPECT_CA_FILE);
  const keyFile = join(dir, INSPECT_CA_KEY_FILE);
  if (existsSync(certFile) && existsSync(keyFile) && !opts.force) return { created: [], reused: [certFile, keyFile] };
  mkdirSync(dir, { recursive: true });
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(16).toString('hex').replace(/^[89a-f]/, '1'),
    name: 'CN=agent-egress inspection CA, O=agent-egress',
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + opts.days * 86_400_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  writeFileSync(keyFile, toPem(pkcs8, 'PRIVATE KEY'), { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  writeFileSync(certFile, cert.toString('pem') + '\n', { mode: 0o644 });
  return { created: [certFile, keyFile], reused: [] };
}

export { toPem };
