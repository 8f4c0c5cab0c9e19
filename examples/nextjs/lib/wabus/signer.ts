/**
 * Signs requests to the wabus relay API: the `X-Wabus-*` headers of the contract.
 *
 *   X-Wabus-Signature: v1=<hex HMAC-SHA256(secret, "<ts>\n<METHOD>\n<path?query>\n<hex sha256(body)>")>
 *
 * The signature binds method, path, query and body, so sign exactly the bytes you send and the
 * request target exactly as it goes on the wire. The relay accepts a signature once (replays are
 * refused), so a retry must be signed again.
 */
import { createHash, createHmac } from "node:crypto";

export type SignInput = {
  keyId: string;
  secret: string;
  method: string;
  /** Path plus `?query` when there is one, e.g. `/v1/instances/acme/messages`. */
  target: string;
  body: string | Uint8Array;
  /** Unix seconds; the current time when omitted (tests pass a fixed one). */
  timestamp?: number;
};

export function canonicalRequest(
  timestamp: string,
  method: string,
  target: string,
  body: string | Uint8Array,
): string {
  const bodyHash = createHash("sha256").update(body).digest("hex");
  return `${timestamp}\n${method.toUpperCase()}\n${target}\n${bodyHash}`;
}

export function signRequest(
  secret: string,
  timestamp: string,
  method: string,
  target: string,
  body: string | Uint8Array,
): string {
  const digest = createHmac("sha256", secret).update(canonicalRequest(timestamp, method, target, body));
  return `v1=${digest.digest("hex")}`;
}

export function wabusHeaders(input: SignInput): Record<string, string> {
  const timestamp = String(input.timestamp ?? Math.floor(Date.now() / 1000));
  return {
    "X-Wabus-Key-Id": input.keyId,
    "X-Wabus-Timestamp": timestamp,
    "X-Wabus-Signature": signRequest(input.secret, timestamp, input.method, input.target, input.body),
  };
}
