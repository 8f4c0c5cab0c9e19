/**
 * Remembers the `webhook-id`s already handled, so a redelivered webhook is not handled twice.
 *
 * In memory, per server process. That is enough for `next start` on one machine. On serverless
 * every instance has its own memory and loses it on a cold start, so a redelivery that lands on
 * another instance is handled again: in production keep the ids in a shared store with an atomic
 * "set if absent" and an expiry (Redis `SET id 1 NX EX 86400`, Upstash/Vercel KV, or a table with
 * a unique key). Replies are safe either way: the relay sends the reply to one event once
 * (command id `reply-<event id>`).
 */

const TTL_MS = 24 * 60 * 60 * 1000;
const MAX_IDS = 10_000;

// On globalThis: Next.js may bundle this module into more than one route, each with its own copy.
const store = ((globalThis as { __wabusSeen?: Map<string, number> }).__wabusSeen ??= new Map());

export function alreadyHandled(id: string, now = Date.now()): boolean {
  const expires = store.get(id);
  return expires !== undefined && expires > now;
}

export function markHandled(id: string, now = Date.now()): void {
  store.set(id, now + TTL_MS);
  if (store.size > MAX_IDS) {
    // A Map iterates in insertion order: drop the oldest entries.
    for (const key of store.keys()) {
      store.delete(key);
      if (store.size <= MAX_IDS) break;
    }
  }
}
