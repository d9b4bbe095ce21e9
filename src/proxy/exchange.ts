import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { roundMs, type DecisionRecord } from '../decisions/record.js';
import type { Reason } from '../policy/vocabulary.js';
import { emit, type ProxyCore } from './core.js';
import { forwardResponseHeaders } from './headers.js';
import { refuseResponse, type Refusal } from './respond.js';

/** The client went away (or the response was destroyed) before the whole body was written. */
export class PrematureCloseError extends Error {
  override name = 'PrematureCloseError';
  readonly code = 'ERR_STREAM_PREMATURE_CLOSE';
  constructor() {
    super('Premature close');
  }
}

/**
 * One request sent upstream through undici's `dispatch` and its answer written to the client as it
 * arrives: the handler object is the whole exchange, so a request costs this object and undici's own
 * request, not `request()`'s async resource, body stream, pipe and AbortController (together about half
 * of the proxy's CPU per forwarded request in the S3 profile).
 *
 * It ends exactly once, in `end(err)`: err is null when the whole answer went out, else why not. Before
 * the answer's head was written the caller can still answer the client (502/504); after, it can only cut
 * the connection. A client that leaves aborts the upstream request.
 */
export abstract class UpstreamExchange implements Dispatcher.DispatchHandler {
  /** Request body bytes sent upstream and response body bytes relayed. */
  up = 0;
  down = 0;
  private controller: Dispatcher.DispatchController | null = null;
  /** Why the upstream request must stop (the client left); applied as soon as undici hands a controller. */
  private abortReason: Error | null = null;
  /** The answer's head was written to the client. */
  private started = false;
  private ended = false;
  private readonly onClose = (): void => this.clientClosed();
  private readonly onDrain = (): void => this.controller?.resume();

  constructor(
    protected readonly req: IncomingMessage,
    protected readonly res: ServerResponse,
  ) {
    res.on('close', this.onClose);
    // Closed before we got here (the client left while the request was being checked): no 'close' will come.
    if (res.destroyed) this.abortReason = abortError();
  }

  /** The origin's answer is starting: settle the record and return the headers to send the client. */
  protected abstract head(status: number, headers: IncomingHttpHeaders): Record<string, string | string[]>;

  /** The exchange is over: err null = the whole answer went out; otherwise why not (see `headersSent`). */
  protected abstract end(err: unknown): void;

  /** A failure before the answer started; true when the subclass sent the request elsewhere instead. */
  protected retry(_err: Error): boolean {
    return false;
  }

  /** Whether the upstream request was asked to stop because the client left. */
  protected get clientGone(): boolean {
    return this.abortReason !== null;
  }

  /**
   * The client's request body for undici, counted; null when the request has none. Counted through an
   * iterator rather than a 'data' listener: a listener would start the flow before undici attaches, and
   * the first chunks would be lost.
   */
  body(): Readable | null {
    const h = this.req.headers;
    if (h['content-length'] === undefined && h['transfer-encoding'] === undefined) return null;
    // undici streams async iterables with backpressure; its types list only Readable.
    return this.counted() as unknown as Readable;
  }

  private async *counted(): AsyncIterable<Buffer> {
    for await (const c of this.req) {
      this.up += (c as Buffer).length;
      yield c as Buffer;
    }
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason) controller.abort(this.abortReason);
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    // 1xx informational answers are not relayed (as request() did); the final answer follows.
    if (status < 200 || this.ended) return;
    // A head the client cannot be sent (writeHead throws) is an upstream failure, answered 502.
    this.res.writeHead(status, this.head(status, headers));
    this.started = true;
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.down += chunk.length;
    if (!this.res.write(chunk)) {
      c.pause();
      this.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(): void {
    // Settled on the response's 'close', once the last byte was handed to the socket (or was not).
    this.res.end();
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (!this.started && !this.abortReason && this.retry(err)) return;
    this.finish(err);
  }

  private clientClosed(): void {
    if (this.ended) return;
    if (this.res.writableFinished) return this.finish(null);
    if (!this.started) {
      // Before the answer: undici fails the request with this reason, which ends the exchange.
      this.abortReason = abortError();
      this.controller?.abort(this.abortReason);
      return;
    }
    this.abortReason = new PrematureCloseError();
    this.controller?.abort(this.abortReason);
    this.finish(this.abortReason);
  }

  private finish(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.res.off('close', this.onClose);
    this.end(err);
  }
}

/** What an AbortSignal's abort() carries, so a record reads the same as when request() was aborted. */
function abortError(): Error {
  return new DOMException('This operation was aborted', 'AbortError');
}

/**
 * An exchange that is one decision record: plain HTTP (forward.ts) and a request inside an inspected
 * tunnel (inspect/tunnel.ts) keep it the same way. The answer's head settles the record with the origin's
 * status; a failure before it is answered 502/504 and recorded with why; a failure after it cuts the
 * connection and marks the record truncated; then the bytes each way and the record go out, once.
 */
export abstract class RecordedExchange extends UpstreamExchange {
  private readonly tc = performance.now();

  constructor(
    protected readonly core: ProxyCore,
    protected readonly rec: DecisionRecord,
    private readonly t0: number,
    /** The refusal's target ("METHOD host"). */
    private readonly label: string,
    private readonly json: boolean,
    req: IncomingMessage,
    res: ServerResponse,
  ) {
    super(req, res);
  }

  /** Settle the record with the origin's status, or with a failure's status and reason. */
  protected abstract settleStatus(status: number, reason?: Reason): void;

  /** What a failure before the answer is answered with. */
  protected abstract failure(err: unknown): { status: number; reason: Reason };

  /** The record's detail.error for a failure. */
  protected abstract errorText(err: unknown): string;

  /** What the refusal says besides status, reason, decision and target (read after the record is settled). */
  protected abstract refusalExtra(err: unknown): Partial<Refusal>;

  protected head(status: number, upstream: IncomingHttpHeaders): Record<string, string | string[]> {
    const rec = this.rec;
    rec.timings.connectMs = roundMs(performance.now() - this.tc);
    this.settleStatus(status);
    const headers = forwardResponseHeaders(upstream);
    headers['x-agent-egress-decision'] = rec.id;
    return headers;
  }

  protected end(err: unknown): void {
    const { core, rec, res } = this;
    if (err) {
      if (!res.headersSent) {
        const { status, reason } = this.failure(err);
        this.settleStatus(status, reason);
        rec.detail = { ...rec.detail, error: this.errorText(err) };
        refuseResponse(res, { status, reason, decisionId: rec.id, target: this.label, ...this.refusalExtra(err) }, this.json, true);
      } else {
        // Headers already went out: the only honest signal left is to cut the connection.
        rec.detail = { ...rec.detail, error: this.errorText(err), truncated: true };
        res.destroy();
      }
    }
    core.counters.activeRequests--;
    rec.bytesUp = this.up;
    rec.bytesDown = this.down;
    emit(core, rec, this.t0);
  }
}
