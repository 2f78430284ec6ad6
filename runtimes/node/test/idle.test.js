'use strict';

// IdleCollector: one full collection once the worker has been idle, only
// when its heap grew, never while an invocation runs.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const { setTimeout: sleep } = require('node:timers/promises');

const { IdleCollector, DELAY_ENV } = require('../lib/idle');

test('collects once after the quiet time, not while busy, not again without growth', async () => {
  const idle = new IdleCollector({ delay: 40, threshold: 0 });
  idle.started();
  idle.started();
  idle.ended(); // one still running
  await sleep(120);
  assert.equal(idle.collections, 0, 'collected while an invocation was running');
  idle.ended();
  await sleep(20);
  assert.equal(idle.collections, 0, 'collected before the quiet time');
  await sleep(150);
  assert.equal(idle.collections, 1);
  // Nothing ran since: no timer is armed, nothing more happens.
  await sleep(100);
  assert.equal(idle.collections, 1);
  idle.stop();
});

test('an invocation in the quiet time moves the collection after its end', async () => {
  const idle = new IdleCollector({ delay: 80, threshold: 0 });
  idle.started();
  idle.ended();
  await sleep(50);
  idle.started();
  idle.ended(); // the timer armed by the first end fires at 80 ms, and must wait for this one's
  await sleep(50);
  assert.equal(idle.collections, 0);
  await sleep(150);
  assert.equal(idle.collections, 1);
  idle.stop();
});

test('no collection while the heap has not grown by the threshold', async () => {
  const idle = new IdleCollector({ delay: 20, threshold: 512 * 1024 * 1024 });
  idle.started();
  idle.ended();
  await sleep(100);
  assert.equal(idle.collections, 0);
  idle.stop();
});

test(`${DELAY_ENV}=0 turns it off, read at the first end`, async () => {
  const idle = new IdleCollector({ threshold: 0 });
  const before = process.env[DELAY_ENV];
  process.env[DELAY_ENV] = '0';
  try {
    idle.started();
    idle.ended();
  } finally {
    if (before === undefined) delete process.env[DELAY_ENV];
    else process.env[DELAY_ENV] = before;
  }
  assert.equal(idle.delay, 0);
  assert.equal(idle.timer, null);
  idle.stop();
});

test('the function code gets no global gc', async () => {
  const idle = new IdleCollector({ delay: 1, threshold: 0 });
  idle.started();
  idle.ended();
  await sleep(50);
  assert.equal(idle.collections, 1);
  idle.stop();
  assert.equal(typeof globalThis.gc, 'undefined');
});
