#!/usr/bin/env node
// Drive the page in headless Chromium: load the models, feed pictures (or a fake camera), print JSON.
//
//   node serve.mjs --port 8000 &
//   node web/headless.mjs --url http://127.0.0.1:8000/web/ [--model model.onnx] [--yunet yunet.onnx] photo.jpg ...
//   node web/headless.mjs --url ... --camera video.y4m --seconds 10            # the camera mode on a fake camera
//
// Each picture gives every face the page found (box, score, emotion, confidence, probs), as
// node/classify.mjs --detect does. --whole unticks "Find faces": each picture is then classified whole
// (the output then has node/classify.mjs's shape without --detect). --select X,Y,SIDE drags a square on
// each picture (picture pixels; the square the page took is in "selection"). --click N clicks face N
// before the screenshot (--screenshot page.png).
// --camera FILE.y4m starts the camera mode on Chromium's fake camera fed from that file, for
// --seconds, at --camera-size px detection, and reports the frames classified, the page's frames/s
// and the faces of the last frame. --bench-crops N times the model on the pictures given, read as gray
// face crops, N times over, in batches of 32 and one by one: milliseconds per face. --webgpu gives
// the page Chromium's software WebGPU adapter (SwiftShader) instead of --disable-gpu.
// The browser is the system's Chromium (Debian: apt-get install chromium), driven by playwright-core;
// playwright's own browser downloads are not used. --chromium PATH or $CHROMIUM picks another binary.
// Exit codes: 0 ok, 1 the page reported an error, 2 usage error or no browser.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const USAGE = 'usage: node web/headless.mjs --url URL [--model MODEL.onnx] [--yunet YUNET.onnx] [--whole] ' +
  '[--select X,Y,SIDE] [--click N] [--screenshot PNG] [--camera FILE.y4m --seconds S --camera-size PX] ' +
  '[--bench-crops N] [--width PX] [--webgpu] IMAGE...';
// Flags that work on machines without a GPU, a sandbox or a network.
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];
const TIMEOUT_MS = 180_000;

async function waitState(page, states) {
  await page.waitForFunction((s) => s.includes(document.body.dataset.state), states, { timeout: TIMEOUT_MS });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state === 'error') throw new Error(`the page says: ${await page.textContent('#status')}`);
  return state;
}

/** Wait until #result's data-seq passes `seq` (or the page reports an error). */
async function nextResult(page, seq) {
  await page.waitForFunction((n) => Number(document.getElementById('result').dataset.seq) > n
    || document.body.dataset.state === 'error', seq, { timeout: TIMEOUT_MS });
  return waitState(page, ['ready', 'error']);
}

const seqOf = async (page) => Number(await page.getAttribute('#result', 'data-seq'));

/** Picture pixels -> page coordinates of the view canvas. */
async function toPage(page, x, y) {
  const box = await page.locator('#view').boundingBox();
  const scale = await page.evaluate(() => {
    const view = document.getElementById('view');
    return Number(view.dataset.scale) * view.getBoundingClientRect().width / view.width;
  });
  return [box.x + x * scale, box.y + y * scale];
}

/** Drag a square from picture pixel (x, y) to (x + side, y + side) on the page's picture. */
async function drag(page, [x, y, side]) {
  const seq = await seqOf(page);
  await page.mouse.move(...await toPage(page, x, y));
  await page.mouse.down();
  await page.mouse.move(...await toPage(page, x + side, y + side), { steps: 8 });
  await page.mouse.up();
  await nextResult(page, seq);
}

async function clickFace(page, n) {
  const faces = JSON.parse(await page.getAttribute('#result', 'data-faces'));
  if (!faces[n]) throw new Error(`--click ${n}: the picture has ${faces.length} faces`);
  const seq = await seqOf(page);
  const f = faces[n];
  await page.mouse.click(...await toPage(page, f.x + f.w / 2, f.y + f.h / 2));
  await nextResult(page, seq);
}

async function loadFile(page, input, path, attribute) {
  await page.setInputFiles(input, path);
  await page.waitForFunction(([a, n]) => document.body.dataset[a] === n || document.body.dataset.state === 'error',
    [attribute, basename(path)], { timeout: TIMEOUT_MS });
  await waitState(page, ['ready', 'needs-model', 'error']);
}

function named(labels, probs) {
  return Object.fromEntries(labels.map((label, i) => [label, probs[i]]));
}

async function pictureResult(page, file, labels, values) {
  const seq = await seqOf(page);
  await page.setInputFiles('#image', file);
  await nextResult(page, seq);
  if (values.select) await drag(page, values.select.split(',').map(Number));
  const mode = await page.getAttribute('#result', 'data-mode');
  if (values.whole || values.select) {
    const probs = JSON.parse(await page.getAttribute('#result', 'data-probs'));
    const top = probs.indexOf(Math.max(...probs));
    return { file, selection: JSON.parse(await page.getAttribute('#result', 'data-selection')), emotion: labels[top],
      confidence: probs[top], probs: named(labels, probs) };
  }
  const faces = JSON.parse(await page.getAttribute('#result', 'data-faces'));
  const ms = Number(await page.getAttribute('#result', 'data-ms'));
  return { file, mode, ms, faces: faces.map((f) => ({ x: f.x, y: f.y, w: f.w, h: f.h, score: f.score, emotion: f.emotion,
    confidence: f.confidence, probs: named(labels, f.probs) })) };
}

