// Facial emotion in the browser: YuNet and a fer-export ONNX model in onnxruntime-web (no build step).
//
// The model is `model.onnx` beside this page, `?model=URL`, or a file picked in the page; YuNet is
// `yunet.onnx` beside it, `?yunet=URL`, or a picked file (serve.mjs serves the one fer-export ships).
// The model's labels, input format and face framing come from its own metadata (../contract.mjs).
// Faces are found and framed by ../pipeline.mjs, the code the Node.js program runs too.
//
// Backend: WebGPU where the browser has an adapter and can run the model (`?backend=wasm` forbids it),
// else WebAssembly with SIMD, on several threads when the page is cross-origin isolated (serve.mjs
// sends the headers). The page says which one each model runs on.
//
// For scripts (web/headless.mjs): <body data-state> is loading | needs-model | ready | busy | error,
// <body data-backend> JSON { name, threads, isolated, note, yunet, classifier } (the backend each model
// runs on: webgpu | wasm), <body data-camera> off | starting | on | error.
// #result carries data-seq (one more per classified picture, square or face chosen), data-mode
// (faces | whole | square), data-source, data-labels, data-faces (JSON: every face of the picture with
// box, score and probs), data-selected (index of the face shown, or -1), data-selection (JSON
// [x, y, side] or null) and data-probs (JSON, the probabilities shown). In the camera mode #fps
// carries data-fps, data-frames (frames classified) and data-faces (the last frame's, smoothed).
import { readContract } from '../contract.mjs';
import { DEFAULTS, grayOf } from '../faces.mjs';
import { argmax, checkYunet, classifyCrops, facesInPicture } from '../pipeline.mjs';
import { FaceTracker } from './track.mjs';

const ORT_DIR = new URL('../node_modules/onnxruntime-web/dist/', import.meta.url).href;
const $ = (id) => document.getElementById(id);
const VIEW_MAX = 660; // longest side of the picture on screen, CSS px
const MIN_DRAG = 6; // a drag shorter than this (screen px) is a click
const PALETTE = ['#d1495b', '#66a182', '#8d6cab', '#edae49', '#00798c', '#3e5c9a', '#e36414'];
const params = new URLSearchParams(location.search);

let ort;
let backend = null; // see loadOrt
const models = { classifier: null, yunet: null, contract: null, name: '', yunetName: '' };
let picture = null; // { name, image, gray, bitmap, width, height, scale }
let faces = []; // the picture's faces, with probs and crops
let selection = null; // [x, y, side] dragged, in picture pixels
let selected = -1;
const camera = { stream: null, running: false, tracker: null, times: [], frames: 0 };

function setState(state, message) {
  document.body.dataset.state = state;
  if (message !== undefined) $('status').textContent = message;
}

// ---- onnxruntime-web and the two models -------------------------------------------------------

async function webgpuAdapter() {
  if (params.get('backend') === 'wasm' || !navigator.gpu) return null;
  try {
    return await navigator.gpu.requestAdapter();
  } catch {
    return null;
  }
}

async function loadOrt() {
  const adapter = await webgpuAdapter();
  const isolated = self.crossOriginIsolated === true;
  const bundle = adapter ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs';
  try {
    ort = await import(`${ORT_DIR}${bundle}`);
  } catch (err) {
    throw new Error('onnxruntime-web is not installed: run `npm ci --ignore-scripts` in examples/ ' +
      `and serve examples/ (${err.message})`);
  }
  ort.env.wasm.wasmPaths = ORT_DIR;
  // WebAssembly threads need SharedArrayBuffer, which only a cross-origin isolated page has.
  const threads = isolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  ort.env.wasm.numThreads = threads;
  const note = adapter ? '' : (navigator.gpu ? 'no WebGPU adapter' : 'no WebGPU in this browser');
  // name: the best backend this browser offers; yunet, classifier: the one each model runs on
  backend = { name: adapter ? 'webgpu' : 'wasm', threads, isolated, note, yunet: null, classifier: null };
  showBackend();
}

