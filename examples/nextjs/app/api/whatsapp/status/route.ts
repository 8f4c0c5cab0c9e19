/** What the webhook route has verified so far (counts and recent event ids): a demo aid. */
import { stats } from "@/lib/wabus/stats";

export const dynamic = "force-dynamic";

export function GET(): Response {
  return Response.json(stats);
}
