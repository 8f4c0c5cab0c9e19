// The wabus dashboard's own script: countdowns, live events over server-sent events, and a
// visible notice when a self-refreshing part cannot reach the relay. No eval, no inline code.
"use strict";

function tickCountdowns() {
  const now = Date.now();
  for (const el of document.querySelectorAll(".countdown[data-until]")) {
    const left = Math.round((Date.parse(el.dataset.until) - now) / 1000);
    el.textContent = Number.isNaN(left) ? el.dataset.until : left > 0 ? left + " s" : "now";
  }
}

function showOffline(shown) {
  const banner = document.getElementById("offline");
  if (banner) banner.hidden = !shown;
}

function eventItem(envelope) {
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.type = envelope.type || "";
  item.dataset.instance = envelope.instance || "";
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  const when = document.createElement("time");
  when.textContent = envelope.timestamp || "";
  const type = document.createElement("code");
  type.textContent = envelope.type || "?";
  const who = document.createElement("span");
  who.textContent = " " + (envelope.instance || "") + " ";
  summary.append(when, " ", type, who);
  const body = document.createElement("pre");
  body.textContent = JSON.stringify(envelope, null, 2);
  details.append(summary, body);
  item.append(details);
  return item;
}

function followEvents(list) {
  const MAX_SHOWN = 500;
  const state = document.getElementById("feed-state");
  const dropped = document.getElementById("feed-dropped");
  const pause = document.getElementById("pause");
  let paused = false;
  let skipped = 0;
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    state.textContent = paused ? "paused" : "live";
    if (!paused && skipped) dropped.textContent = skipped + " event(s) arrived while paused (not shown)";
    skipped = 0;
  });
  const source = new EventSource(list.dataset.stream);
  source.addEventListener("ready", () => { state.textContent = paused ? "paused" : "live"; });
  source.addEventListener("dropped", (e) => {
    dropped.textContent = JSON.parse(e.data).dropped + " event(s) dropped: the browser read too slowly";
  });
  source.addEventListener("envelope", (e) => {
    if (paused) { skipped += 1; return; }
    let envelope;
    try { envelope = JSON.parse(e.data); } catch (err) { envelope = {type: "unparsable", raw: e.data}; }
    list.prepend(eventItem(envelope));
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
  });
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; });
}

document.addEventListener("DOMContentLoaded", () => {
  tickCountdowns();
  setInterval(tickCountdowns, 1000);
  document.body.addEventListener("htmx:afterSwap", tickCountdowns);
  document.body.addEventListener("htmx:sendError", () => showOffline(true));
  document.body.addEventListener("htmx:afterRequest", (e) => {
    if (e.detail.successful || (e.detail.xhr && e.detail.xhr.status)) showOffline(false);
  });
  const list = document.getElementById("events");
  if (list) followEvents(list);
});
