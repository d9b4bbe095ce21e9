import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { InspectionCa } from './ca.js';
import { toPem } from './ca.js';

const LEAF_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
/** Short validity: a leaked leaf is useless soon, and the cache re-mints long before expiry. */
const LEAF_VALIDITY_MS = 7 * 86_400_000;
const REMINT_BEFORE_MS = 86_400_000;

interface Entry {
  ctx: SecureContext;
  notAfter: number;
}

/**
 * Leaf certificates for inspected names, minted on demand (ECDSA P-256, SAN = the name, or an IP SAN
 * for an address) and signed by the inspection CA, kept in a bounded LRU of ready TLS contexts. One
 * leaf key pair serves every name: generating one per name would cost more than it protects (they all
 * sit in the same process, next to the CA key).
 */
export class LeafMinter {
  private readonly cache = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<SecureContext>>();
  private leafKeys: Promise<{ keys: CryptoKeyPair; keyPem: string }> | null = null;

  constructor(
    private readonly ca: InspectionCa,
    private readonly maxEntries = 1_000,
  ) {}

  get size(): number {
    return this.cache.size;
  }

  /** A TLS context presenting a certificate for `name` (a normalised host name or canonical IP). */
  contextFor(name: string, isIp: boolean): Promise<SecureContext> | SecureContext {
    const hit = this.cache.get(name);
    if (hit && hit.notAfter - Date.now() > REMINT_BEFORE_MS) {
      // Refresh its place in the LRU order.
      this.cache.delete(name);
      this.cache.set(name, hit);
      return hit.ctx;
    }
    let p = this.pending.get(name);
    if (!p) {
      p = this.mint(name, isIp).finally(() => this.pending.delete(name));
      this.pending.set(name, p);
    }
    return p;
  }

  private async mint(name: string, isIp: boolean): Promise<SecureContext> {
    this.leafKeys ??= (async () => {
      const keys = (await webcrypto.subtle.generateKey(LEAF_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
      return { keys, keyPem: toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY') };
    })();
    const { keys, keyPem } = await this.leafKeys;
    const now = Date.now();
    const caNotAfter = this.ca.cert.notAfter.getTime();
    const notAfter = Math.min(now + LEAF_VALIDITY_MS, caNotAfter);
    const cert = await x509.X509CertificateGenerator.create({
      // Positive, 16 random bytes: RFC 5280 asks for unique serials of at most 20 octets.
      serialNumber: '01' + randomBytes(15).toString('hex'),
      subject: isIp ? 'CN=agent-egress inspected address' : `CN=${name.length <= 64 ? name : 'agent-egress inspected name'}`,
      issuer: this.ca.cert.subject,
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(notAfter),
      publicKey: keys.publicKey,
      signingKey: this.ca.key,
      signingAlgorithm: this.ca.signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: isIp ? 'ip' : 'dns', value: name }]),
        await x509.AuthorityKeyIdentifierExtension.create(this.ca.cert),
      ],
    });
    const ctx = createSecureContext({ key: keyPem, cert: cert.toString('pem') + '\n' + this.ca.certPem, minVersion: 'TLSv1.2' });
    this.cache.set(name, { ctx, notAfter });
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value as string);
    return ctx;
  }
}
