// Promise helpers. Every wait in the suite goes through one of these so that
// a misbehaving server makes a test fail with a clear message instead of
// hanging it.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with a descriptive error if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what = "operation") {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the argument list of the next `event` emitted by `emitter`
 * (Node EventEmitter or socket.io-client Emitter); rejects after `timeoutMs`.
 */
export function once(emitter, event, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const handler = (...args) => {
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    emitter.on(event, handler);
  });
}

/** Resolves after `ms` if `event` was not emitted meanwhile, rejects as soon as it is. */
export function expectNoEvent(emitter, event, ms) {
  return new Promise((resolve, reject) => {
    const handler = (...args) => {
      clearTimeout(timer);
      emitter.off(event, handler);
      reject(new Error(`unexpected "${event}" event: ${JSON.stringify(args)}`));
    };
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      resolve();
    }, ms);
    emitter.on(event, handler);
  });
}
