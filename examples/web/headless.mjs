#!/usr/bin/env node
// Drive the page in headless Chromium: load a model, feed pictures, print the probabilities as JSON.
//
//   python -m http.server -d examples 8000 &
//   node web/headless.mjs --url http://127.0.0.1:8000/web/ --model model.onnx face1.jpg ... [--screenshot page.png]
//
// --select X,Y,SIDE drags a square on each picture with the mouse, as a user marks a face on a photo
// (picture pixels; the page reports the square it took, which goes into the output as "selection").
// The browser is the system's Chromium (Debian: apt-get install chromium), driven by playwright-core;
// playwright's own browser downloads are not used. --chromium PATH or $CHROMIUM picks another binary.
// The output has the shape of node/classify.mjs's, so both can be compared with Python's.
// Exit codes: 0 ok, 1 the page reported an error, 2 usage error or no browser.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const USAGE = 'usage: node web/headless.mjs --url URL [--model MODEL.onnx] [--select X,Y,SIDE] [--screenshot PNG] IMAGE...';
// Flags that work on machines without a GPU, a sandbox or a network.
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const TIMEOUT_MS = 120_000;

async function waitState(page, states) {
  await page.waitForFunction((s) => s.includes(document.body.dataset.state), states, { timeout: TIMEOUT_MS });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state === 'error') throw new Error(`the page says: ${await page.textContent('#status')}`);
  return state;
}

/** Drag a square from picture pixel (x, y) to (x + side, y + side) on the page's picture. */
async function drag(page, [x, y, side]) {
  const seq = Number(await page.getAttribute('#result', 'data-seq'));
  const box = await page.locator('#view').boundingBox();
  const scale = await page.evaluate(() => { // picture px -> CSS px
    const view = document.getElementById('view');
    return Number(view.dataset.scale) * view.getBoundingClientRect().width / view.width;
  });
  await page.mouse.move(box.x + x * scale, box.y + y * scale);
  await page.mouse.down();
  await page.mouse.move(box.x + (x + side) * scale, box.y + (y + side) * scale, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction((n) => Number(document.getElementById('result').dataset.seq) > n
    || document.body.dataset.state === 'error', seq, { timeout: TIMEOUT_MS });
  await waitState(page, ['ready', 'error']);
}

async function main() {
  const { values, positionals } = parseArgs({
    options: { url: { type: 'string' }, model: { type: 'string' }, screenshot: { type: 'string' },
      chromium: { type: 'string' }, select: { type: 'string' } },
    allowPositionals: true,
  });
  const executable = values.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
  if (!values.url) {
    console.error(USAGE);
    return 2;
  }
  if (!existsSync(executable)) {
    console.error(`no Chromium at ${executable}: apt-get install chromium, or pass --chromium PATH`);
    return 2;
  }
  const profile = mkdtempSync(join(tmpdir(), 'fer-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: executable, headless: true, args: FLAGS, viewport: { width: 920, height: 640 },
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    const logs = [];
    page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => logs.push(`pageerror: ${err.message}`));
    await page.goto(values.url);
    try {
      await waitState(page, ['needs-model', 'ready', 'error']);
      if (values.model) {
        await page.setInputFiles('#model-file', values.model);
        await page.waitForFunction((n) => document.body.dataset.model === n, basename(values.model),
          { timeout: TIMEOUT_MS });
        await waitState(page, ['ready', 'error']);
      }
      const labels = JSON.parse(await page.getAttribute('#result', 'data-labels'));
      const results = [];
      for (const file of positionals) {
        const seq = Number(await page.getAttribute('#result', 'data-seq'));
        await page.setInputFiles('#image', file);
        await page.waitForFunction((n) => Number(document.getElementById('result').dataset.seq) > n
          || document.body.dataset.state === 'error', seq, { timeout: TIMEOUT_MS });
        await waitState(page, ['ready', 'error']);
        if (values.select) await drag(page, values.select.split(',').map(Number));
        const probs = JSON.parse(await page.getAttribute('#result', 'data-probs'));
        const top = probs.indexOf(Math.max(...probs));
        results.push({ file, selection: JSON.parse(await page.getAttribute('#result', 'data-selection')),
          emotion: labels[top], confidence: probs[top],
          probs: Object.fromEntries(labels.map((label, i) => [label, probs[i]])) });
      }
      if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
      console.log(JSON.stringify({ model: values.model ?? values.url, labels, browser: context.browser()?.version()
        ?? executable, results }, null, 2));
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
