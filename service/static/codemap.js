// The code-space map: a sample of a collection on the principal plane of its long codes; the query
// (a star) and its results (rings) placed by the same projection; hover shows a document.

import { $, api, collectionPath, showError } from "./api.js";
import { currentCollection, onSearched, search } from "./search.js";

const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a",
];
const OTHER = "#c7c7c7";
const MARGIN = 16;

let state = null; // {collection, points, mean, components, colours, query, results}
const snippetCache = new Map();

function signsOfHex(hex, bits) {
  const signs = new Float32Array(bits);
  for (let i = 0; i < bits; i++) {
    const byte = parseInt(hex.substr((i >> 3) * 2, 2), 16);
    signs[i] = (byte >> (7 - (i & 7))) & 1 ? 1 : -1;
  }
  return signs;
}

export function project(hex) {
  const { mean, components } = state;
  const signs = signsOfHex(hex, mean.length);
  return components.map((row) => row.reduce((sum, w, i) => sum + w * (signs[i] - mean[i]), 0));
}

function colourTable(points) {
  const counts = new Map();
  for (const p of points) if (p.value != null) counts.set(String(p.value), (counts.get(String(p.value)) || 0) + 1);
  const ordered = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const colours = new Map(ordered.slice(0, PALETTE.length).map(([value], i) => [value, PALETTE[i]]));
  return { colours, ordered };
}

function layout(canvas) {
  const xs = state.points.map((p) => p.x).concat(state.extra.map((p) => p[0]));
  const ys = state.points.map((p) => p.y).concat(state.extra.map((p) => p[1]));
  const [x0, x1] = [Math.min(...xs, 0), Math.max(...xs, 0)];
  const [y0, y1] = [Math.min(...ys, 0), Math.max(...ys, 0)];
  const w = canvas.width - 2 * MARGIN;
  const h = canvas.height - 2 * MARGIN;
  const scale = Math.min(w / (x1 - x0 || 1), h / (y1 - y0 || 1));
  return ([x, y]) => [
    MARGIN + (x - x0) * scale + (w - (x1 - x0) * scale) / 2,
    MARGIN + (y1 - y) * scale + (h - (y1 - y0) * scale) / 2,
  ];
}

function star(ctx, x, y, r) {
  ctx.beginPath();
  for (let i = 0; i < 10; i++) {
    const angle = (Math.PI / 5) * i - Math.PI / 2;
    const radius = i % 2 ? r / 2.5 : r;
    ctx.lineTo(x + radius * Math.cos(angle), y + radius * Math.sin(angle));
  }
  ctx.closePath();
}

function draw() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state) return;
  state.extra = [state.query, ...state.results.map((r) => r.xy)].filter(Boolean);
  const toCanvas = layout(canvas);
  state.toCanvas = toCanvas;
  for (const p of state.points) {
    const [x, y] = toCanvas([p.x, p.y]);
    p.cx = x;
    p.cy = y;
    ctx.fillStyle = state.colours.get(String(p.value)) || OTHER;
    ctx.fillRect(x - 2, y - 2, 4, 4);
  }
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#000";
  for (const r of state.results) {
    const [x, y] = toCanvas(r.xy);
    ctx.beginPath();
    ctx.arc(x, y, 6, 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (state.query) {
    const [x, y] = toCanvas(state.query);
    star(ctx, x, y, 10);
    ctx.fillStyle = "#000";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
}

function legend(field, ordered) {
  const list = $("map-legend");
  const items = ordered.slice(0, PALETTE.length).map(([value, count], i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i];
    item.append(swatch, `${value} (${count})`);
    return item;
  });
  if (ordered.length > PALETTE.length) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = OTHER;
    item.append(swatch, field ? "other values, or none" : "no colour field");
    items.push(item);
  }
  list.replaceChildren(...items);
}

