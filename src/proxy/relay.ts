import type { Readable, Writable } from 'node:stream';

/** The client went away (or the response was destroyed) before the whole body was written. */
export class PrematureCloseError extends Error {
  override name = 'PrematureCloseError';
  readonly code = 'ERR_STREAM_PREMATURE_CLOSE';
  constructor() {
    super('Premature close');
  }
}

/**
 * src -> dst with pipe(), settling like stream.pipeline: resolves once dst has finished; on an error on
 * either side or dst closing early, destroys both and rejects. Not stream.pipeline because, per call, it
 * builds an AbortController and aborts it on success, which constructs a DOMException with a stack
 * trace: about 7% of the proxy's CPU per forwarded request in the S3 profile.
 */
export function relay(src: Readable, dst: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      if (err) {
        src.destroy();
        dst.destroy();
        reject(err);
      } else {
        resolve();
      }
    };
    // `on`, not `once`: a late second error must find a listener rather than crash the process.
    src.on('error', done);
    dst.on('error', done);
    dst.once('finish', () => done());
    dst.once('close', () => {
      if (!dst.writableFinished) done(new PrematureCloseError());
    });
    src.pipe(dst);
  });
}
