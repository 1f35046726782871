// The page's start: the API key field, the loaded models and the collections, then each section.

import { $, api, apiKey, onUnauthorized, setApiKey, showError } from "./api.js";
import { initMap } from "./codemap.js";
import { initDraw } from "./draw.js";
import { initImages } from "./images.js";
import { initSearch, loadCollections, loadDefaults } from "./search.js";

function askForKey(message) {
  const panel = $("key-panel");
  panel.open = true;
  $("key-status").textContent = message;
  $("api-key").focus();
}

function initKey(reload) {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("api-key").value.trim());
    $("key-status").textContent = apiKey() ? "Key set for this tab." : "No key set.";
    reload();
  });
  $("key-forget").addEventListener("click", () => {
    setApiKey("");
    $("api-key").value = "";
    $("key-status").textContent = "Key forgotten.";
  });
  onUnauthorized((error) => askForKey(error.message));
}

let booted = false;

async function boot() {
  let models = [];
  try {
    models = (await api("GET", "/v1/models")).data;
  } catch (err) {
    showError($("search-error"), err.message);
  }
  const bundle = (kind) => models.find((m) => m.kind === kind)?.bundle_id ?? null;
  let collections = [];
  try {
    collections = await loadCollections(bundle("text"));
    showError($("search-error"), "");
  } catch (err) {
    $("collection").replaceChildren(new Option("unavailable", ""));
    showError($("search-error"), err.message);
    return;
  }
  performance.mark("interactive");
  document.body.dataset.ready = "true";
  if (booted) return;
  booted = true;
  const kinds = models.map((m) => m.kind);
  initDraw(kinds);
  initImages(kinds, collections, bundle("sparse"));
  loadDefaults().catch(() => {});
}

initKey(boot);
initSearch();
initMap();
boot();
