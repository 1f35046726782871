// Draw a digit: a pad for mouse, pen or finger; every recogniser's answer and probabilities as you
// draw, the image autoencoder's reconstruction, and the motor-program model's pen path animated.

import { $, api, showError } from "./api.js";

const INK_WIDTH = 18; // on the 280 px pad: about MNIST's stroke once the digit is scaled to 20 px
const GRID = 56; // the pixels sent: the pad downsampled 5x (the API crops, scales and centres them)
const RECOGNISERS = [
  { key: "finetuned", title: "Fine-tuned DBN", path: "/v1/digits/recognize?variant=finetuned" },
  { key: "generative", title: "Generative DBN", path: "/v1/digits/recognize?variant=generative" },
];

let loaded = new Set(); // model kinds the server loaded (from /v1/overview)
let inFlight = false;
let dirty = false;
let drawnSeq = 0; // bumps on every change of the drawing
let hasInk = false;
let animation = null;

function pad() {
  return $("pad");
}

function clearPad() {
  const canvas = pad();
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  clearPen();
  hasInk = false;
  drawnSeq++;
  $("answers").replaceChildren();
  $("recon-figure").hidden = true;
  $("draw-status").textContent = "Nothing drawn yet.";
  showError($("draw-error"), "");
  $("answers").dataset.state = "empty";
}

function clearPen() {
  if (animation) cancelAnimationFrame(animation);
  animation = null;
  const pen = $("pen");
  pen.getContext("2d").clearRect(0, 0, pen.width, pen.height);
}

function inkStyle(ctx) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = INK_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

// The drawing as GRID x GRID rows of ink values in [0, 1] (ink = 1), as /v1/digits takes them.
export function pixels() {
  const small = document.createElement("canvas");
  small.width = GRID;
  small.height = GRID;
  const ctx = small.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(pad(), 0, 0, GRID, GRID);
  const data = ctx.getImageData(0, 0, GRID, GRID).data;
  const rows = [];
  for (let r = 0; r < GRID; r++) {
    const row = new Array(GRID);
    for (let c = 0; c < GRID; c++) row[c] = Math.round((1 - data[4 * (r * GRID + c)] / 255) * 100) / 100;
    rows.push(row);
  }
  return rows;
}

