/**
 * A store writer's one pending flush. A later request never delays one already set; a request for now
 * (delay 0: a full batch) replaces it; none runs before `notBefore()` (the retry back-off). Unref'd: a
 * pending flush never keeps the process alive (close() flushes).
 */
export class FlushTimer {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly run: () => void,
    private readonly notBefore: () => number,
  ) {}

  schedule(delay: number): void {
    if (this.timer) {
      if (delay > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.run();
      },
      Math.max(delay, this.notBefore() - Date.now()),
    );
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
