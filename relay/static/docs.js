// Renders /openapi.json without any third-party code, so the page works offline and under a
// strict Content-Security-Policy (script-src 'self'). Everything is inserted as text nodes.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function schemaBlock(schema) {
  return el("pre", {}, JSON.stringify(schema, null, 2));
}

function operation(path, method, op) {
  const section = el("section", { class: "op" + (op.deprecated ? " deprecated" : ""), id: op.operationId });
  section.append(el("h3", {}, el("span", { class: "method " + method.toUpperCase() }, method.toUpperCase()), el("code", {}, path)));
  section.append(el("p", {}, op.summary || "", op.deprecated ? " (deprecated)" : "", op.security ? " — signed" : " — unsigned"));
  if (op.parameters && op.parameters.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "schema")));
    for (const p of op.parameters) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, el("code", {}, JSON.stringify(p.schema)), " ", p.description || "")));
    }
    section.append(table);
  }
  if (op.requestBody) {
    const content = op.requestBody.content["application/json"];
    section.append(el("details", {}, el("summary", {}, "request body"), schemaBlock(content.schema)));
  }
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning")));
  for (const [status, response] of Object.entries(op.responses)) {
    responses.append(el("tr", {}, el("td", {}, status), el("td", {}, response.description)));
  }
  section.append(responses);
  return section;
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  const root = document.getElementById("doc");
  root.replaceChildren();
  root.append(el("p", {}, `Version ${doc.info.version}, OpenAPI ${doc.openapi}.`));
  root.append(el("pre", {}, doc.info.description));
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) root.append(operation(path, method, op));
  }
  root.append(el("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    root.append(el("details", { id: "schema-" + name }, el("summary", {}, name), schemaBlock(schema)));
  }
}

main().catch((error) => {
  document.getElementById("doc").replaceChildren(el("p", {}, "Could not load /openapi.json: " + error));
});