async function loadMap() {
  const collection = currentCollection();
  if (!collection) return;
  const field = $("map-field").value;
  const sample = $("map-sample").value || "1500";
  const status = $("map-status");
  status.textContent = "Placing documents…";
  showError($("map-error"), "");
  const params = new URLSearchParams({ sample });
  if (field) params.set("field", field);
  let answer;
  try {
    answer = await api("GET", `${collectionPath(collection)}/map?${params}`);
  } catch (err) {
    status.textContent = "";
    showError($("map-error"), err.message);
    return;
  }
  const { colours, ordered } = colourTable(answer.data);
  state = {
    collection,
    points: answer.data,
    mean: answer.mean,
    components: answer.components,
    colours,
    query: null,
    results: [],
    extra: [],
  };
  const select = $("map-field");
  const keep = answer.field || "";
  select.replaceChildren(new Option("none", ""), ...answer.fields.map((f) => new Option(f, f)));
  select.value = keep;
  legend(answer.field, ordered);
  draw();
  const canvas = $("map");
  canvas.dataset.points = String(answer.count);
  canvas.setAttribute(
    "aria-label",
    `Map of the code space: ${answer.count} of ${answer.total} documents` +
      (answer.field ? `, coloured by ${answer.field}` : ""),
  );
  status.textContent = `${answer.count} of ${answer.total} documents shown.`;
}

function nearest(event) {
  if (!state?.toCanvas) return null;
  const canvas = $("map");
  const rect = canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
  const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
  let best = null;
  let bestDistance = 64; // within 8 canvas pixels
  for (const p of state.points) {
    const d = (p.cx - x) ** 2 + (p.cy - y) ** 2;
    if (d < bestDistance) {
      best = p;
      bestDistance = d;
    }
  }
  return best && { point: best, x: event.clientX - rect.left, y: event.clientY - rect.top };
}

async function hover(event) {
  const tip = $("map-tip");
  const found = nearest(event);
  if (!found) {
    tip.hidden = true;
    return;
  }
  const { point } = found;
  tip.style.left = `${Math.min(found.x + 12, $("map").clientWidth - 220)}px`;
  tip.style.top = `${found.y + 12}px`;
  tip.hidden = false;
  tip.dataset.id = point.id;
  const title = `${point.id}${point.value != null ? ` · ${point.value}` : ""}`;
  tip.textContent = title;
  const key = `${state.collection}\u0000${point.id}`;
  if (!snippetCache.has(key)) {
    const body = { ids: [point.id], chars: 160 };
    snippetCache.set(key, api("POST", `${collectionPath(state.collection)}/snippets`, body).catch(() => null));
  }
  const answer = await snippetCache.get(key);
  if (tip.dataset.id !== point.id || !answer?.data.length) return;
  const text = document.createElement("p");
  text.textContent = answer.data[0].snippet;
  tip.replaceChildren(title, text, "Click: more like this");
}

// Where each shown document is, in CSS pixels from the canvas's top left (for tests and tools).
export function pointsOnCanvas() {
  if (!state?.toCanvas) return [];
  const canvas = $("map");
  const k = canvas.clientWidth / canvas.width;
  return state.points.map((p) => ({ id: p.id, x: p.cx * k, y: p.cy * k }));
}

export function initMap() {
  $("map-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadMap();
  });
  $("map-field").addEventListener("change", () => state && loadMap());
  const canvas = $("map");
  canvas.addEventListener("mousemove", hover);
  canvas.addEventListener("mouseleave", () => ($("map-tip").hidden = true));
  canvas.addEventListener("click", (event) => {
    const found = nearest(event);
    if (found) search({ document_id: found.point.id });
  });
  $("collection").addEventListener("change", () => {
    state = null;
    draw();
    $("map-legend").replaceChildren();
    $("map-status").textContent = "";
  });
  onSearched(async (event) => {
    if (!state || state.collection !== event.collection) return;
    state.results = event.results.map((r) => ({ id: r.id, xy: project(r.long_code) }));
    if (!event.more) {
      state.query = null;
      const longCode = await event.longCode();
      if (!event.current() || !state || state.collection !== event.collection) return;
      state.query = longCode ? project(longCode) : null;
      $("map").dataset.query = state.query ? "shown" : "none";
    }
    draw();
  });
}
