/**
 * A small client for the wabus relay: signed requests with `fetch`, server-side only.
 *
 * Configuration: `WABUS_RELAY_URL` (e.g. https://relay.example.com) and `WABUS_API_KEY`
 * (`<key id>:<secret>`, one entry of the relay's `WABUS_API_KEYS`). Never expose either to the
 * browser: no `NEXT_PUBLIC_` prefix.
 */
import { wabusHeaders } from "./signer";
import type { SendText } from "./types";

export type Accepted = { command_id: string; status: string; duplicate: boolean };

export class RelayError extends Error {
  constructor(
    readonly status: number,
    readonly problem: unknown,
  ) {
    super(`relay answered ${status}: ${JSON.stringify(problem)}`);
  }
}

function relayConfig(): { baseUrl: string; keyId: string; secret: string } {
  const baseUrl = process.env.WABUS_RELAY_URL;
  const [keyId, ...rest] = (process.env.WABUS_API_KEY ?? "").split(":");
  const secret = rest.join(":");
  if (!baseUrl || !keyId || !secret) {
    throw new Error("set WABUS_RELAY_URL and WABUS_API_KEY (<key id>:<secret>)");
  }
  return { baseUrl, keyId, secret };
}

/** POST a signed JSON body to the relay; the answer's JSON, or a RelayError with the problem. */
export async function relayPost<T>(path: string, payload: unknown, idempotencyKey?: string): Promise<T> {
  const { baseUrl, keyId, secret } = relayConfig();
  const url = new URL(path, baseUrl);
  const body = JSON.stringify(payload);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    ...wabusHeaders({ keyId, secret, method: "POST", target: url.pathname + url.search, body, idempotencyKey }),
  };
  const response = await fetch(url, { method: "POST", headers, body, cache: "no-store" });
  const answer: unknown = await response.json().catch(() => null);
  if (!response.ok) throw new RelayError(response.status, answer);
  return answer as T;
}

/** Send a text message; the outcome arrives later as a `message.sent` / `message.failed` webhook. */
export function sendText(
  instance: string,
  to: string,
  text: string,
  idempotencyKey?: string,
): Promise<Accepted> {
  const message: SendText = { type: "text", to, text };
  return relayPost<Accepted>(
    `/v1/instances/${encodeURIComponent(instance)}/messages`,
    message,
    idempotencyKey,
  );
}
