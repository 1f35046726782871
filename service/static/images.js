// Image search: upload an image, see its autoencoder code and reconstruction, and the nearest images of
// an image collection (stored by sparse-code signature).

import { $, api, collectionPath, showError } from "./api.js";

let loaded = new Set();

function upload(file) {
  const form = new FormData();
  form.append("file", file);
  return form;
}

function imageResult(hit, metadata) {
  const item = document.createElement("li");
  item.className = "result";
  item.dataset.id = hit.id;
  const head = document.createElement("strong");
  head.className = "doc-id";
  head.textContent = hit.id;
  const numbers = document.createElement("p");
  numbers.className = "numbers";
  numbers.textContent = `Hamming distance ${hit.distance ?? "none"} · score ${hit.score.toFixed(4)}`;
  item.append(head, numbers);
  if (metadata) {
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = Object.entries(metadata)
      .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" · ");
    item.append(meta);
  }
  return item;
}

async function encodeAndSearch(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const status = $("upload-status");
  const error = $("upload-error");
  const results = $("image-results");
  showError(error, "");
  if (!file) {
    showError(error, "Choose an image file first.");
    return;
  }
  $("upload-preview").src = URL.createObjectURL(file);
  $("upload-preview-figure").hidden = false;
  results.replaceChildren();
  results.dataset.state = "searching";
  status.textContent = "Encoding…";
  const problems = [];
  if (loaded.has("images")) {
    try {
      const code = (await api("POST", "/v1/images/encode?reconstruct=true", upload(file))).data[0];
      $("upload-recon").src = `data:image/png;base64,${code.reconstruction_png}`;
      $("upload-recon-figure").hidden = false;
      $("upload-code").textContent = `Code: ${code.binary_code}`;
    } catch (err) {
      problems.push(err.message);
    }
  }
  const collection = $("image-collection").value;
  if (collection) {
    status.textContent = "Searching…";
    try {
      const path = `/v1/images/collections/${encodeURIComponent(collection)}/search?limit=10`;
      const found = await api("POST", path, upload(file));
      let metadata = new Map();
      if (found.data.length) {
        const body = { ids: found.data.map((hit) => hit.id) };
        const snippets = await api("POST", `${collectionPath(collection)}/snippets`, body);
        metadata = new Map(snippets.data.map((s) => [s.id, s.metadata]));
      }
      results.replaceChildren(...found.data.map((hit) => imageResult(hit, metadata.get(hit.id))));
      status.textContent = `${found.count} nearest images (server ${found.took_ms.toFixed(1)} ms).`;
    } catch (err) {
      problems.push(err.message);
      status.textContent = "";
    }
  } else {
    status.textContent = "No image collection chosen: encoded only.";
  }
  showError(error, problems.join(" — "));
  results.dataset.state = "done";
}

// `collections`: every collection; those coded by the loaded sparse bundle can be searched by image.
export function initImages(kinds, collections, sparseBundleId) {
  loaded = new Set(kinds);
  const select = $("image-collection");
  const usable = collections.filter((c) => sparseBundleId && c.bundle_id === sparseBundleId);
  select.replaceChildren(
    new Option("none (encode only)", ""),
    ...usable.map((c) => new Option(`${c.name} (${c.document_count} images)`, c.name)),
  );
  if (usable.length) select.value = usable[0].name;
  $("upload-form").addEventListener("submit", encodeAndSearch);
  if (!loaded.has("images") && !loaded.has("sparse")) {
    $("upload-status").textContent = "This server has neither the images nor the sparse model loaded.";
  }
}
