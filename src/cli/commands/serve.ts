import { Command, Option } from 'commander';
import { RECORD_FORMATS, resolveLogFormats } from '../../decisions/record-format.js';
import { PolicyError } from '../../policy/types.js';
import { DEFAULT_LIMITS } from '../../proxy/options.js';
import { formatListen } from '../../runtime/listen.js';
import { isClusterWorker, parseWorkers } from '../../runtime/workers.js';
import { buildPolicy } from '../../runtime/policy-holder.js';
import { createOpLogger, OP_LOG_FORMATS, reportModeWarning, type OpLogFormat } from '../../runtime/oplog.js';
import { startEgress, type EgressConfig } from '../../runtime/serve.js';
import { resolveViewerToken } from '../../admin/token-file.js';
import { parseCacheSize, parseRateLimit, parseRefuseCode } from '../../dns/flags.js';
import { replicaNameOption, serveStoreConfig, storeOption, storePasswordFileOption, storeQueueOption } from '../store-flags.js';
import { parseTransparentListen } from '../../capture/mapping.js';
import { listValue, parseDurationMs, parseHttpUrl, parsePositiveInt, parsePositiveNumber, parseSize, repeatable } from '../parse.js';

const env = (name: string) => `AGENT_EGRESS_${name}`;

function opt(flags: string, description: string, envName: string): Option {
  return new Option(flags, description).env(env(envName));
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('Run the egress proxy. Every setting is a flag and an AGENT_EGRESS_* environment variable.')
    .addOption(opt('--listen <host:port>', 'proxy listen address (loopback by default)', 'LISTEN').default('127.0.0.1:3128'))
    .addOption(opt('--policy <file>', 'policy YAML file (see docs/policy.md); reloaded on change and on SIGHUP', 'POLICY'))
    .addOption(repeatable('--allow <pattern[:ports]>', 'allow a host pattern or CIDR, e.g. api.openai.com or "*.github.com:443,80"', env('ALLOW')))
    .addOption(repeatable('--deny <pattern[:ports]>', 'deny a host pattern or CIDR (deny wins)', env('DENY')))
    .addOption(repeatable('--allow-address <cidr>', 'exempt a range from the private-address guard (host rules still apply)', env('ALLOW_ADDRESS')))
    .addOption(repeatable('--dns-server <ip[:port]>', 'resolve through these servers instead of the system resolver', env('DNS_SERVER')))
    .addOption(opt('--log-file <path>', 'write decision records (JSON lines) here instead of stdout', 'LOG_FILE'))
    .addOption(opt('--no-decision-log', 'do not write JSON-lines decision records', 'NO_DECISION_LOG'))
    .addOption(opt('--log-query', 'keep query strings in recorded paths (off: queries often carry tokens)', 'LOG_QUERY'))
    .addOption(opt('--log-level <level>', 'operational log level (stderr)', 'LOG_LEVEL').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .addOption(opt('--log-format <format>', 'operational log format: auto = pretty on a terminal, JSON lines otherwise; ocsf = shorthand for --record-format ocsf', 'LOG_FORMAT').choices([...OP_LOG_FORMATS, 'ocsf']).default('auto'))
    .addOption(opt('--record-format <format>', 'decision records (JSON lines): native, or ocsf = OCSF 1.5 events (HTTP/Network/DNS Activity, docs/siem.md) (default: native)', 'RECORD_FORMAT').choices(RECORD_FORMATS))
    .addOption(opt('--tls-cert <file>', 'serve the proxy over TLS with this certificate (clients use HTTPS_PROXY=https://…)', 'TLS_CERT'))
    .addOption(opt('--tls-key <file>', 'private key for --tls-cert', 'TLS_KEY'))
    .addOption(opt('--client-ca <file>', 'require client certificates signed by this CA; their CN/SAN identify agents (cert_names)', 'CLIENT_CA'))
    .addOption(opt('--inspect-ca <file>', 'CA certificate that signs the leaves for rules with inspect: true (docs/inspection.md)', 'INSPECT_CA'))
    .addOption(opt('--inspect-ca-key <file>', 'private key for --inspect-ca', 'INSPECT_CA_KEY'))
    .addOption(repeatable('--upstream-ca <file>', 'extra CA bundle that inspected origins may chain to (besides the system trust store)', env('UPSTREAM_CA')))
    .addOption(opt('--max-header-bytes <n>', 'request line + headers limit', 'MAX_HEADER_BYTES').argParser(parsePositiveInt).default(DEFAULT_LIMITS.maxHeaderBytes))
    .addOption(opt('--headers-timeout <dur>', 'time to receive a request head (slowloris guard)', 'HEADERS_TIMEOUT').argParser(parseDurationMs).default(DEFAULT_LIMITS.headersTimeoutMs, '10s'))
    .addOption(opt('--dns-timeout <dur>', 'name resolution deadline', 'DNS_TIMEOUT').argParser(parseDurationMs).default(DEFAULT_LIMITS.dnsTimeoutMs, '5s'))
    .addOption(opt('--connect-timeout <dur>', 'upstream connect deadline', 'CONNECT_TIMEOUT').argParser(parseDurationMs).default(DEFAULT_LIMITS.connectTimeoutMs, '10s'))
    .addOption(opt('--tunnel-idle-timeout <dur>', 'close a tunnel idle this long', 'TUNNEL_IDLE_TIMEOUT').argParser(parseDurationMs).default(DEFAULT_LIMITS.tunnelIdleMs, '5m'))
    .addOption(opt('--request-idle-timeout <dur>', 'plain HTTP: upstream silent this long -> 504', 'REQUEST_IDLE_TIMEOUT').argParser(parseDurationMs).default(DEFAULT_LIMITS.requestIdleMs, '60s'))
    .addOption(opt('--keep-alive-timeout <dur>', 'idle client keep-alive connections are closed after this', 'KEEP_ALIVE_TIMEOUT').argParser(parseDurationMs).default(DEFAULT_LIMITS.keepAliveMs, '30s'))
    .addOption(opt('--max-connections <n>', 'concurrent client connections in total (503 beyond)', 'MAX_CONNECTIONS').argParser(parsePositiveInt).default(DEFAULT_LIMITS.maxConnections))
    .addOption(opt('--max-connections-per-client <n>', 'concurrent connections from one client address (503 beyond)', 'MAX_CONNECTIONS_PER_CLIENT').argParser(parsePositiveInt).default(DEFAULT_LIMITS.maxConnectionsPerClient))
    .addOption(opt('--shutdown-grace <dur>', 'on SIGTERM/SIGINT, time for in-flight work to finish', 'SHUTDOWN_GRACE').argParser(parseDurationMs).default(DEFAULT_LIMITS.shutdownGraceMs, '10s'))
    .addOption(opt('--policy-poll <dur>', 'how often to check the policy file for changes (0 = only SIGHUP/API)', 'POLICY_POLL').argParser((v) => (v === '0' ? 0 : parseDurationMs(v))).default(1_000, '1s'))
    .addOption(opt('--policy-settle <dur>', 'load a changed policy file only once it stayed unchanged this long (0 = at once)', 'POLICY_SETTLE').argParser((v) => (v === '0' ? 0 : parseDurationMs(v))).default(2_000, '2s'))
    .addOption(opt('--data-dir <dir>', 'where the SQLite decision store, the admin token and (PostgreSQL store) the outage spool live', 'DATA_DIR').default('./data'))
    .addOption(storeOption())
    .addOption(storePasswordFileOption())
    .addOption(replicaNameOption())
    .addOption(storeQueueOption())
    .addOption(opt('--no-store', 'do not keep decisions in a store (also disables the admin API)', 'NO_STORE'))
    .addOption(opt('--retention <dur>', 'delete stored decisions older than this, e.g. 30d', 'RETENTION').argParser(parseDurationMs))
    .addOption(opt('--retention-size <size>', 'keep the store under this size, e.g. 2GB (oldest deleted first)', 'RETENTION_SIZE').argParser(parseSize))
    .addOption(opt('--admin-listen <host:port>', 'admin API (queries, /metrics, reload, page); bearer token required on every address (see --admin-token)', 'ADMIN_LISTEN').default('127.0.0.1:3129'))
    .addOption(opt('--no-admin', 'do not start the admin API', 'NO_ADMIN'))
    .addOption(repeatable('--admin-host <name>', 'a DNS name the admin API is reached by (besides IP addresses and localhost); other Host headers get 421', env('ADMIN_HOST')))
    .addOption(opt('--admin-token <token>', 'bearer token for the admin API (prefer the env var); default: generated once into <data-dir>/admin-token (mode 0600)', 'ADMIN_TOKEN'))
    .addOption(opt('--viewer-token <token>', 'a second admin API token for read-only users (dashboard and API: reads everything, cannot approve, deny, revoke or reload)', 'VIEWER_TOKEN'))
    .addOption(opt('--viewer-token-file <file>', 'read the viewer token from this file (mode 0600, owned by this user)', 'VIEWER_TOKEN_FILE'))
    .addOption(opt('--no-admin-auth', 'serve the admin API without a token (loopback only; warns loudly: any local process can read it)', 'NO_ADMIN_AUTH'))
    .addOption(opt('--metrics-auth', '/metrics needs the admin token too (/healthz and /readyz stay open)', 'METRICS_AUTH'))
    .addOption(opt('--alert-window <dur>', 'spike alerts: sliding window of denies per agent', 'ALERT_WINDOW').argParser(parseDurationMs).default(60_000, '60s'))
    .addOption(opt('--alert-threshold <n>', 'spike alerts: denies in the window that count as a spike', 'ALERT_THRESHOLD').argParser(parsePositiveInt).default(20))
    .addOption(opt('--alert-multiplier <x>', "spike alerts: and more than x times the agent's own baseline", 'ALERT_MULTIPLIER').argParser(parsePositiveNumber).default(3))
    .addOption(opt('--alert-webhook <url>', 'POST spike alerts (JSON) here; not subject to the agent policy', 'ALERT_WEBHOOK'))
    .addOption(opt('--no-alerts', 'turn spike detection off', 'NO_ALERTS'))
    .addOption(opt('--firewall-metrics <tool>', "export the companion firewall's refused-packet counters in /metrics (rules on this host)", 'FIREWALL_METRICS').choices(['nftables', 'iptables']))
    .addOption(opt('--socks-listen <host:port>', 'also accept SOCKS5 clients here (RFC 1928 CONNECT, socks5h; username/password = agent credentials)', 'SOCKS_LISTEN'))
    .addOption(repeatable('--dns-listen <host:port>', 'start the filtering DNS resolver here (UDP and TCP)', env('DNS_LISTEN')))
    .addOption(opt('--dns-refuse-code <code>', 'answer for names the policy refuses: nxdomain or refused', 'DNS_REFUSE_CODE').argParser(parseRefuseCode).default('NXDOMAIN', 'nxdomain'))
    .addOption(opt('--dns-rate-limit <n[/burst]>', 'queries per second per client (0 = off)', 'DNS_RATE_LIMIT').argParser(parseRateLimit).default({ perSecond: 50, burst: 100 }, '50/100'))
    .addOption(opt('--dns-cache-size <n>', 'answers cached (0 = off)', 'DNS_CACHE_SIZE').argParser(parseCacheSize).default(10_000))
    // Approvals (docs/approvals.md): held asks and grants.
    .addOption(opt('--approval-timeout <dur>', 'approvals: a held request (action: ask) is denied after waiting this long', 'APPROVAL_TIMEOUT').argParser(parseDurationMs).default(60_000, '60s'))
    .addOption(opt('--approval-dns-timeout <dur>', 'approvals: a held DNS query is refused after this long (capped by --approval-timeout)', 'APPROVAL_DNS_TIMEOUT').argParser(parseDurationMs).default(4_000, '4s'))
    .addOption(opt('--max-pending-approvals <n>', 'approvals: pending approvals in total; a new ask beyond is denied', 'MAX_PENDING_APPROVALS').argParser(parsePositiveInt).default(100))
    .addOption(opt('--max-pending-approvals-per-agent <n>', 'approvals: pending approvals per agent; a new ask beyond is denied', 'MAX_PENDING_APPROVALS_PER_AGENT').argParser(parsePositiveInt).default(10))
    .addOption(opt('--grants-file <file>', 'approvals: where "always" grants are written (YAML, policy format); default <data-dir>/grants.yaml', 'GRANTS_FILE'))
    .addOption(opt('--approval-webhook <url>', 'approvals: POST each new pending approval here (JSON with a Slack-compatible text field)', 'APPROVAL_WEBHOOK').argParser(parseHttpUrl))
    // Transparent capture (src/capture, docs/capture.md).
    .addOption(repeatable('--transparent-listen <host:port|port=host:port>', 'accept connections the companion firewall redirects; HOST:PORT serves captured port i at PORT+i, PORT=HOST:PORT maps one', env('TRANSPARENT_LISTEN')))
    .addOption(opt('--capture-ports <list>', 'the destination ports --transparent-listen HOST:PORT stands for, in order (default 80,443)', 'CAPTURE_PORTS'))
    .addOption(opt('--workers <n|auto>', 'processes sharing the listeners (node:cluster); auto = one per core', 'WORKERS').default('1'))
    .action(async (o) => {
      const formats = resolveLogFormats(o.logFormat, o.recordFormat);
      if ('error' in formats) {
        console.error(`agent-egress serve: ${formats.error}`);
        process.exit(2);
      }
      const logger = createOpLogger({ level: o.logLevel, format: formats.opLog as OpLogFormat });
      if (!!o.tlsCert !== !!o.tlsKey) {
        console.error('agent-egress: --tls-cert and --tls-key go together');
        process.exit(2);
      }
      if (o.adminToken && o.adminAuth === false) {
        console.error('agent-egress: --admin-token and --no-admin-auth contradict each other');
        process.exit(2);
      }
      let viewerToken: string | undefined;
      try {
        viewerToken = resolveViewerToken({ token: o.viewerToken, file: o.viewerTokenFile, noAuth: o.adminAuth === false, adminToken: o.adminToken });
      } catch (err) {
        console.error(`agent-egress: ${(err as Error).message}`);
        process.exit(2);
      }
      if (!!o.inspectCa !== !!o.inspectCaKey) {
        console.error('agent-egress: --inspect-ca and --inspect-ca-key go together');
        process.exit(2);
      }
      let transparent;
      let storeCfg;
      try {
        transparent = parseTransparentListen(listValue(o.transparentListen), o.capturePorts);
        storeCfg = o.store === false ? null : serveStoreConfig(o);
      } catch (err) {
        console.error(`agent-egress: ${(err as Error).message}`);
        process.exit(2);
      }
      const cfg: EgressConfig = {
        transparent,
        listen: o.listen,
        policyFile: o.policy,
        flags: { allow: listValue(o.allow), deny: listValue(o.deny), allowAddress: listValue(o.allowAddress) },
        dnsServers: listValue(o.dnsServer),
        logFile: o.decisionLog === false ? null : o.logFile,
        recordFormat: formats.records,
        logQuery: !!o.logQuery,
        watchMs: o.policyPoll,
        policySettleMs: o.policySettle,
        tls: o.tlsCert ? { certFile: o.tlsCert, keyFile: o.tlsKey, clientCaFile: o.clientCa } : undefined,
        inspect: { caFile: o.inspectCa, caKeyFile: o.inspectCaKey, upstreamCaFiles: listValue(o.upstreamCa) },
        limits: {
          maxHeaderBytes: o.maxHeaderBytes,
          headersTimeoutMs: o.headersTimeout,
          dnsTimeoutMs: o.dnsTimeout,
          connectTimeoutMs: o.connectTimeout,
          tunnelIdleMs: o.tunnelIdleTimeout,
          requestIdleMs: o.requestIdleTimeout,
          keepAliveMs: o.keepAliveTimeout,
          maxConnections: o.maxConnections,
          maxConnectionsPerClient: o.maxConnectionsPerClient,
          shutdownGraceMs: o.shutdownGrace,
        },
        logger,
        store: storeCfg ? { dataDir: o.dataDir, retentionMs: o.retention, maxBytes: o.retentionSize, ...storeCfg } : null,
        admin: o.admin === false || o.store === false ? null : { listen: o.adminListen, token: o.adminToken, viewerToken, hosts: listValue(o.adminHost), noAuth: o.adminAuth === false, metricsAuth: !!o.metricsAuth },
        alerts:
          o.alerts === false
            ? false
            : { windowMs: o.alertWindow, threshold: o.alertThreshold, multiplier: o.alertMultiplier, webhook: o.alertWebhook ? { url: o.alertWebhook } : undefined },
        firewallMetrics: o.firewallMetrics ?? null,
        approvals: {
          timeoutMs: o.approvalTimeout,
          dnsTimeoutMs: o.approvalDnsTimeout,
          maxTotal: o.maxPendingApprovals,
          maxPerAgent: o.maxPendingApprovalsPerAgent,
          grantsFile: o.grantsFile,
          webhook: o.approvalWebhook,
        },
        socks: o.socksListen ? { listen: o.socksListen } : null,
        dns: listValue(o.dnsListen).length
          ? { listen: listValue(o.dnsListen), refuseWith: o.dnsRefuseCode, rateLimit: o.dnsRateLimit, cacheMaxEntries: o.dnsCacheSize }
          : null,
      };
      let workers: number;
      try {
        workers = parseWorkers(o.workers);
      } catch (err) {
        console.error(`agent-egress: ${(err as Error).message}`);
        process.exit(2);
      }
      if (workers > 1 && !isClusterWorker()) {
        try {
          // Validate before forking anything: never start half-configured.
          const report = reportModeWarning(buildPolicy(cfg.policyFile, cfg.flags, process.env, { inspectCa: !!cfg.inspect?.caFile }).spec);
          if (report) logger.warn({ agents: report.agents }, report.msg);
          const { runPrimary } = await import('../../runtime/cluster.js');
          await runPrimary(cfg, workers, logger);
        } catch (err) {
          if (err instanceof PolicyError) console.error(`agent-egress: invalid policy\n${err.message}`);
          else console.error(`agent-egress: cannot start: ${(err as Error).message}`);
          process.exit(2);
        }
        return;
      }
      const clustered = isClusterWorker();
      // node:cluster and the aggregating metrics registry only for a worker (and the primary, above).
      const cluster = clustered ? await import('../../runtime/cluster.js') : null;
      let running;
      try {
        running = await startEgress(cluster ? cluster.workerConfig(cfg) : cfg);
      } catch (err) {
        // Never start half-configured: a bad policy or listen address is exit 2 with the reason.
        // A worker hands the reason to the primary, which says it once for all workers.
        if (cluster) await cluster.reportWorkerStartFailure(err instanceof PolicyError ? `invalid policy: ${err.message}` : (err as Error).message);
        else if (err instanceof PolicyError) console.error(`agent-egress: invalid policy\n${err.message}`);
        else console.error(`agent-egress: cannot start: ${(err as Error).message}`);
        process.exit(2);
      }
      const r = running;
      if (cluster) cluster.attachWorker(r);
      logger.info(
        {
          listen: formatListen(r.address),
          admin: r.admin ? formatListen(r.admin) : null,
          dns: r.dns ? r.dns.listeners.map(formatListen) : null,
          socks: r.socks ? formatListen(r.socks.address) : null,
          store: storeCfg ? storeCfg.location.display : null,
          replica: storeCfg?.location.kind === 'postgres' ? storeCfg.replica : undefined,
          policy: o.policy ?? '<flags>',
          policyHash: r.holder.current().hash,
        },
        'agent-egress proxy listening',
      );
      const report = clustered ? null : reportModeWarning(r.holder.current().spec);
      if (report) logger.warn({ agents: report.agents }, report.msg);
      process.on('SIGHUP', () => void r.holder.reload('signal'));
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'shutting down: draining in-flight work');
        r.close().then(
          () => {
            logger.info('stopped');
            logger.flush?.();
            process.exit(0);
          },
          (err) => {
            logger.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}
