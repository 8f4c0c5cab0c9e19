/**
 * Send a WhatsApp text through the relay: `POST {"instance", "to", "text"}`.
 *
 * Guarded by `EXAMPLE_SEND_TOKEN` (`Authorization: Bearer …`): without a guard this route would let
 * anyone send messages from your number. In your app, call `sendText` from your own server code
 * (a server action, a route behind your auth) instead.
 */
import { RelayError, sendText } from "@/lib/wabus/relay";

export const runtime = "nodejs";
export const dynamic = "force-dynamic";

export async function POST(req: Request): Promise<Response> {
  const token = process.env.EXAMPLE_SEND_TOKEN;
  if (!token || req.headers.get("authorization") !== `Bearer ${token}`) {
    return Response.json({ error: "unauthorized" }, { status: 401 });
  }
  const input = (await req.json().catch(() => null)) as {
    instance?: unknown;
    to?: unknown;
    text?: unknown;
  } | null;
  const { instance, to, text } = input ?? {};
  if (typeof instance !== "string" || typeof to !== "string" || typeof text !== "string") {
    return Response.json({ error: "expected {instance, to, text} strings" }, { status: 422 });
  }
  try {
    return Response.json(
      await sendText(instance, to, text, req.headers.get("idempotency-key") ?? undefined),
      {
        status: 202,
      },
    );
  } catch (error) {
    if (error instanceof RelayError) return Response.json(error.problem, { status: error.status });
    throw error;
  }
}
