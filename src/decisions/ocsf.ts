import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { splitHostPort, formatHostPort } from '../net/endpoint.js';
import { outcomeOf, type DecisionRecord } from './record.js';

/**
 * A decision record as an OCSF 1.5 event (https://schema.ocsf.io/1.5.0), for SIEMs that ingest OCSF
 * (Security Lake, Splunk, Sentinel, Tenzir…). One record, one event, chosen by what the record is:
 *
 * - DNS Activity (4003) for the filtering resolver's records (method "DNS");
 * - HTTP Activity (4002) for a request the proxy saw as HTTP: plain absolute-form requests, Upgrade
 *   handshakes and the requests inside an inspected tunnel (they have a method and a path);
 * - Network Activity (4001) for everything that is a connection and nothing more: CONNECT tunnels,
 *   SOCKS, connections refused before a request was parsed.
 *
 * Every event declares the security_control profile (action, disposition, firewall rule, policy). What
 * OCSF has no field for (verdict and mode, the timings, `detail`, brokered secret names, and any field a
 * later version adds) goes to `unmapped` under its native name. A record holds no credential, so
 * neither does its event. Validated against the published JSON schema in test/decisions/ocsf.test.ts.
 */

export const OCSF_VERSION = '1.5.0';
const PRODUCT = { name: 'agent-egress', vendor_name: 'agent-egress', version: (createRequire(import.meta.url)('../../package.json') as { version: string }).version };
const PROFILES = ['security_control'];

/** Native fields an event carries in its own OCSF attributes; every other field goes to `unmapped`. */
const MAPPED = new Set(['time', 'id', 'agent', 'client', 'method', 'host', 'port', 'path', 'address', 'status', 'bytesUp', 'bytesDown', 'parent', 'rule', 'reason', 'policyHash']);

const HTTP_ACTIVITY: Record<string, number> = { CONNECT: 1, DELETE: 2, GET: 3, HEAD: 4, OPTIONS: 5, POST: 6, PUT: 7, TRACE: 8 };
/** Methods that make a record HTTP even without a path (a refusal before the URL was parsed). */
const HTTP_METHODS = new Set([...Object.keys(HTTP_ACTIVITY), 'PATCH']);
const NETWORK_ACTIVITY = { fail: [4, 'Fail'], refuse: [5, 'Refuse'], traffic: [6, 'Traffic'] } as const;
const SEVERITY: Record<number, string> = { 1: 'Informational', 2: 'Low', 3: 'Medium' };
const DNS_RCODES: Record<number, string> = { 0: 'NoError', 1: 'FormError', 2: 'ServError', 3: 'NXDomain', 4: 'NotImp', 5: 'Refused', 6: 'YXDomain', 7: 'YXRRSet', 8: 'NXRRSet', 9: 'NotAuth', 10: 'NotZone' };
const REJECTED = new Set(['bad_request', 'malformed', 'limit_exceeded', 'rate_limited', 'shutting_down', 'name_too_long']);

type Event = Record<string, unknown>;

/** allow / deny / deny* (report mode: forwarded) / error, as action, disposition, status and severity. */
function outcome(r: DecisionRecord): Event {
  const o = outcomeOf(r);
  const [actionId, action, dispositionId, disposition, severityId] =
    o === 'allow'
      ? [1, 'Allowed', 1, 'Allowed', 1]
      : o === 'deny*'
        ? [3, 'Observed', 17, 'Logged', 3]
        : o === 'error'
          ? [1, 'Allowed', 27, 'Error', 1]
          : r.reason === 'auth_required'
            ? [2, 'Denied', 26, 'Unauthorized', 2]
            : REJECTED.has(r.reason)
              ? [2, 'Denied', 25, 'Rejected', 2]
              : [2, 'Denied', 2, 'Blocked', 2];
  const carried = o === 'allow' || o === 'deny*';
  return {
    action_id: actionId,
    action,
    disposition_id: dispositionId,
    disposition,
    severity_id: severityId,
    severity: SEVERITY[severityId],
    status_id: carried ? 1 : 2,
    status: carried ? 'Success' : 'Failure',
    status_detail: r.reason,
    ...(r.status !== null ? { status_code: String(r.status) } : {}),
  };
}

/** The client: its address and port, and the agent's name. Never empty (the classes need an endpoint). */
function source(r: DecisionRecord): Event {
  const ep: Event = {};
  try {
    const { host, port } = splitHostPort(r.client);
    if (isIP(host)) ep.ip = host;
    if (port !== null && /^\d{1,5}$/.test(port)) ep.port = Number(port);
  } catch {
    /* an unparseable client label keeps only the name */
  }
  if (r.agent !== null) ep.name = r.agent;
  if (ep.ip === undefined && ep.name === undefined) ep.name = r.client || 'unknown';
  return ep;
}

/** The destination as asked (a name or an IP literal) and the address actually dialled. */
function destination(r: DecisionRecord): Event | null {
  const ep: Event = {};
  if (r.host && isIP(r.host)) ep.ip = r.host;
  else if (r.host) ep.hostname = r.host;
  if (r.address && ep.ip === undefined) ep.ip = r.address;
  if (Object.keys(ep).length === 0) return null;
  if (r.port !== null) ep.port = r.port;
  return ep;
}

