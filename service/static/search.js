// Search: the query form, its advanced options (the API's defaults), results with snippets, "more like this".

import { $, api, collectionPath, requestSchema, showError } from "./api.js";

const OPTIONS = ["probes", "radius", "limit", "shortlist", "rerank", "lexical_candidates", "code_weight"];
let searchSeq = 0;
let listeners = [];

// Called after each search with {collection, query, results: [{id, long_code, ...}], longCode(): a
// promise of the query's long code, current(): whether no search came since}; and with more: true
// when more results were shown.
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
      // "Default: 300." -> 300; "Default: 2 for `code` ... queries" (depends on the query) -> auto
      const match = /Default: ([0-9]+(?:\.[0-9]+)?)( for)?/.exec(property.description || "");
      fallback = match ? (match[2] ? "auto" : match[1]) : "auto";
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

function resultItem(hit) {
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
  return item;
}

function summaryText(response, query) {
  const what = query.document_id !== undefined ? `Documents like “${query.document_id}”` : `Results for “${query.text}”`;
  const parts = [
    `${response.count} result${response.count === 1 ? "" : "s"}`,
    `rerank ${response.rerank}`,
    `shortlist ${response.shortlist_size}`,
  ];
  if (response.lexical_size) parts.push(`lexical ${response.lexical_size}`);
  parts.push(`${response.probed} addresses probed`, `${response.touched} entries read`);
  parts.push(`server ${response.took_ms.toFixed(1)} ms`);
  return `${what}: ${parts.join(" · ")}`;
}

// The long code the map places the query by: the query text's, or the example document's.
async function queryLongCode(collection, query) {
  if (query.document_id !== undefined) {
    const body = { ids: [query.document_id] };
    const found = await api("POST", `${collectionPath(collection)}/snippets`, body);
    return found.data.length ? found.data[0].long_code : null;
  }
  const hashed = await api("POST", "/v1/hash", { text: query.text });
  return hashed.data[0].long_code;
}

// The results on screen: the whole answer, shown PAGE at a time, each page with its snippets.
const PAGE = 20;
let shown = null; // {seq, collection, query, hits, next, snippets: []}

async function showPage() {
  const view = shown;
  const hits = view.hits.slice(view.next, view.next + PAGE);
  view.next += hits.length;
  const body = { ids: hits.map((hit) => hit.id) };
  if (view.query.text !== undefined) body.query = view.query.text;
  // Ask for the snippets first, then build the items while they are on their way.
  const pending = hits.length ? api("POST", `${collectionPath(view.collection)}/snippets`, body) : null;
  const items = hits.map(resultItem);
  $("results").append(...items);
  let snippets = [];
  if (pending) {
    try {
      snippets = (await pending).data;
    } catch (err) {
      showError($("search-error"), `Results found, but their text could not be read: ${err.message}`);
    }
  }
  if (view !== shown) return null;
  const words = view.query.text !== undefined ? view.query.text.match(/[^\W_]{2,}/gu) || [] : [];
  const byId = new Map(snippets.map((s) => [s.id, s]));
  for (const item of items) {
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
  view.snippets.push(...snippets);
  const rest = view.hits.length - view.next;
  const button = $("results-more");
  button.hidden = rest === 0;
  button.textContent = `Show ${Math.min(rest, PAGE)} more of ${rest}`;
  $("search-range").textContent = view.hits.length ? `Showing 1–${view.next} of ${view.hits.length}.` : "";
  return items;
}

// Run one search: `query` is {text} or {document_id}. Renders the first results with their snippets.
export async function search(query) {
  const collection = currentCollection();
  if (!collection) return;
  const seq = ++searchSeq;
  performance.clearMarks("search-start");
  performance.mark("search-start");
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
  results.replaceChildren();
  shown = { seq, collection, query, hits: response.data, next: 0, snippets: [] };
  const view = shown;
  await showPage();
  if (view !== shown) return;
  const summary = $("search-summary");
  summary.textContent = summaryText(response, query);
  summary.hidden = false;
  status.textContent = response.count ? "" : "No documents found.";
  results.dataset.state = "done";
  results.setAttribute("aria-busy", "false");
  performance.clearMarks("search-rendered");
  performance.mark("search-rendered");
  const event = {
    collection,
    query,
    results: view.snippets,
    longCode: () => queryLongCode(collection, query).catch(() => null),
    current: () => view === shown,
  };
  listeners.forEach((listener) => listener(event));
}

async function showMore() {
  if (!shown) return;
  const view = shown;
  const items = await showPage();
  if (items && view === shown) {
    items[0]?.querySelector(".more").focus(); // keyboard users land on the new results
    listeners.forEach((listener) => listener({ ...view, results: view.snippets, more: true }));
  }
}

// Fill the collection picker with the collections hashed by the loaded text bundle; enable the form.
export function loadCollections(collections, textBundleId) {
  const select = $("collection");
  const text = collections.filter((c) => !textBundleId || c.bundle_id === textBundleId);
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
}

export function initSearch() {
  $("results-more").addEventListener("click", showMore);
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
