import type { Socket } from 'node:net';
import { startRecord, type DecisionRecord } from '../decisions/record.js';
import { formatAuthority, parseConnectTarget, TargetError, type Target } from '../net/target.js';
import type { Reason } from '../policy/vocabulary.js';
import { clientLabel, emit, identifyWith, type ProxyCore } from '../proxy/core.js';
import { settle, settleVet } from '../proxy/record.js';
import { dialForTunnel, splice, vetTunnel, type TunnelReplies } from '../proxy/tunnel.js';
import { handleInspected } from '../inspect/tunnel.js';
import type { VetContext } from '../proxy/vet.js';
import {
  authReply,
  chooseMethod,
  COMMAND,
  METHOD,
  methodReply,
  parseGreeting,
  parseRequest,
  parseUserPass,
  reply,
  REPLY,
  replyFor,
  type Malformed,
  type SocksRequest,
} from './socks5-wire.js';

/** A refused SOCKS4 request (VN 0, CD 91): a SOCKS4 client reads it as "rejected" instead of hanging. */
const SOCKS4_REJECT = Buffer.from([0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
/** After the last reply, how long a client may take to close before the socket is destroyed. */
const LINGER_MS = 2_000;
/** Record statuses are the HTTP status a CONNECT would have got, so queries read alike across listeners. */
const STATUS: Partial<Record<Reason, number>> = { bad_request: 400, auth_required: 407, shutting_down: 503, limit_exceeded: 503 };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * One SOCKS5 client connection: greeting, optional RFC 1929 authentication, the request, then the
 * same vet, dial, splice and record as CONNECT. Until the request is complete, everything the client
 * sends is buffered and parsed from the start, so segmentation never matters; the whole handshake is
 * bounded by the header timeout.
 */
export function serveSocks(core: ProxyCore, socket: Socket): void {
  new Session(core, socket).start();
}

class Session {
  private buf: Buffer = Buffer.alloc(0);
  private stage: 'greeting' | 'auth' | 'request' | 'done' = 'greeting';
  private ctx: VetContext | null = null;
  private agent: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.now();
  private readonly onData = (chunk: Buffer) => this.receive(chunk);

  constructor(
    private readonly core: ProxyCore,
    private readonly socket: Socket,
  ) {}

  start(): void {
    this.socket.on('error', () => this.socket.destroy());
    this.socket.on('close', () => this.stopTimer());
    this.socket.on('data', this.onData);
    this.timer = setTimeout(() => this.timeout(), this.core.limits.headersTimeoutMs);
  }

  private receive(chunk: Buffer): void {
    if (this.stage === 'done') return;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    try {
      // One segment may carry the greeting, the credentials and the request: parse until one needs more.
      while (this.step());
    } catch (err) {
      // A bug must cost this connection, never the process.
      this.core.logger.error({ err }, 'SOCKS5 handshake failed');
      this.stage = 'done';
      this.socket.destroy();
    }
  }

  /** Parse one message off the buffer; false when more bytes are needed. */
  private step(): boolean {
    if (this.stage === 'done') return false;
    if (this.stage === 'greeting') return this.greeting();
    if (this.stage === 'auth') return this.auth();
    return this.request();
  }

  private consume(n: number): void {
    this.buf = this.buf.subarray(n);
  }

  private greeting(): boolean {
    const p = parseGreeting(this.buf);
    if (p.kind === 'need') return false;
    if (p.kind === 'bad') return this.malformed(p);
    this.consume(p.used);
    // One policy for the whole connection, read once: a reload mid-handshake never mixes two.
    const ctx = (this.ctx = this.core.context());
    const anonymous = identifyWith(ctx, { present: false }, this.socket);
    const method = chooseMethod(p.methods, anonymous.ok);
    if (method === METHOD.none) {
      // "No acceptable method": credentials are required and none were offered, or nothing we speak was.
      const reason: Reason = anonymous.ok ? 'bad_request' : 'auth_required';
      const error = anonymous.ok ? 'no supported authentication method offered' : 'proxy credentials required: offer username/password (RFC 1929)';
      this.refuseEarly(reason, { error, methods: p.methods }, methodReply(METHOD.none));
      return false;
    }
    this.socket.write(methodReply(method));
    if (method === METHOD.userPass) this.stage = 'auth';
    else {
      this.agent = anonymous.ok ? anonymous.agent : null;
      this.stage = 'request';
    }
    return true;
  }

  private auth(): boolean {
    const p = parseUserPass(this.buf);
    if (p.kind === 'need') return false;
    if (p.kind === 'bad') return this.malformed(p);
    this.consume(p.used);
    const who = identifyWith(this.ctx!, { present: true, username: p.username, password: p.password }, this.socket);
    if (!who.ok) {
      this.refuseEarly('auth_required', { error: who.message }, authReply(false));
      return false;
    }
    this.socket.write(authReply(true));
    this.agent = who.agent;
    this.stage = 'request';
    return true;
  }

  private request(): boolean {
    const p = parseRequest(this.buf);
    if (p.kind === 'need') return false;
    if (p.kind === 'atyp') {
      this.refuseEarly('bad_request', { error: 'address type not supported', atyp: p.atyp }, reply(REPLY.addressTypeNotSupported));
      return false;
    }
    if (p.kind === 'bad') {
      this.refuseEarly('bad_request', { error: p.error }, reply(REPLY.generalFailure));
      return false;
    }
    this.consume(p.used);
    this.stage = 'done';
    this.stopTimer();
    // Bytes the client sent after the request go upstream untouched once connected; until then, read no more.
    this.socket.off('data', this.onData);
    this.socket.pause();
    const head = Buffer.from(this.buf);
    this.buf = Buffer.alloc(0);
    this.core.counters.activeRequests++;
    void this.connect(p, head)
      .catch((err) => {
        this.core.logger.error({ err }, 'SOCKS5 request failed');
        this.socket.destroy();
      })
      .finally(() => this.core.counters.activeRequests--);
    return false;
  }

  /** CONNECT's path from here on: the same target parser, vetDestination, vetted dial, splice and record. */
  private async connect(p: SocksRequest, head: Buffer): Promise<void> {
    const { core, socket, t0 } = this;
    const ctx = this.ctx!;
    const rec = startRecord(clientLabel(socket), 'SOCKS5', p.authority.slice(0, 255), p.port, ctx.policy.hash);
    rec.agent = this.agent;
    const refuse = (reason: Reason, code: number, detail: Record<string, unknown>) => {
      settle(rec, { verdict: 'deny', mode: 'enforce', reason, rule: null, status: STATUS[reason] ?? null });
      rec.detail = { ...rec.detail, ...detail, socksReply: code };
      this.close(reply(code));
      emit(core, rec, t0);
    };
    if (p.command !== COMMAND.connect) {
      const name = p.command === COMMAND.bind ? 'BIND' : p.command === COMMAND.udpAssociate ? 'UDP ASSOCIATE' : `command ${p.command}`;
      return refuse('bad_request', REPLY.commandNotSupported, { error: `${name} is not supported (CONNECT only)` });
    }
    let target: Target;
    try {
      target = parseConnectTarget(this.authorityText(p));
    } catch (err) {
      return refuse('bad_request', REPLY.generalFailure, { error: err instanceof TargetError ? `bad SOCKS5 target: ${err.message}` : 'bad SOCKS5 target' });
    }
    rec.host = target.host.value;
    rec.port = target.port;
    if (core.draining()) return refuse('shutting_down', REPLY.generalFailure, {});

    const replies: TunnelReplies = {
      refuse: (r) => {
        const code = replyFor(r.reason, r.cause);
        rec.detail = { ...rec.detail, socksReply: code };
        this.close(reply(code));
      },
      established: (up) => socket.write(reply(REPLY.succeeded, { address: up.localAddress ?? '', port: up.localPort ?? 0 })),
    };
    const v = await vetTunnel(ctx, rec, this.agent, target, socket);
    if (!v.ok) {
      replies.refuse({ status: v.status, reason: v.reason });
      return emit(core, rec, t0);
    }
    if (socket.destroyed) {
      // The client gave up while we resolved: record the decision, open nothing.
      settleVet(rec, v, null);
      return emit(core, rec, t0);
    }
    if (v.decision?.effects?.inspect) {
      // Same as CONNECT: the inner requests are decided one by one; without a CA (cannot load) fail closed.
      if (!core.inspect) return refuse('upstream_tls', REPLY.generalFailure, { error: 'inspection is not configured' });
      return handleInspected(core, core.inspect.inspector, core.inspect.server, rec, t0, socket, head, ctx, this.agent, target, v, false, replies);
    }
    const upstream = await dialForTunnel(core, rec, t0, socket, v, target.port, { target: formatAuthority(target), json: false, status: 200, answer: replies.refuse });
    if (!upstream) return;
    if (socket.destroyed) {
      upstream.destroy();
      return emit(core, rec, t0);
    }
    replies.established(upstream);
    // Bytes pipelined after the request are the tunnel's first: back on the socket for the content check.
    if (head.length > 0) socket.unshift(head);
    splice(core, rec, t0, socket, upstream);
  }

  /** A domain is UTF-8 on the wire (IDN clients may send it unconverted); bytes that are not UTF-8 are no name. */
  private authorityText(p: SocksRequest): string {
    if (p.atyp !== 0x03) return p.authority;
    const host = p.authority.slice(0, p.authority.lastIndexOf(':'));
    try {
      return `${utf8.decode(Buffer.from(host, 'latin1'))}:${p.port}`;
    } catch {
      throw new TargetError('the domain name is not valid UTF-8');
    }
  }

  /** Not SOCKS5 at all (SOCKS4, garbage) or a malformed sub-message: recorded, closed without crashing. */
  private malformed(p: Malformed): boolean {
    this.refuseEarly('bad_request', { error: p.error }, p.socks4 ? SOCKS4_REJECT : undefined);
    return false;
  }

  /** A refusal before the request named a destination: the record has no host. */
  private refuseEarly(reason: Reason, detail: Record<string, unknown>, answer?: Buffer, status = STATUS[reason] ?? null): void {
    this.stage = 'done';
    this.stopTimer();
    const rec: DecisionRecord = startRecord(clientLabel(this.socket), 'SOCKS5', '', null, this.ctx?.policy.hash ?? this.core.context().policy.hash);
    rec.agent = this.agent;
    settle(rec, { verdict: 'deny', mode: 'enforce', reason, rule: null, status });
    rec.detail = detail;
    this.close(answer);
    emit(this.core, rec, this.t0);
  }

  private timeout(): void {
    if (this.stage === 'done') return;
    this.refuseEarly('bad_request', { error: `SOCKS5 handshake not completed within ${this.core.limits.headersTimeoutMs} ms` }, this.stage === 'request' ? reply(REPLY.generalFailure) : undefined, 408);
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Send the last word (if any) and close; what the client still sends is read and dropped so its FIN is seen. */
  private close(last?: Buffer): void {
    const s = this.socket;
    s.off('data', this.onData);
    if (s.destroyed) return;
    if (last) s.end(last);
    else s.end();
    s.resume();
    setTimeout(() => s.destroy(), LINGER_MS).unref();
  }
}
