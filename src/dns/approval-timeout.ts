/**
 * Default hold for a DNS query: stub resolvers time out after about 5 s. Apart from resolver.ts so that
 * the approvals set-up can read it without loading the resolver and dns-packet.
 */
export const DNS_APPROVAL_TIMEOUT_MS = 4_000;
