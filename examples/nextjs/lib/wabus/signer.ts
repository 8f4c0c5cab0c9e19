/**
 * Signs requests to the wabus relay API: the `X-Wabus-*` headers of the contract.
 *
 *   X-Wabus-Signature: v2=<hex HMAC-SHA256(secret,
 *     "v2\n<ts>\n<METHOD>\n<path?query>\n<Idempotency-Key or empty>\n<hex sha256(body)>")>
 *
 * The signature binds method, path, query, body and the Idempotency-Key, so sign exactly the
 * bytes you send and the request target exactly as it goes on the wire. The relay accepts a
 * signature once (replays are refused; a send's repeat with its Idempotency-Key gets the
 * idempotent answer), so a retry must be signed again. (`v1=`, without the key, is still
 * accepted by the relay.)
 */
import { createHash, createHmac } from "node:crypto";

export type SignInput = {
  keyId: string;
  secret: string;
  method: string;
  /** Path plus `?query` when there is one, e.g. `/v1/instances/acme/messages`. */
  target: string;
  body: string | Uint8Array;
  /** Sent as `Idempotency-Key` and signed with the request. */
  idempotencyKey?: string;
  /** Unix seconds; the current time when omitted (tests pass a fixed one). */
  timestamp?: number;
};

export function canonicalRequest(
  timestamp: string,
  method: string,
  target: string,
  idempotencyKey: string,
  body: string | Uint8Array,
): string {
  const bodyHash = createHash("sha256").update(body).digest("hex");
  return `v2\n${timestamp}\n${method.toUpperCase()}\n${target}\n${idempotencyKey}\n${bodyHash}`;
}

export function signRequest(
  secret: string,
  timestamp: string,
  method: string,
  target: string,
  idempotencyKey: string,
  body: string | Uint8Array,
): string {
  const canonical = canonicalRequest(timestamp, method, target, idempotencyKey, body);
  return `v2=${createHmac("sha256", secret).update(canonical).digest("hex")}`;
}

/** The signed headers, with `Idempotency-Key` when the input has one. */
export function wabusHeaders(input: SignInput): Record<string, string> {
  const timestamp = String(input.timestamp ?? Math.floor(Date.now() / 1000));
  const key = input.idempotencyKey ?? "";
  const headers: Record<string, string> = {
    "X-Wabus-Key-Id": input.keyId,
    "X-Wabus-Timestamp": timestamp,
    "X-Wabus-Signature": signRequest(input.secret, timestamp, input.method, input.target, key, input.body),
  };
  if (key) headers["Idempotency-Key"] = key;
  return headers;
}
