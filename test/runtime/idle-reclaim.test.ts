import { describe, expect, it } from 'vitest';
import { IdleReclaimer, type HeapReading } from '../../src/runtime/idle-reclaim.js';

const MiB = 1024 * 1024;

/** A reclaimer over a scripted heap: `set` changes what the next tick reads; collections are counted. */
function scripted(growth = 8 * MiB) {
  let now: HeapReading = { used: 10 * MiB, total: 20 * MiB };
  let collections = 0;
  let finish: () => void = () => undefined;
  const r = new IdleReclaimer({
    growthBytes: growth,
    quietBytes: 512 * 1024,
    read: () => now,
    collect: () => {
      collections++;
      return new Promise<void>((res) => (finish = res));
    },
  });
  return {
    r,
    set: (used: number, total: number) => (now = { used: used * MiB, total: total * MiB }),
    collections: () => collections,
    finish: async () => {
      finish();
      await new Promise((res) => setImmediate(res));
    },
  };
}

describe('IdleReclaimer', () => {
  it('collects once the heap has grown and allocation has stopped, not while it is busy', async () => {
    const s = scripted();
    expect(s.r.tick()).toBe(false); // first reading: nothing to compare with
    expect(s.r.tick()).toBe(false); // quiet at 20 MiB: that is the floor
    s.set(30, 50);
    expect(s.r.tick()).toBe(false); // allocating (used moved 20 MiB)
    s.set(45, 55);
    expect(s.r.tick()).toBe(false); // still allocating
    expect(s.r.tick()).toBe(true); // quiet, 35 MiB above the floor
    expect(s.collections()).toBe(1);
    expect(s.r.tick()).toBe(false); // one at a time
    await s.finish();
    expect(s.collections()).toBe(1);
  });

  it('does not collect again until the heap grows again past the new floor', async () => {
    const s = scripted();
    s.r.tick();
    s.r.tick();
    s.set(40, 60);
    s.r.tick();
    expect(s.r.tick()).toBe(true);
    s.set(40, 58); // what the collection left
    await s.finish();
    for (let i = 0; i < 5; i++) expect(s.r.tick()).toBe(false);
    s.set(20, 60); // memory reducer shrank nothing further; 2 MiB over the floor is not growth
    s.r.tick();
    expect(s.r.tick()).toBe(false);
    s.set(60, 80);
    s.r.tick();
    expect(s.r.tick()).toBe(true); // grown by 22 MiB over the 58 MiB floor
    expect(s.collections()).toBe(2);
  });

  it('measures growth from the smallest heap seen, even when the first quiet moment is already under load', () => {
    const s = scripted();
    s.r.tick(); // at start: 20 MiB
    s.set(30, 60);
    s.r.tick();
    s.r.tick(); // quiet, but with tunnels open: 40 MiB over the start
    expect(s.collections()).toBe(1);
  });

  it('leaves a heap that grew less than the threshold alone', () => {
    const s = scripted(8 * MiB);
    s.r.tick();
    s.r.tick();
    s.set(12, 27);
    s.r.tick();
    for (let i = 0; i < 5; i++) expect(s.r.tick()).toBe(false);
    expect(s.collections()).toBe(0);
  });

  it('the default collection (vm.measureMemory, eager) settles in this runtime, and checking resumes after it', async () => {
    const r = new IdleReclaimer({ growthBytes: 0, quietBytes: Number.MAX_SAFE_INTEGER });
    r.tick();
    expect(r.tick()).toBe(true);
    let again = false;
    for (let i = 0; i < 100 && !again; i++) {
      await new Promise((res) => setTimeout(res, 20));
      again = r.tick();
    }
    // true only once the first collection settled (busy cleared) and a fresh reading was taken
    expect(again).toBe(true);
  });
});