function classOf(r: DecisionRecord): 'dns' | 'http' | 'network' {
  if (r.method === 'DNS') return 'dns';
  if (r.method !== 'CONNECT' && (r.path !== null || HTTP_METHODS.has(r.method))) return 'http';
  return 'network';
}

function unmapped(r: DecisionRecord): Event {
  const out: Event = {};
  for (const [k, v] of Object.entries(r)) if (!MAPPED.has(k) && v !== undefined) out[k] = v;
  return out;
}

function title(name: string): string {
  return name.charAt(0) + name.slice(1).toLowerCase();
}

export function toOcsf(r: DecisionRecord): Event {
  const time = Date.parse(r.time);
  const total = r.timings.totalMs;
  const kind = classOf(r);
  const [classUid, className] = kind === 'dns' ? [4003, 'DNS Activity'] : kind === 'http' ? [4002, 'HTTP Activity'] : [4001, 'Network Activity'];
  let activityId: number;
  let activityName: string;
  if (kind === 'http') {
    activityId = HTTP_ACTIVITY[r.method] ?? 99;
    activityName = title(r.method || 'Unknown');
  } else if (kind === 'dns') {
    // Query and answer in one record: "Traffic", bidirectional DNS request and response.
    [activityId, activityName] = [6, 'Traffic'];
  } else {
    const o = outcomeOf(r);
    [activityId, activityName] = o === 'error' ? NETWORK_ACTIVITY.fail : o === 'deny' ? NETWORK_ACTIVITY.refuse : NETWORK_ACTIVITY.traffic;
  }
  const ev: Event = {
    class_uid: classUid,
    class_name: className,
    category_uid: 4,
    category_name: 'Network Activity',
    activity_id: activityId,
    activity_name: activityName,
    type_uid: classUid * 100 + activityId,
    type_name: `${className}: ${activityName}`,
    time,
    start_time: time,
    ...(total !== null ? { duration: Math.round(total), end_time: time + Math.round(total) } : {}),
    message: `${r.verdict}${r.mode === 'report' ? ' (report)' : ''} ${r.method} ${r.host}${r.port !== null ? `:${r.port}` : ''}: ${r.reason}`,
    metadata: {
      version: OCSF_VERSION,
      product: PRODUCT,
      uid: r.id,
      profiles: PROFILES,
      log_name: 'decisions',
      ...(r.parent ? { correlation_uid: r.parent } : {}),
    },
    ...outcome(r),
    src_endpoint: source(r),
    connection_info: { direction_id: 2, direction: 'Outbound', protocol_name: kind === 'dns' && r.detail?.transport === 'udp' ? 'udp' : 'tcp' },
  };
  if (r.rule !== null) ev.firewall_rule = { name: r.rule };
  if (r.policyHash !== null) ev.policy = { uid: r.policyHash };
  if (kind !== 'dns') {
    const dst = destination(r);
    if (dst) ev.dst_endpoint = dst;
    ev.traffic = { bytes_out: r.bytesUp, bytes_in: r.bytesDown, bytes: r.bytesUp + r.bytesDown };
  }
  if (kind === 'http') {
    const scheme = r.parent ? 'https' : 'http';
    // OCSF 1.5 lists the methods http_method may hold; another one (PATCH, PROPFIND…) stays in activity_name and unmapped.method.
    const req: Event = HTTP_ACTIVITY[r.method] !== undefined ? { http_method: r.method, uid: r.id } : { uid: r.id };
    if (r.host) {
      const port = r.port ?? (scheme === 'https' ? 443 : 80);
      // With --log-query the recorded path keeps its query string, which OCSF holds apart.
      const q = r.path?.indexOf('?') ?? -1;
      const path = r.path === null ? {} : q === -1 ? { path: r.path } : { path: r.path.slice(0, q), query_string: r.path.slice(q + 1) };
      req.url = { scheme, hostname: r.host, port, ...path, url_string: `${scheme}://${formatHostPort(r.host, port)}${r.path ?? ''}` };
    }
    ev.http_request = req;
    if (r.status !== null) ev.http_response = { code: r.status };
  }
  if (kind === 'dns') {
    if (r.host) {
      const q: Event = { hostname: r.host };
      if (typeof r.detail?.qtype === 'string') q.type = r.detail.qtype;
      if (typeof r.detail?.qclass === 'string') q.class = r.detail.qclass;
      ev.query = q;
    }
    if (r.status !== null) {
      ev.rcode_id = DNS_RCODES[r.status] !== undefined ? r.status : 99;
      ev.rcode = DNS_RCODES[r.status] ?? String(r.status);
    }
    ev.traffic = { bytes_out: r.bytesUp, bytes_in: r.bytesDown, bytes: r.bytesUp + r.bytesDown };
  }
  const rest = unmapped(r);
  if (kind === 'http' && HTTP_ACTIVITY[r.method] === undefined) rest.method = r.method;
  if (Object.keys(rest).length) ev.unmapped = rest;
  return ev;
}
