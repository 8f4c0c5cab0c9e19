/**
 * The wabus webhook: verify (Standard Webhooks, on the raw body), deduplicate on `webhook-id`,
 * handle, and answer `message.received` with `{"reply": {"text": …}}`, which the relay sends back
 * to the same chat.
 */
import { Webhook } from "standardwebhooks";

import { replyTo } from "@/lib/reply";
import { alreadyHandled, markHandled } from "@/lib/wabus/dedupe";
import { recordVerified, stats } from "@/lib/wabus/stats";
import type { WabusEvent } from "@/lib/wabus/types";

export const runtime = "nodejs";
export const dynamic = "force-dynamic";

export async function POST(req: Request): Promise<Response> {
  const secret = process.env.WABUS_WEBHOOK_SECRET;
  if (!secret) {
    return Response.json({ error: "WABUS_WEBHOOK_SECRET is not set" }, { status: 503 });
  }
  const body = await req.text(); // the raw body: never verify re-serialised JSON
  let event: WabusEvent;
  try {
    event = new Webhook(secret).verify(body, Object.fromEntries(req.headers)) as WabusEvent;
  } catch {
    stats.rejected += 1;
    return Response.json({ error: "invalid signature" }, { status: 400 });
  }
  const id = req.headers.get("webhook-id") ?? event.id;
  if (alreadyHandled(id)) {
    stats.duplicates += 1;
    return Response.json({ duplicate: true });
  }
  recordVerified(event);
  const answer = await handle(event);
  markHandled(id); // after handling: a delivery that failed half-way is handled again on retry
  return Response.json(answer);
}

async function handle(event: WabusEvent): Promise<object> {
  switch (event.type) {
    case "message.received": {
      if (event.data.from_me) return { ok: true };
      const text = await replyTo(event.data);
      if (text === null) return { ok: true };
      stats.replies += 1;
      return { reply: { text } };
    }
    case "message.failed":
      console.warn(`wabus: send ${event.data.command_id} failed: ${event.data.code} (${event.data.reason})`);
      return { ok: true };
    default:
      return { ok: true };
  }
}