function showBackend() {
  const wasm = `WebAssembly SIMD, ${backend.threads} thread${backend.threads > 1 ? 's' : ''}` +
    (backend.isolated ? '' : ' (page not cross-origin isolated: serve it with examples/serve.mjs for threads)');
  const ran = [['YuNet', backend.yunet], ['the model', backend.classifier]].filter(([, ep]) => ep);
  const gpu = ran.filter(([, ep]) => ep === 'webgpu').map(([n]) => n);
  const cpu = ran.filter(([, ep]) => ep !== 'webgpu').map(([n]) => n);
  const text = !gpu.length ? wasm
    : !cpu.length ? `WebGPU (${wasm} for the operators it lacks)`
      : `${gpu.join(' and ')} on WebGPU; ${cpu.join(' and ')} on ${wasm}`;
  $('backend').textContent = `onnxruntime-web: ${text}${backend.note ? `; ${backend.note}` : ''}`;
  document.body.dataset.backend = JSON.stringify(backend);
}

/**
 * A session for `bytes` on the best backend that runs it: WebGPU where there is an adapter, tried on
 * `probe` (feeds); WebGPU may accept a model and fail on its first run (onnxruntime-web 1.30 has no
 * antialiased Resize, which the classifier's preprocessing uses), so a failure of either falls back
 * to WebAssembly. Returns [session, 'webgpu' | 'wasm'].
 */
async function createSession(bytes, name, probe) {
  if (backend.name === 'webgpu') {
    let session = null;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu', 'wasm'] });
      await session.run(probe(session));
      return [session, 'webgpu'];
    } catch (err) {
      await session?.release();
      const reason = err.message.split('Status Message: ').pop().split('\n')[0];
      backend.note = [backend.note, `WebGPU cannot run ${name} (${reason})`].filter(Boolean).join('; ');
    }
  }
  return [await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] }), 'wasm'];
}

async function loadModel(bytes, name) {
  setState('busy', `Loading model ${name}…`);
  const contract = readContract(bytes, name);
  const probe = (session) => ({ [session.inputNames[0]]: new ort.Tensor('uint8', new Uint8Array(48 * 48), [1, 1, 48, 48]) });
  [models.classifier, backend.classifier] = await createSession(bytes, name, probe);
  showBackend();
  models.contract = contract;
  models.name = name;
  const framing = contract.spec.framing ? 'framed faces' : 'a square around each face';
  $('model-name').textContent = `${name} (${contract.labels.length} labels, ${contract.input} input, ${framing}` +
    `${contract.tta !== 'none' ? `, TTA ${contract.tta}` : ''})`;
  $('result').dataset.labels = JSON.stringify(contract.labels);
  document.body.dataset.model = name;
  await ready();
}

async function loadYunet(bytes, name) {
  setState('busy', `Loading YuNet ${name}…`);
  const probe = (session) => ({ [session.inputNames[0]]: new ort.Tensor('float32', new Float32Array(3 * 32 * 32), [1, 3, 32, 32]) });
  const [session, ep] = await createSession(bytes, name, probe);
  models.yunet = checkYunet(session, name);
  backend.yunet = ep;
  showBackend();
  models.yunetName = name;
  $('yunet-name').textContent = name;
  document.body.dataset.yunet = name;
  await ready();
}

async function ready() {
  $('camera-start').disabled = !(models.classifier && models.yunet) || camera.running;
  if (!models.classifier) {
    setState('needs-model', 'Pick a model exported with its preprocessing (see examples/README.md).');
    return;
  }
  if (!models.yunet && $('detect').checked) {
    setState('needs-model', 'Pick YuNet\'s .onnx file to find faces, or untick "Find faces".');
    return;
  }
  setState('ready', `Ready: ${models.name}. Pick a photo or start the camera.`);
  if (picture) await classifyPicture();
}

