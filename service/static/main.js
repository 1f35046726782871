// The page's start: the API key field, the loaded models and the collections, then each section.

import { $, api, apiKey, onUnauthorized, setApiKey, showError } from "./api.js";
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
  let overview;
  try {
    overview = await api("GET", "/v1/overview");
    showError($("search-error"), "");
  } catch (err) {
    $("collection").replaceChildren(new Option("unavailable", ""));
    showError($("search-error"), err.message);
    return;
  }
  const { models, collections } = overview;
  loadCollections(collections, models.text);
  performance.mark("interactive"); // searching works from here on
  if (booted) return;
  booted = true;
  // The other sections' code loads after the search box is usable; data-ready says all of it is.
  const [{ initMap }, { initDraw }, { initImages }] = await Promise.all([
    import("./codemap.js"),
    import("./draw.js"),
    import("./images.js"),
  ]);
  initMap();
  const kinds = Object.keys(models);
  initDraw(kinds);
  initImages(kinds, collections, models.sparse);
  document.body.dataset.ready = "true";
  loadDefaults().catch(() => {});
}

initKey(boot);
initSearch();
boot();
