// Facial emotion in the browser with a fer-export ONNX model and onnxruntime-web (no build step).
//
// The model is `model.onnx` beside this page, `?model=URL`, or a file picked in the page. Its labels
// and input format come from its own metadata (../contract.mjs). The page only decodes the picture
// to gray pixels; resizing and normalisation run inside the graph.
//
// For scripts (the headless test): <body data-state> is loading | needs-model | ready | busy | error;
// #result carries data-seq (one more per classification), data-source, data-selection (JSON [x, y, side]
// in picture pixels, or null for the whole picture) and data-probs (JSON, in the order of data-labels).
import { readContract, toGray } from '../contract.mjs';

const ORT_DIR = new URL('../node_modules/onnxruntime-web/dist/', import.meta.url).href;
const $ = (id) => document.getElementById(id);
const VIEW_MAX = 360; // longest side of the picture on screen, CSS px
const MIN_DRAG = 6; // a drag shorter than this (screen px) is a click: back to the whole picture

let ort;
let model = null; // { name, session, labels }
let picture = null; // { name, gray, width, height, bitmap, scale }
let selection = null; // [x, y, side] in picture pixels, or null for the whole picture

function setState(state, message) {
  document.body.dataset.state = state;
  if (message !== undefined) $('status').textContent = message;
}

async function loadOrt() {
  try {
    ort = await import(`${ORT_DIR}ort.wasm.min.mjs`);
  } catch (err) {
    throw new Error('onnxruntime-web is not installed: run `npm ci --ignore-scripts` in examples/ ' +
      `and serve examples/ (${err.message})`);
  }
  ort.env.wasm.wasmPaths = ORT_DIR;
  // Threads need a cross-origin isolated page (COOP/COEP headers), which `python -m http.server` does not send.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
}

async function loadModel(bytes, name) {
  setState('busy', `Loading model ${name}…`);
  const contract = readContract(bytes, name);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  model = { name, session, labels: contract.labels };
  $('model-name').textContent = `${name} (${contract.labels.length} labels, ${contract.input} input` +
    `${contract.tta !== 'none' ? `, TTA ${contract.tta}` : ''})`;
  $('result').dataset.labels = JSON.stringify(contract.labels);
  document.body.dataset.model = name;
  setState('ready', `Model ready: ${name}. Pick a face crop or a photo.`);
  if (picture) await classifyPicture();
}

async function loadDefaultModel() {
  const url = new URLSearchParams(location.search).get('model') || 'model.onnx';
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    response = null;
  }
  if (!response || !response.ok) {
    $('model-name').textContent = `no ${url} here: pick a model exported with --with-preprocessing`;
    setState('needs-model', `No model at ${url}. Export one (see examples/README.md) or pick an .onnx file.`);
    return;
  }
  await loadModel(new Uint8Array(await response.arrayBuffer()), url.split('/').pop());
}

/** A picture file as gray pixels, upright, with no colour management (as OpenCV reads it). */
async function decode(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
    premultiplyAlpha: 'none' });
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  return { name: file.name, gray: toGray(rgba, width, height, 4), width, height, bitmap };
}

function cropGray({ gray, width }, [x, y, side]) {
  const out = new Uint8Array(side * side);
  for (let r = 0; r < side; r++) out.set(gray.subarray((y + r) * width + x, (y + r) * width + x + side), r * side);
  return out;
}

function drawView() {
  const view = $('view');
  const { bitmap, width, height } = picture;
  const scale = Math.min(1, VIEW_MAX / Math.max(width, height)) * (width < 120 && height < 120 ? 4 : 1);
  picture.scale = scale;
  view.dataset.scale = String(scale); // picture px -> canvas px, for scripts that drag on it
  view.width = Math.round(width * scale);
  view.height = Math.round(height * scale);
  const ctx = view.getContext('2d');
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(bitmap, 0, 0, view.width, view.height);
  if (selection) {
    const [x, y, side] = selection.map((v) => v * scale);
    ctx.lineWidth = 3;
    ctx.strokeStyle = '#ffcc00';
    ctx.strokeRect(x, y, side, side);
  }
}

