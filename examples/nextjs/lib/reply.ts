/**
 * The step that decides what to answer: a plain echo standing in for your AI call.
 *
 * Replace the body with anything that returns the text to send back (or null for no reply). It
 * runs inside the webhook request, so keep it well under the relay's 15 s timeout; for longer work
 * answer 200 without a reply and send later with `sendText` from `lib/wabus/relay.ts`.
 */
import type { MessageReceived } from "./wabus/types";

export async function replyTo(message: MessageReceived): Promise<string | null> {
  if (!message.text) return null;
  return `echo: ${message.text}`;
}