function bars(probabilities, answer) {
  const list = document.createElement("ol");
  list.className = "bars";
  list.start = 0;
  probabilities.forEach((p, digit) => {
    const item = document.createElement("li");
    if (digit === answer) item.className = "best";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, p * 100)}%`;
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = `${digit}: ${(p * 100).toFixed(1)}%`;
    item.append(bar, label);
    list.append(item);
  });
  return list;
}

function answerBlock(key, title, digit, probabilities) {
  const block = document.createElement("div");
  block.className = "answer";
  block.dataset.recognizer = key;
  const heading = document.createElement("h3");
  heading.append(`${title}: `);
  const out = document.createElement("output");
  out.className = "digit";
  out.dataset.digit = String(digit);
  out.textContent = String(digit);
  heading.append(out);
  block.append(heading, bars(probabilities, digit));
  return block;
}

function unavailable(key, title, message) {
  const block = document.createElement("div");
  block.className = "answer unavailable";
  block.dataset.recognizer = key;
  block.textContent = `${title}: ${message}`;
  return block;
}

// Map the motor model's pen path (28 x 28, after the API's crop / scale / centring) back onto the pad,
// by redoing that normalisation on the pixels sent: bounding box to 20 px, centre of mass at (14, 14).
function normalisedToPad(rows) {
  let [r0, r1, c0, c1, mass, mr, mc] = [GRID, -1, GRID, -1, 0, 0, 0];
  rows.forEach((row, r) =>
    row.forEach((v, c) => {
      if (v < 0.2) return;
      r0 = Math.min(r0, r);
      r1 = Math.max(r1, r);
      c0 = Math.min(c0, c);
      c1 = Math.max(c1, c);
      mass += v;
      mr += v * r;
      mc += v * c;
    }),
  );
  if (mass === 0) return null;
  const scale = 20 / Math.max(r1 - r0 + 1, c1 - c0 + 1); // grid pixels -> normalised pixels
  const toPad = pad().width / GRID;
  const [comR, comC] = [mr / mass, mc / mass];
  return ([col, row]) => [((col - 14) / scale + comC + 0.5) * toPad, ((row - 14) / scale + comR + 0.5) * toPad];
}

function animatePen(trajectory, toPad) {
  clearPen();
  const pen = $("pen");
  const ctx = pen.getContext("2d");
  const points = trajectory.map(toPad);
  let i = 1;
  const step = () => {
    ctx.clearRect(0, 0, pen.width, pen.height);
    ctx.strokeStyle = "rgba(220, 30, 30, 0.85)";
    ctx.lineWidth = 4;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(...points[0]);
    for (let k = 1; k <= i; k++) ctx.lineTo(...points[k]);
    ctx.stroke();
    ctx.fillStyle = "#d21";
    ctx.beginPath();
    ctx.arc(...points[i], 6, 0, 2 * Math.PI);
    ctx.fill();
    i += 1;
    animation = i < points.length ? requestAnimationFrame(step) : null;
  };
  animation = requestAnimationFrame(step);
  pen.dataset.points = String(points.length);
}

async function recognise(finalStroke) {
  const seq = drawnSeq;
  const rows = pixels();
  const body = { pixels: rows };
  const calls = RECOGNISERS.map((r) => api("POST", r.path, body));
  const encode = loaded.has("images") ? api("POST", "/v1/images/encode?reconstruct=true", body) : null;
  // The motor model searches every class's program: only once a stroke ends, not while drawing.
  const trace = finalStroke && loaded.has("motor") ? api("POST", "/v1/digits/trace", body) : null;
  const settled = await Promise.allSettled(calls);
  if (seq !== drawnSeq) return;
  const blocks = settled.map((result, i) => {
    const { key, title } = RECOGNISERS[i];
    if (result.status === "rejected") return unavailable(key, title, result.reason.message);
    const prediction = result.value.data[0];
    return answerBlock(key, title, prediction.digit, prediction.probabilities);
  });
  const answers = $("answers");
  const motorBlock = answers.querySelector('[data-recognizer="motor"]');
  if (motorBlock && !finalStroke) blocks.push(motorBlock);
  answers.replaceChildren(...blocks);
  const failed = settled.every((r) => r.status === "rejected");
  showError($("draw-error"), failed ? settled[0].reason.message : "");
  $("draw-status").textContent = failed ? "" : finalStroke ? "Recognised." : "Recognising as you draw…";
  if (encode) {
    try {
      const code = (await encode).data[0];
      if (seq !== drawnSeq) return;
      $("recon").src = `data:image/png;base64,${code.reconstruction_png}`;
      $("recon-figure").hidden = false;
    } catch (err) {
      $("recon-figure").hidden = true;
    }
  }
  if (trace) {
    let block;
    try {
      const traced = (await trace).data[0];
      if (seq !== drawnSeq) return;
      block = answerBlock("motor", "Motor program", traced.digit, traced.probabilities);
      const toPad = normalisedToPad(rows);
      if (toPad) animatePen(traced.trajectory, toPad);
    } catch (err) {
      if (seq !== drawnSeq) return;
      block = unavailable("motor", "Motor program", err.message);
    }
    answers.append(block);
  }
  if (finalStroke && seq === drawnSeq) answers.dataset.state = "final";
}

// Ask again when the drawing changed while a request was out; one request at a time.
async function requestRecognition(finalStroke) {
  if (!hasInk) return;
  if (inFlight) {
    dirty = finalStroke ? true : dirty || "live";
    return;
  }
  inFlight = true;
  try {
    await recognise(finalStroke);
  } finally {
    inFlight = false;
  }
  if (dirty) {
    const final = dirty === true;
    dirty = false;
    requestRecognition(final);
  }
}

function initPad() {
  const canvas = pad();
  const ctx = canvas.getContext("2d");
  let drawing = false;
  let last = null;
  const point = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * canvas.width) / rect.width,
      ((event.clientY - rect.top) * canvas.height) / rect.height,
    ];
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    drawing = true;
    clearPen();
    last = point(event);
    inkStyle(ctx);
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...last);
    ctx.stroke();
    hasInk = true;
    drawnSeq++;
    $("answers").dataset.state = "drawing";
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    inkStyle(ctx);
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...next);
    ctx.stroke();
    last = next;
    drawnSeq++;
    requestRecognition(false);
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    requestRecognition(true);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

// "Draw an example": the motor model draws a new digit of the chosen class, stroke by stroke.
async function drawExample() {
  const digit = Number($("pad-example-digit").value);
  showError($("draw-error"), "");
  let rendered;
  try {
    rendered = await api("POST", "/v1/digits/render", { digit, seed: Math.floor(Math.random() * 1e6) });
  } catch (err) {
    showError($("draw-error"), err.message);
    return;
  }
  clearPad();
  const canvas = pad();
  const ctx = canvas.getContext("2d");
  const scale = canvas.width / 28;
  const points = rendered.trajectory.map(([col, row]) => [(col + 0.5) * scale, (row + 0.5) * scale]);
  inkStyle(ctx);
  ctx.beginPath();
  ctx.moveTo(...points[0]);
  for (const p of points.slice(1)) ctx.lineTo(...p);
  ctx.stroke();
  hasInk = true;
  drawnSeq++;
  $("answers").dataset.state = "drawing";
  requestRecognition(true);
}

export function initDraw(kinds) {
  loaded = new Set(kinds);
  initPad();
  clearPad();
  $("pad-clear").addEventListener("click", clearPad);
  $("pad-example").addEventListener("click", drawExample);
  if (!loaded.has("motor")) {
    $("pad-example").disabled = true;
    $("pad-example").title = "needs the motor-program model, which this server has not loaded";
  }
  if (!loaded.has("digits")) $("draw-status").textContent = "This server has no digits model loaded.";
}
