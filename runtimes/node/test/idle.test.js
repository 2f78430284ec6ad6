'use strict';

// IdleCollector: one full collection once the worker has been idle, only
// when its heap grew, never while an invocation runs. A fake clock and
// timer: nothing here depends on how fast the machine is.

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { test } = require('node:test');

const { IdleCollector, DELAY_ENV } = require('../lib/idle');

/** A collector on a fake clock; `tick(ms)` advances it and runs the timer when it is due. */
function fake(options) {
  const clock = { now: 1000, timer: null };
  const idle = new IdleCollector({
    ...options,
    now: () => clock.now,
    schedule: (fn, ms) => {
      const timer = { fn, at: clock.now + ms };
      clock.timer = timer;
      return timer;
    },
    cancel: (timer) => {
      if (clock.timer === timer) clock.timer = null;
    },
  });
  const tick = (ms) => {
    const until = clock.now + ms;
    while (clock.timer !== null && clock.timer.at <= until) {
      const timer = clock.timer;
      clock.timer = null;
      clock.now = timer.at;
      timer.fn();
    }
    clock.now = until;
  };
  return { idle, clock, tick };
}

test('collects once after the quiet time, not while busy, not again without an invocation', () => {
  const { idle, clock, tick } = fake({ delay: 1000, threshold: 0 });
  idle.started();
  idle.started();
  idle.ended(); // one still running
  assert.equal(clock.timer, null, 'armed while an invocation was running');
  tick(5000);
  assert.equal(idle.collections, 0);
  idle.ended();
  tick(999);
  assert.equal(idle.collections, 0, 'collected before the quiet time');
  tick(1);
  assert.equal(idle.collections, 1);
  assert.equal(clock.timer, null);
  tick(60000);
  assert.equal(idle.collections, 1);
});

test('an invocation in the quiet time moves the collection to a full quiet time after its end', () => {
  const { idle, tick } = fake({ delay: 1000, threshold: 0 });
  idle.started();
  idle.ended(); // at 1000: the timer is due at 2000
  tick(600);
  idle.started();
  idle.ended(); // at 1600: nothing may happen before 2600
  tick(600); // 2200: the timer fired at 2000 and waits again
  assert.equal(idle.collections, 0);
  tick(399);
  assert.equal(idle.collections, 0);
  tick(1);
  assert.equal(idle.collections, 1);
});

test('a timer that fires while an invocation runs does nothing; the end arms it again', () => {
  const { idle, clock, tick } = fake({ delay: 1000, threshold: 0 });
  idle.started();
  idle.ended();
  tick(500);
  idle.started();
  tick(2000); // the timer fires mid-invocation
  assert.equal(idle.collections, 0);
  assert.equal(clock.timer, null);
  idle.ended();
  tick(1000);
  assert.equal(idle.collections, 1);
});

test('no collection while the heap has not grown by the threshold', () => {
  const { idle, tick } = fake({ delay: 1000, threshold: 512 * 1024 * 1024 });
  idle.started();
  idle.ended();
  tick(5000);
  assert.equal(idle.collections, 0);
});

test(`${DELAY_ENV}: read at the first end; 0 turns it off; not a whole number keeps the default`, () => {
  const before = process.env[DELAY_ENV];
  const delayFor = (value) => {
    process.env[DELAY_ENV] = value;
    const { idle, clock } = fake({ threshold: 0 });
    idle.started();
    idle.ended();
    return { delay: idle.delay, armed: clock.timer !== null };
  };
  try {
    assert.deepEqual(delayFor('0'), { delay: 0, armed: false });
    assert.deepEqual(delayFor('250'), { delay: 250, armed: true });
    assert.deepEqual(delayFor('0x10'), { delay: 1000, armed: true });
    assert.deepEqual(delayFor('-5'), { delay: 1000, armed: true });
  } finally {
    if (before === undefined) delete process.env[DELAY_ENV];
    else process.env[DELAY_ENV] = before;
  }
});

test('the function code gets no global gc, and a node started with --expose-gc keeps it', () => {
  const script = `
    const { IdleCollector } = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'idle'))});
    const idle = new IdleCollector({ delay: 0, threshold: 0 });
    idle.fire();
    const vm = require('node:vm');
    console.log(JSON.stringify({ collections: idle.collections, global: typeof globalThis.gc,
      later: typeof vm.runInNewContext('typeof gc') === 'string' ? vm.runInNewContext('typeof gc') : null }));
  `;
  const run = (args) => {
    const out = spawnSync(process.execPath, [...args, '-e', script], { encoding: 'utf8', timeout: 30000 });
    assert.equal(out.status, 0, out.stderr);
    return JSON.parse(out.stdout);
  };
  assert.deepEqual(run([]), { collections: 1, global: 'undefined', later: 'undefined' });
  assert.deepEqual(run(['--expose-gc']), { collections: 1, global: 'function', later: 'function' });
});
