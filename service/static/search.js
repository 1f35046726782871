// Search: the query form, its advanced options (the API's defaults), results with snippets, "more like this".

import { $, api, collectionPath, requestSchema, showError } from "./api.js";

const OPTIONS = ["radius", "limit", "shortlist", "rerank", "lexical_candidates", "code_weight"];
let searchSeq = 0;
let listeners = [];

// Called after each search with {collection, query, longCode, results: [{id, long_code}]}.
export function onSearched(listener) {
  listeners.push(listener);
}

export function currentCollection() {
  return $("collection").value;
}

// The advanced panel's placeholders and rerank choices, from the API's own schema.
export async function loadDefaults() {
  const schema = await requestSchema("SearchRequest");
  if (!schema) return;
  for (const name of OPTIONS) {
    const property = schema.properties?.[name];
    if (!property) continue;
    if (name === "rerank") {
      const choices = (property.anyOf || [property]).flatMap((part) => part.enum || []);
      const select = $("opt-rerank");
      for (const choice of choices) select.add(new Option(choice, choice));
      const match = /Default: (.+?)\.( |$)/.exec(property.description || "");
      if (match) select.options[0].text = `default (${match[1].replace(/`/g, "")})`;
      continue;
    }
    let fallback = property.default;
    if (fallback == null) {
      const match = /Default: ([0-9]+(?:\.[0-9]+)?)/.exec(property.description || "");
      fallback = match ? match[1] : "";
    }
    const input = $(`opt-${name}`);
    input.placeholder = String(fallback);
    input.title = property.description || "";
  }
}

function options() {
  const body = {};
  for (const name of OPTIONS) {
    const raw = $(`opt-${name}`).value.trim();
    if (raw === "") continue;
    body[name] = name === "rerank" ? raw : Number(raw);
  }
  return body;
}

function appendHighlighted(parent, text, words) {
  if (!words.length) {
    parent.append(text);
    return;
  }
  const pattern = new RegExp(`\\b(${words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})\\b`, "gi");
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    parent.append(text.slice(last, match.index));
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    parent.append(mark);
    last = match.index + match[0].length;
  }
  parent.append(text.slice(last));
}

function metadataText(metadata) {
  if (!metadata) return "";
  return Object.entries(metadata)
    .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" · ")
    .slice(0, 300);
}

function resultItem(hit, rank) {
  const item = document.createElement("li");
  item.className = "result";
  item.dataset.id = hit.id;
  const head = document.createElement("div");
  head.className = "result-head";
  const id = document.createElement("strong");
  id.className = "doc-id";
  id.textContent = hit.id;
  const meta = document.createElement("span");
  meta.className = "meta";
  head.append(id, " ", meta);
  const snippet = document.createElement("p");
  snippet.className = "snippet";
  snippet.textContent = "…";
  const numbers = document.createElement("p");
  numbers.className = "numbers";
  const distance = hit.distance == null ? "none (no address)" : String(hit.distance);
  numbers.innerHTML = `Hamming distance <b class="distance"></b> · score <b class="score"></b>`;
  numbers.querySelector(".distance").textContent = distance;
  numbers.querySelector(".score").textContent = hit.score.toFixed(4);
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more";
  more.textContent = "More like this";
  more.setAttribute("aria-label", `More like ${hit.id}`);
  more.addEventListener("click", () => search({ document_id: hit.id }));
  item.append(head, snippet, numbers, more);
  item.setAttribute("aria-posinset", String(rank));
  return item;
}

function summaryText(response, query, elapsed) {
  const what = query.document_id !== undefined ? `Documents like “${query.document_id}”` : `Results for “${query.text}”`;
  const parts = [
    `${response.count} result${response.count === 1 ? "" : "s"}`,
    `rerank ${response.rerank}`,
    `shortlist ${response.shortlist_size}`,
  ];
  if (response.lexical_size) parts.push(`lexical ${response.lexical_size}`);
  parts.push(`${response.probed} addresses probed`, `${response.touched} entries read`);
  parts.push(`server ${response.took_ms.toFixed(1)} ms`, `page ${elapsed.toFixed(0)} ms`);
  return `${what}: ${parts.join(" · ")}`;
}

async function queryLongCode(collection, query) {
  if (query.document_id !== undefined) {
    const body = { ids: [query.document_id] };
    const found = await api("POST", `${collectionPath(collection)}/snippets`, body);
    return found.data.length ? found.data[0].long_code : null;
  }
  const hashed = await api("POST", "/v1/hash", { text: query.text });
  return hashed.data[0].long_code;
}

// Run one search: `query` is {text} or {document_id}. Renders results, then their snippets.
export async function search(query) {
  const collection = currentCollection();
  if (!collection) return;
  const seq = ++searchSeq;
  performance.clearMarks("search-start");
  performance.mark("search-start");
  const started = performance.now();
  const results = $("results");
  const status = $("search-status");
  results.setAttribute("aria-busy", "true");
  results.dataset.state = "searching";
  status.textContent = "Searching…";
  showError($("search-error"), "");
  let response;
  try {
    response = await api("POST", `${collectionPath(collection)}/search`, { ...query, ...options() });
  } catch (err) {
    if (seq !== searchSeq) return;
    status.textContent = "";
    showError($("search-error"), err.message);
    results.dataset.state = "error";
    results.setAttribute("aria-busy", "false");
    return;
  }
  if (seq !== searchSeq) return;
  results.replaceChildren(...response.data.map((hit, i) => resultItem(hit, i + 1)));
  let snippets = [];
  if (response.data.length) {
    try {
      const body = { ids: response.data.map((hit) => hit.id) };
      if (query.text !== undefined) body.query = query.text;
      snippets = (await api("POST", `${collectionPath(collection)}/snippets`, body)).data;
    } catch (err) {
      showError($("search-error"), `Results found, but their text could not be read: ${err.message}`);
    }
  }
  if (seq !== searchSeq) return;
  const words = query.text !== undefined ? (query.text.match(/[^\W_]{2,}/gu) || []) : [];
  const byId = new Map(snippets.map((s) => [s.id, s]));
  for (const item of results.children) {
    const found = byId.get(item.dataset.id);
    const snippet = item.querySelector(".snippet");
    snippet.textContent = "";
    if (found) {
      appendHighlighted(snippet, found.snippet || "(no text)", words);
      item.querySelector(".meta").textContent = metadataText(found.metadata);
    } else {
      snippet.textContent = "(deleted since the search)";
    }
  }
  const elapsed = performance.now() - started;
  const summary = $("search-summary");
  summary.textContent = summaryText(response, query, elapsed);
  summary.hidden = false;
  status.textContent = response.count ? "" : "No documents found.";
  results.dataset.state = "done";
  results.setAttribute("aria-busy", "false");
  performance.clearMarks("search-rendered");
  performance.mark("search-rendered");
  if (listeners.length) {
    const longCode = await queryLongCode(collection, query).catch(() => null);
    if (seq !== searchSeq) return;
    const event = { collection, query, longCode, results: snippets };
    listeners.forEach((listener) => listener(event));
  }
}

// Fill the collection pickers; enable the search form. Returns the collections.
export async function loadCollections(textBundleId) {
  const select = $("collection");
  const listed = (await api("GET", "/v1/collections")).data;
  const text = listed.filter((c) => !textBundleId || c.bundle_id === textBundleId);
  select.replaceChildren(
    ...text.map((c) => new Option(`${c.name} (${c.document_count} documents)`, c.name)),
  );
  if (!text.length) {
    select.add(new Option("no text collection yet", ""));
    $("search-status").textContent =
      "No text collection: create one with POST /v1/collections and add documents (see API docs).";
  } else {
    const largest = text.reduce((a, b) => (b.document_count > a.document_count ? b : a));
    select.value = largest.name;
  }
  for (const id of ["collection", "query", "search-button"]) $(id).disabled = !text.length;
  return listed;
}

export function initSearch() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (!text) {
      showError($("search-error"), "Type a query first.");
      return;
    }
    search({ text });
  });
}