async function fetchBytes(url) {
  try {
    const response = await fetch(url);
    return response.ok ? new Uint8Array(await response.arrayBuffer()) : null;
  } catch {
    return null;
  }
}

async function loadDefaults() {
  const modelUrl = params.get('model') || 'model.onnx';
  const yunetUrl = params.get('yunet') || 'yunet.onnx';
  const [modelBytes, yunetBytes] = await Promise.all([fetchBytes(modelUrl), fetchBytes(yunetUrl)]);
  if (yunetBytes) await loadYunet(yunetBytes, yunetUrl.split('/').pop());
  else $('yunet-name').textContent = `no ${yunetUrl} here: pick face_detection_yunet_*.onnx`;
  if (modelBytes) await loadModel(modelBytes, modelUrl.split('/').pop());
  else $('model-name').textContent = `no ${modelUrl} here: pick a model exported with its preprocessing`;
  await ready();
}

// ---- pictures --------------------------------------------------------------------------------------

/** A picture file's pixels, upright, with no colour management (as OpenCV reads it). */
async function decode(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
    premultiplyAlpha: 'none' });
  const { width, height } = bitmap;
  const ctx = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const image = { data: ctx.getImageData(0, 0, width, height).data, width, height, channels: 4 };
  return { name: file.name, image, gray: grayOf(image), bitmap, width, height };
}

function viewScale(width, height) {
  return Math.min(1, VIEW_MAX / Math.max(width, height)) * (width < 120 && height < 120 ? 4 : 1);
}

function labelText(face, probs = face.probs) {
  const top = argmax(probs);
  return [models.contract.labels[top], `${models.contract.labels[top]} ${Math.round(100 * probs[top])}%`, top];
}

/** Boxes and labels over the picture (or camera frame) on the view canvas, numbered as in the side panel. */
function drawLabels(ctx, list, scale, highlight = -1) {
  const font = 13;
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  const boxes = list.map((face, i) => {
    const [, label, top] = labelText(face, face.smoothed ?? face.probs);
    const box = [face.x * scale, face.y * scale, face.w * scale, face.h * scale];
    const colour = PALETTE[top % PALETTE.length];
    if (i === highlight) { // the face shown in the side panel: a white frame around its box
      ctx.lineWidth = 7;
      ctx.strokeStyle = '#fff';
      ctx.strokeRect(...box);
    }
    ctx.lineWidth = 3;
    ctx.strokeStyle = colour;
    ctx.strokeRect(...box);
    return { box, colour, text: `${(face.track ?? i) + 1} ${label}`, i };
  });
  // labels after every box, the highlighted one last, so that no box covers a label
  boxes.sort((a, b) => (a.i === highlight) - (b.i === highlight));
  for (const { box: [x, y, , h], colour, text } of boxes) {
    const tw = ctx.measureText(text).width + 8;
    const ty = y - font - 6 >= 0 ? y - font - 6 : y + h + 2;
    ctx.fillStyle = colour;
    ctx.fillRect(x - 1, ty, tw, font + 5);
    ctx.fillStyle = '#fff';
    ctx.fillText(text, x + 3, ty + 3);
  }
}

function drawView() {
  const view = $('view');
  const { bitmap, width, height } = picture;
  const scale = viewScale(width, height);
  picture.scale = scale;
  view.dataset.scale = String(scale); // picture px -> canvas px, for scripts that click or drag on it
  view.width = Math.round(width * scale);
  view.height = Math.round(height * scale);
  const ctx = view.getContext('2d');
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(bitmap, 0, 0, view.width, view.height);
  if (faces.length && !faces[0].whole) drawLabels(ctx, faces, scale, selected);
  if (selection) {
    const [x, y, side] = selection.map((v) => v * scale);
    ctx.lineWidth = 3;
    ctx.strokeStyle = '#ffcc00';
    ctx.strokeRect(x, y, side, side);
  }
}

