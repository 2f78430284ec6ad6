'use strict';
// Idle instances give back the memory their last burst of invocations left.
//
// Under load V8 lets garbage pile up in a growing old generation, and frees
// it, and returns the pages to the system, only after several seconds of
// quiet (its memory reducer): an instance that has just served a few
// thousand invocations holds 15-20 MiB more than a fresh one, for seconds
// after its last one. IdleCollector runs one full collection once the worker
// has had no invocation for `delay` ms, if its heap has grown by at least
// `threshold` bytes since the last one: a warm instance waiting in its pool
// costs what a fresh one does. A function called now and then, that
// allocates little, never triggers one.

const v8 = require('node:v8');
const vm = require('node:vm');

// POLYFN_IDLE_GC_MS: the quiet time before a collection, in ms (0: never).
const DELAY_ENV = 'POLYFN_IDLE_GC_MS';
const DEFAULT_DELAY = 1000;
const DEFAULT_THRESHOLD = 2 * 1024 * 1024;

/** @type {(() => void) | null} */
let gc = null;

/**
 * V8's gc(), fetched through a new context so the function's own global has no `gc`.
 * The flag is turned off again after, unless node was started with it.
 * @returns {() => void}
 */
function collector() {
  if (gc === null) {
    v8.setFlagsFromString('--expose-gc');
    try {
      gc = /** @type {() => void} */ (vm.runInNewContext('gc'));
    } finally {
      if (!startedWithExposeGc()) v8.setFlagsFromString('--no-expose-gc');
    }
  }
  return gc;
}

function startedWithExposeGc() {
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return flags.some((flag) => flag === '--expose-gc' || flag === '--expose_gc');
}

/** The delay POLYFN_IDLE_GC_MS sets: a whole number of milliseconds; anything else keeps the default. */
function configuredDelay() {
  const text = (process.env[DELAY_ENV] ?? '').trim();
  if (!/^[0-9]+$/.test(text)) return DEFAULT_DELAY;
  return Number(text);
}

function usedHeap() {
  return v8.getHeapStatistics().used_heap_size;
}

class IdleCollector {
  /**
   * @param {{delay?: number, threshold?: number, now?: () => number,
   *   schedule?: (fn: () => void, ms: number) => unknown, cancel?: (timer: any) => void}} [options]
   *   now, schedule and cancel replace Date.now and an unref'd setTimeout in tests.
   */
  constructor(options = {}) {
    // Read at the first end: a standby worker gets its function's environment after it starts.
    /** @type {number | null} */
    this.delay = options.delay ?? null;
    this.threshold = options.threshold ?? DEFAULT_THRESHOLD;
    this.busy = 0;
    this.lastEnd = 0;
    /** @type {any} */
    this.timer = null;
    this.now = options.now ?? Date.now;
    this.schedule =
      options.schedule ??
      ((fn, ms) => {
        const timer = setTimeout(fn, ms);
        timer.unref(); // never keeps the worker alive
        return timer;
      });
    this.cancel = options.cancel ?? clearTimeout;
    this.baseline = usedHeap();
    this.collections = 0; // for tests and diagnostics
  }

  /** An invocation started. */
  started() {
    this.busy++;
  }

  /** An invocation ended. */
  ended() {
    this.busy--;
    if (this.delay === null) this.delay = configuredDelay();
    if (this.busy > 0 || this.delay === 0) return;
    this.lastEnd = this.now();
    this.arm(this.delay);
  }

  /** @param {number} ms */
  arm(ms) {
    if (this.timer !== null) return; // it checks the time of the last end when it fires
    this.timer = this.schedule(() => this.fire(), ms);
  }

  fire() {
    this.timer = null;
    if (this.busy > 0) return; // ended() arms it again
    const left = this.lastEnd + (this.delay ?? DEFAULT_DELAY) - this.now();
    if (left > 0) {
      this.arm(left);
      return;
    }
    if (this.threshold > 0 && usedHeap() - this.baseline < this.threshold) return;
    collector()();
    this.baseline = usedHeap();
    this.collections++;
  }

  /** Stop the timer (the worker is stopping). */
  stop() {
    if (this.timer !== null) this.cancel(this.timer);
    this.timer = null;
    this.delay = 0;
  }
}

module.exports = { IdleCollector, DELAY_ENV };
