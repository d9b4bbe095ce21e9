import { fstatSync } from 'node:fs';
import net from 'node:net';
import sonicBoom from 'sonic-boom';

// CommonJS: the class is the module itself (its typings call it a default export).
const { SonicBoom } = sonicBoom;

// sonic-boom requires minLength below its 16 KiB maxWrite.
export const BATCH_BYTES = 8 * 1024;

/** Where JSON lines go: batched, bounded, and able to end within a deadline whatever the reader does. */
export interface LineOut {
  write(line: string): void;
  /** Hand the current batch to the writer now. */
  flush(): void;
  /** Write out what is buffered, waiting at most timeoutMs for the reader; then let go. Never rejects. */
  end(timeoutMs: number): Promise<void>;
}

export interface LineOutEvents {
  /** A line was not taken: the buffer is full. */
  onDrop(): void;
  /** The destination failed (EPIPE, disk full); nothing more is written. */
  onError(err: Error): void;
}

/**
 * stdout as a pipe or socket goes through a non-blocking libuv stream: a stopped reader fills its buffer
 * (bounded here) instead of blocking a thread-pool thread in write(2), which would also hang the process
 * at exit. A file or a terminal goes through sonic-boom.
 */
export function openLineOut(path: string | undefined, maxBytes: number, ev: LineOutEvents): LineOut {
  if (path === undefined) {
    let pipe = false;
    try {
      const st = fstatSync(1);
      pipe = st.isFIFO() || st.isSocket();
    } catch {
      /* no stdout: sonic-boom reports the error */
    }
    if (pipe) return new PipeOut(1, maxBytes, ev);
  }
  return new FileOut(path, maxBytes, ev);
}

class PipeOut implements LineOut {
  private readonly sock: net.Socket;
  private buf = '';
  private failed = false;

  constructor(
    fd: number,
    private readonly maxBytes: number,
    private readonly ev: LineOutEvents,
  ) {
    this.sock = new net.Socket({ fd, readable: false, writable: true });
    this.sock.on('error', (err) => {
      if (!this.failed) ev.onError(err);
      this.failed = true;
      this.buf = '';
    });
  }

  write(line: string): void {
    if (this.failed) return;
    if (this.sock.writableLength + this.buf.length + line.length > this.maxBytes) return this.ev.onDrop();
    this.buf += line;
    if (this.buf.length >= BATCH_BYTES) this.flush();
  }

  flush(): void {
    if (!this.buf || this.failed) return;
    const b = this.buf;
    this.buf = '';
    this.sock.write(b);
  }

  end(timeoutMs: number): Promise<void> {
    this.flush();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sock.destroy();
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      if (this.failed || this.sock.destroyed) return done();
      this.sock.once('error', done);
      this.sock.end(done);
    });
  }
}

class FileOut implements LineOut {
  private readonly dest: InstanceType<typeof SonicBoom>;
  private giveUp = false;
  /**
   * Lines gathered here and handed to sonic-boom a batch at a time: its write() measures its whole pending
   * string per call (flattening it), which per line cost more than the line's own write.
   */
  private buf = '';
  private lines = 0;
  /** Lines in the batch being handed over: a 'drop' then loses all of them. */
  private handing = 0;

  constructor(path: string | undefined, maxBytes: number, ev: LineOutEvents) {
    this.dest = new SonicBoom({
      ...(path ? { dest: path, mkdir: true, append: true } : { fd: 1 }),
      minLength: BATCH_BYTES,
      maxLength: maxBytes,
      // A busy destination is retried (every 100 ms) while running; past the close deadline it is given up on.
      retryEAGAIN: () => !this.giveUp,
    });
    this.dest.on('drop', () => {
      for (let i = 0; i < Math.max(1, this.handing); i++) ev.onDrop();
    });
    this.dest.on('error', (err: Error) => ev.onError(err));
  }

  write(line: string): void {
    this.buf += line;
    this.lines++;
    if (this.buf.length >= BATCH_BYTES) this.hand();
  }

  private hand(): void {
    if (!this.buf) return;
    const b = this.buf;
    this.handing = this.lines;
    this.buf = '';
    this.lines = 0;
    try {
      this.dest.write(b);
    } catch {
      /* destroyed: the error event told */
    } finally {
      this.handing = 0;
    }
  }

  flush(): void {
    this.hand();
    try {
      this.dest.flush();
    } catch {
      /* destroyed or not open yet: the error event tells */
    }
  }

  end(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.giveUp = true;
        try {
          this.dest.destroy();
        } catch {
          /* already gone */
        }
        resolve();
      }, timeoutMs);
      timer.unref();
      this.dest.once('close', done);
      this.dest.once('error', done);
      try {
        // end() waits for the file to open first: a start-up that fails early closes cleanly too.
        if ((this.dest as unknown as { destroyed?: boolean }).destroyed) done();
        else {
          this.hand();
          this.dest.end();
        }
      } catch {
        done();
      }
    });
  }
}