function drawCrops(crops, captions) {
  $('crops').replaceChildren(...crops.map(({ data, width, height }, i) => {
    const figure = document.createElement('figure');
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const img = new ImageData(width, height);
    for (let k = 0; k < data.length; k++) img.data.set([data[k], data[k], data[k], 255], k * 4);
    canvas.getContext('2d').putImageData(img, 0, 0);
    const caption = document.createElement('figcaption');
    caption.textContent = captions[i];
    figure.append(canvas, caption);
    return figure;
  }));
}

function showProbs(probs, heading) {
  const { labels } = models.contract;
  const top = argmax(probs);
  $('emotion').textContent = `${heading}${labels[top]} ${(100 * probs[top]).toFixed(1)} %`;
  $('probs').replaceChildren(...labels.map((label, i) => {
    const row = document.createElement('tr');
    if (i === top) row.className = 'top';
    row.innerHTML = `<td class="label">${label}</td><td><div class="bar" style="width:${(100 * probs[i]).toFixed(1)}%">` +
      `</div></td><td class="value">${probs[i].toFixed(4)}</td>`;
    return row;
  }));
  $('result').dataset.probs = JSON.stringify(probs);
}

function clearResult(text) {
  $('emotion').textContent = text;
  $('probs').replaceChildren();
  $('crops').replaceChildren();
  $('result').dataset.probs = 'null';
}

/** The face `i` (or the dragged square, or the whole picture) in the side panel. */
function showSelected() {
  const result = $('result');
  result.dataset.selected = String(selected);
  result.dataset.selection = JSON.stringify(selection);
  if (selected >= 0) {
    const face = faces[selected];
    const views = face.crops.length > 1 ? [1, 1 - DEFAULTS.cropSpread, 1 + DEFAULTS.cropSpread] : [1];
    showProbs(face.probs, face.whole ? '' : `Face ${selected + 1}: `);
    drawCrops(face.crops, face.crops.map((c, i) => (views.length > 1 ? `×${views[i].toFixed(2)}, ` : '') + `${c.width}×${c.height}`));
    $('crops-caption').textContent = face.crops.length > 1
      ? 'The three views the model saw (the framed face, 22 % tighter and wider; their probabilities averaged):'
      : 'The gray crop the model saw (resized and normalised inside the graph):';
  } else if (!selection) {
    clearResult(faces.length ? 'Click a face' : 'No face found');
  }
  drawView();
}

function bump() {
  const result = $('result');
  result.dataset.seq = String(Number(result.dataset.seq) + 1);
}

async function classifyPicture() {
  if (!models.classifier) return;
  const detect = $('detect').checked;
  if (detect && !models.yunet) return;
  setState('busy', `Classifying ${picture.name}…`);
  const result = $('result');
  result.dataset.source = picture.name;
  selection = null;
  const t0 = performance.now();
  if (detect) {
    faces = await facesInPicture(ort, models, picture.image, { still: true, keepCrops: true });
    result.dataset.mode = faces.length === 1 && faces[0].whole ? 'whole' : 'faces';
  } else {
    const crop = { data: picture.gray, width: picture.width, height: picture.height };
    const [probs] = await classifyCrops(ort, models.classifier, [crop]);
    faces = [{ x: 0, y: 0, w: picture.width, h: picture.height, score: null, whole: true, probs, crops: [crop] }];
    result.dataset.mode = 'whole';
  }
  const ms = performance.now() - t0;
  result.dataset.ms = ms.toFixed(1);
  result.dataset.faces = JSON.stringify(faces.map(({ crops, ...f }) => f));
  selected = faces.length === 1 ? 0 : -1;
  showSelected();
  bump();
  const what = result.dataset.mode === 'whole' ? `the whole ${picture.width}×${picture.height} picture`
    : `${faces.length} face${faces.length === 1 ? '' : 's'}${faces.length ? ' (click one for details)' : ''}`;
  setState('ready', `${picture.name}: ${what}.`);
}