/** The camera mode on the fake camera for `seconds`: frames classified, frames/s, the last frame's faces. */
async function runCamera(page, values) {
  await page.selectOption('#camera-size', values['camera-size']);
  await page.click('#camera-start');
  await page.waitForFunction(() => ['on', 'error'].includes(document.body.dataset.camera), null, { timeout: TIMEOUT_MS });
  if (await page.evaluate(() => document.body.dataset.camera) === 'error') throw new Error(await page.textContent('#status'));
  await page.waitForFunction(() => Number(document.getElementById('fps').dataset.frames) >= 2
    || document.body.dataset.state === 'error', null, { timeout: TIMEOUT_MS });
  const start = await page.evaluate(() => [Number(document.getElementById('fps').dataset.frames), performance.now()]);
  await page.waitForTimeout(1000 * Number(values.seconds));
  const stats = await page.evaluate(() => {
    const el = document.getElementById('fps');
    return { frames: Number(el.dataset.frames), now: performance.now(), fps: Number(el.dataset.fps), text: el.textContent,
      faces: JSON.parse(el.dataset.faces || '[]'), state: document.body.dataset.state, camera: document.body.dataset.camera };
  });
  if (stats.state === 'error') throw new Error(await page.textContent('#status'));
  const frames = stats.frames - start[0];
  const video = await page.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
  return { frames, seconds: (stats.now - start[1]) / 1000, frames_per_s: (1000 * frames) / (stats.now - start[1]),
    page_fps: stats.fps, page_text: stats.text, det_size: Number(values['camera-size']), video_size: video,
    last_faces: stats.faces };
}

/** The model alone on gray face crops, in the page: ms per face in batches of 32 and one at a time. */
async function benchCrops(page, files, reps) {
  const pictures = files.map((f) => Array.from(readFileSync(f)));
  return page.evaluate(async ([bytes, n]) => {
    const { timeClassifier } = await import('../pipeline.mjs');
    const { grayOf } = await import('../faces.mjs');
    const crops = [];
    for (const b of bytes) {
      const bitmap = await createImageBitmap(new Blob([new Uint8Array(b)]), { colorSpaceConversion: 'none' });
      const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      const image = { data: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data, width: bitmap.width,
        height: bitmap.height, channels: 4 };
      crops.push({ data: grayOf(image), width: bitmap.width, height: bitmap.height });
    }
    return timeClassifier(window.fer.ort, window.fer.classifier, crops, n);
  }, [pictures, reps]);
}

async function main() {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      options: { url: { type: 'string' }, model: { type: 'string' }, yunet: { type: 'string' }, screenshot: { type: 'string' },
        chromium: { type: 'string' }, select: { type: 'string' }, whole: { type: 'boolean' }, click: { type: 'string' },
        camera: { type: 'string' }, seconds: { type: 'string', default: '10' }, 'camera-size': { type: 'string', default: '320' },
        'bench-crops': { type: 'string' }, width: { type: 'string', default: '1120' }, webgpu: { type: 'boolean' } },
      allowPositionals: true,
    }));
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  const executable = values.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
  if (!values.url) {
    console.error(USAGE);
    return 2;
  }
  if (!existsSync(executable)) {
    console.error(`no Chromium at ${executable}: apt-get install chromium, or pass --chromium PATH`);
    return 2;
  }
  // --webgpu: WebGPU on SwiftShader, Chromium's software adapter (machines without a GPU have no other)
  const args = values.webgpu ? [...FLAGS.filter((f) => f !== '--disable-gpu'), ...WEBGPU_FLAGS] : [...FLAGS];
  if (values.camera) {
    if (!existsSync(values.camera)) {
      console.error(`--camera ${values.camera}: no such file`);
      return 2;
    }
    args.push('--use-fake-device-for-media-stream', `--use-file-for-fake-video-capture=${values.camera}`,
      '--use-fake-ui-for-media-stream');
  }
  const profile = mkdtempSync(join(tmpdir(), 'fer-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: executable, headless: true, args, viewport: { width: Number(values.width), height: 760 },
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    const logs = [];
    page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => logs.push(`pageerror: ${err.message}`));
    await page.goto(values.url);
    try {
      await waitState(page, ['needs-model', 'ready', 'error']);
      if (values.yunet) await loadFile(page, '#yunet-file', values.yunet, 'yunet');
      if (values.model) await loadFile(page, '#model-file', values.model, 'model');
      if (values.whole) await page.uncheck('#detect');
      await waitState(page, ['ready', 'error']);
      const labels = JSON.parse(await page.getAttribute('#result', 'data-labels'));
      const backend = JSON.parse(await page.evaluate(() => document.body.dataset.backend));
      const output = { model: values.model ?? values.url, labels, browser: context.browser()?.version() ?? executable, backend };
      if (values['bench-crops']) {
        output.bench = await benchCrops(page, positionals, Number(values['bench-crops']));
      } else {
        output.results = [];
        for (const file of positionals) output.results.push(await pictureResult(page, file, labels, values));
        if (values.click !== undefined) await clickFace(page, Number(values.click));
      }
      if (values.camera) output.camera = await runCamera(page, values);
      if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
      console.log(JSON.stringify(output, null, 2));
      return 0;
    } catch (err) {
      console.error(`${err.message}\nbrowser console:\n${logs.join('\n')}`);
      return 1;
    }
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

process.exitCode = await main();