function drawCrop(gray, width, height) {
  const canvas = $('crop');
  canvas.width = width;
  canvas.height = height;
  const img = new ImageData(width, height);
  for (let i = 0; i < gray.length; i++) img.data.set([gray[i], gray[i], gray[i], 255], i * 4);
  canvas.getContext('2d').putImageData(img, 0, 0);
}

function showProbs(probs, source, box) {
  const { labels } = model;
  const top = probs.indexOf(Math.max(...probs));
  $('emotion').textContent = `${labels[top]} ${(100 * probs[top]).toFixed(1)} %`;
  $('probs').replaceChildren(...labels.map((label, i) => {
    const row = document.createElement('tr');
    if (i === top) row.className = 'top';
    row.innerHTML = `<td class="label">${label}</td><td><div class="bar" style="width:${(100 * probs[i]).toFixed(1)}%">` +
      `</div></td><td class="value">${probs[i].toFixed(4)}</td>`;
    return row;
  }));
  const result = $('result');
  result.dataset.source = source;
  result.dataset.selection = JSON.stringify(box);
  result.dataset.probs = JSON.stringify(probs);
  result.dataset.seq = String(Number(result.dataset.seq) + 1);
}

async function classifyPicture() {
  if (!model) {
    setState('needs-model', 'Pick a model first.');
    return;
  }
  setState('busy', `Classifying ${picture.name}…`);
  const [gray, width, height] = selection
    ? [cropGray(picture, selection), selection[2], selection[2]]
    : [picture.gray, picture.width, picture.height];
  drawCrop(gray, width, height);
  const input = new ort.Tensor('uint8', gray, [1, 1, height, width]);
  const output = await model.session.run({ [model.session.inputNames[0]]: input });
  const what = selection ? `the ${width}x${height} square you selected` : `the whole ${width}x${height} picture`;
  showProbs(Array.from(output.probs.data), picture.name, selection);
  setState('ready', `${picture.name}: ${what}.`);
}

function pictureXY(event) {
  const rect = $('view').getBoundingClientRect();
  const k = $('view').width / rect.width / picture.scale;
  return [(event.clientX - rect.left) * k, (event.clientY - rect.top) * k];
}

/** Drag a square on the picture: its side is the longer side of the dragged box, clipped to the picture. */
function enableSelection() {
  const view = $('view');
  let start = null;
  const square = (event) => {
    const [x, y] = pictureXY(event);
    const side = Math.max(Math.abs(x - start[0]), Math.abs(y - start[1]));
    const left = x < start[0] ? start[0] - side : start[0];
    const topY = y < start[1] ? start[1] - side : start[1];
    const x0 = Math.max(0, Math.round(left));
    const y0 = Math.max(0, Math.round(topY));
    const s = Math.min(Math.round(side), picture.width - x0, picture.height - y0);
    return [x0, y0, s];
  };
  view.addEventListener('pointerdown', (event) => {
    if (!picture) return;
    start = pictureXY(event);
    view.setPointerCapture(event.pointerId);
  });
  view.addEventListener('pointermove', (event) => {
    if (!start) return;
    selection = square(event);
    drawView();
  });
  view.addEventListener('pointerup', async (event) => {
    if (!start) return;
    const box = square(event);
    start = null;
    selection = box[2] * picture.scale >= MIN_DRAG && box[2] >= 2 ? box : null;
    drawView();
    await run(classifyPicture);
  });
}

async function run(task) {
  try {
    await task();
  } catch (err) {
    console.error(err);
    setState('error', `Error: ${err.message}`);
  }
}

$('model-file').addEventListener('change', (event) => run(async () => {
  const file = event.target.files[0];
  if (file) await loadModel(new Uint8Array(await file.arrayBuffer()), file.name);
}));

$('image').addEventListener('change', (event) => run(async () => {
  const file = event.target.files[0];
  if (!file) return;
  picture = await decode(file);
  selection = null;
  drawView();
  await classifyPicture();
}));

enableSelection();
run(async () => {
  await loadOrt();
  await loadDefaultModel();
});
