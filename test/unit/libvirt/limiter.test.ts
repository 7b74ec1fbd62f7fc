import { describe, expect, it } from 'vitest';
import { AbortError } from '../../../src/index.js';
import { Limiter } from '../../../src/libvirt/limiter.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('Limiter', () => {
  it('runs one task at a time, in order', async () => {
    const limiter = new Limiter(1);
    const order: string[] = [];
    const first = deferred();
    const a = limiter.run(async () => {
      order.push('a:start');
      await first.promise;
      order.push('a:end');
    });
    const b = limiter.run(async () => {
      order.push('b');
    });
    await Promise.resolve();
    expect(limiter.counters()).toEqual({ active: 1, queued: 1 });
    first.resolve();
    await Promise.all([a, b]);
    expect(order).toEqual(['a:start', 'a:end', 'b']);
    expect(limiter.counters()).toEqual({ active: 0, queued: 0 });
  });

  it('frees the slot when a task fails', async () => {
    const limiter = new Limiter(1);
    await expect(limiter.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await limiter.run(async () => 7)).toBe(7);
  });

  it('gives up a queued place on abort, without running the task', async () => {
    const limiter = new Limiter(1);
    const hold = deferred();
    const running = limiter.run(() => hold.promise);
    const ac = new AbortController();
    let ran = false;
    const waiting = limiter.run(async () => {
      ran = true;
    }, ac.signal);
    ac.abort(new Error('user'));
    await expect(waiting).rejects.toBeInstanceOf(AbortError);
    expect(limiter.counters()).toEqual({ active: 1, queued: 0 });
    hold.resolve();
    await running;
    expect(ran).toBe(false);
    await expect(limiter.run(async () => 1, ac.signal)).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });

  it('rejects a bad size', () => {
    expect(() => new Limiter(0)).toThrow(RangeError);
  });
});
