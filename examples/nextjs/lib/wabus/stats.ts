/** What the webhook route has seen, for the demo status route (and the end-to-end test). */

export type WebhookStats = {
  verified: number;
  rejected: number;
  duplicates: number;
  replies: number;
  recent: { id: string; type: string; instance: string }[];
};

export const stats: WebhookStats = ((globalThis as { __wabusStats?: WebhookStats }).__wabusStats ??= {
  verified: 0,
  rejected: 0,
  duplicates: 0,
  replies: 0,
  recent: [],
});

export function recordVerified(event: { id: string; type: string; instance: string }): void {
  stats.verified += 1;
  stats.recent.unshift({ id: event.id, type: event.type, instance: event.instance });
  stats.recent.length = Math.min(stats.recent.length, 50);
}