async function classifySquare(box) {
  const [x, y, side] = box;
  const data = new Uint8Array(side * side);
  for (let r = 0; r < side; r++) data.set(picture.gray.subarray((y + r) * picture.width + x, (y + r) * picture.width + x + side), r * side);
  const crop = { data, width: side, height: side };
  const [probs] = await classifyCrops(ort, models.classifier, [crop]);
  selection = box;
  selected = -1;
  $('result').dataset.mode = 'square';
  showSelected();
  showProbs(probs, 'Square: ');
  drawCrops([crop], [`${side}×${side}`]);
  $('crops-caption').textContent = 'The square you dragged, as the model received it:';
  bump();
  setState('ready', `${picture.name}: the ${side}×${side} square you selected.`);
}

function pictureXY(event) {
  const rect = $('view').getBoundingClientRect();
  const k = $('view').width / rect.width / picture.scale;
  return [(event.clientX - rect.left) * k, (event.clientY - rect.top) * k];
}

/** A click picks the face under it (the smallest box); a drag classifies the square dragged. */
function enablePointer() {
  const view = $('view');
  let start = null;
  const square = (event) => {
    const [x, y] = pictureXY(event);
    const side = Math.max(Math.abs(x - start[0]), Math.abs(y - start[1]));
    const x0 = Math.max(0, Math.round(x < start[0] ? start[0] - side : start[0]));
    const y0 = Math.max(0, Math.round(y < start[1] ? start[1] - side : start[1]));
    return [x0, y0, Math.min(Math.round(side), picture.width - x0, picture.height - y0)];
  };
  view.addEventListener('pointerdown', (event) => {
    if (!picture || camera.running || !models.classifier) return;
    start = pictureXY(event);
    view.setPointerCapture(event.pointerId);
  });
  view.addEventListener('pointermove', (event) => {
    if (!start) return;
    const box = square(event);
    if (box[2] * picture.scale >= MIN_DRAG) {
      selection = box;
      drawView();
    }
  });
  view.addEventListener('pointerup', (event) => run(async () => {
    if (!start) return;
    const box = square(event);
    const [px, py] = start;
    start = null;
    if (box[2] * picture.scale >= MIN_DRAG && box[2] >= 2) {
      await classifySquare(box);
      return;
    }
    selection = null;
    const hits = faces.map((f, i) => [f, i]).filter(([f]) => !f.whole && px >= f.x && px < f.x + f.w && py >= f.y && py < f.y + f.h);
    hits.sort((a, b) => a[0].w * a[0].h - b[0].w * b[0].h);
    selected = hits.length ? hits[0][1] : (faces.length === 1 ? 0 : -1);
    showSelected();
    bump();
  }));
}

// ---- camera ------------------------------------------------------------------------------------------

function nextVideoFrame(video) {
  return new Promise((done) => {
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => done());
    else requestAnimationFrame(() => done());
  });
}

/** Frames per second over the last two seconds of classified frames. */
function frameRate(now) {
  camera.times.push(now);
  while (camera.times.length > 2 && now - camera.times[0] > 2000) camera.times.shift();
  const n = camera.times.length;
  return n > 1 ? (1000 * (n - 1)) / (now - camera.times[0]) : 0;
}

async function cameraLoop() {
  const video = $('video');
  const view = $('view');
  const detSize = Number($('camera-size').value);
  let grab = null;
  while (camera.running) {
    await nextVideoFrame(video);
    if (!camera.running) break;
    const { videoWidth: width, videoHeight: height } = video;
    if (!width || !height) continue;
    if (!grab || grab.canvas.width !== width || grab.canvas.height !== height) {
      grab = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true });
      const scale = Math.min(1, VIEW_MAX / Math.max(width, height));
      view.width = Math.round(width * scale);
      view.height = Math.round(height * scale);
      view.dataset.scale = String(scale);
    }
    grab.drawImage(video, 0, 0);
    const image = { data: grab.getImageData(0, 0, width, height).data, width, height, channels: 4 };
    // one view per face, as fer-batch classifies video frames, at the reduced detection size
    const found = await facesInPicture(ort, models, image, { still: false, detSize, keepCrops: true });
    const tracked = camera.tracker.update(found);
    camera.frames += 1;
    const fps = frameRate(performance.now());
    const ctx = view.getContext('2d');
    ctx.drawImage(grab.canvas, 0, 0, view.width, view.height);
    drawLabels(ctx, tracked, Number(view.dataset.scale));
    const largest = tracked.reduce((a, f) => (!a || f.w * f.h > a.w * a.h ? f : a), null);
    if (largest) {
      showProbs(largest.smoothed, `Face ${largest.track + 1}, smoothed: `);
      drawCrops(largest.crops, [`${largest.crops[0].width}×${largest.crops[0].height}`]);
      $('crops-caption').textContent = 'The largest face: the crop the model saw in this frame (one view, as for video):';
    }
    const el = $('fps');
    el.textContent = `${fps.toFixed(1)} frames/s, ${tracked.length} face${tracked.length === 1 ? '' : 's'}`;
    el.dataset.fps = fps.toFixed(2);
    el.dataset.frames = String(camera.frames);
    el.dataset.faces = JSON.stringify(tracked.map((f) => ({ x: f.x, y: f.y, w: f.w, h: f.h, track: f.track,
      emotion: models.contract.labels[argmax(f.smoothed)], probs: f.smoothed })));
  }
}

async function startCamera() {
  document.body.dataset.camera = 'starting';
  camera.stream = await navigator.mediaDevices.getUserMedia({ audio: false,
    video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
  const video = $('video');
  video.srcObject = camera.stream;
  await video.play();
  Object.assign(camera, { running: true, tracker: new FaceTracker(), times: [], frames: 0 });
  $('camera-start').disabled = true;
  $('camera-stop').disabled = false;
  $('camera-size').disabled = true;
  document.body.dataset.camera = 'on';
  setState('ready', 'Camera on: its frames are classified here and go nowhere else.');
  cameraLoop().catch((err) => {
    stopCamera();
    document.body.dataset.camera = 'error';
    setState('error', `Error: ${err.message}`);
  });
}

function stopCamera() {
  camera.running = false;
  camera.stream?.getTracks().forEach((t) => t.stop());
  camera.stream = null;
  $('camera-start').disabled = !(models.classifier && models.yunet);
  $('camera-stop').disabled = true;
  $('camera-size').disabled = false;
  if (document.body.dataset.camera !== 'error') document.body.dataset.camera = 'off';
}

// ---- wiring ------------------------------------------------------------------------------------------

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

$('yunet-file').addEventListener('change', (event) => run(async () => {
  const file = event.target.files[0];
  if (file) await loadYunet(new Uint8Array(await file.arrayBuffer()), file.name);
}));

$('image').addEventListener('change', (event) => run(async () => {
  const file = event.target.files[0];
  if (!file) return;
  if (camera.running) stopCamera();
  picture = await decode(file);
  faces = [];
  selection = null;
  selected = -1;
  drawView();
  await ready();
}));

$('detect').addEventListener('change', () => run(ready));
$('camera-start').addEventListener('click', () => run(async () => {
  try {
    await startCamera();
  } catch (err) {
    stopCamera();
    document.body.dataset.camera = 'error';
    throw new Error(`the camera did not start (${err.message})`);
  }
}));
$('camera-stop').addEventListener('click', () => {
  stopCamera();
  setState('ready', 'Camera off.');
});

enablePointer();
run(async () => {
  await loadOrt();
  await loadDefaults();
});

// For scripts (web/headless.mjs --bench-crops): the runtime and the sessions the page loaded.
window.fer = { get ort() { return ort; }, get classifier() { return models.classifier; }, get yunet() { return models.yunet; } };
