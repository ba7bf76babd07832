#!/usr/bin/env node
// Classify face crops with a fer-export ONNX model in Node.js and print JSON.
//
//   node node/classify.mjs --model model.onnx face1.jpg face2.png FOLDER ...
//
// A folder stands for the images under it (sorted). Pass folders rather than thousands of file
// names: onnxruntime-node 1.30 crashes (a stack overflow while creating the session) when the
// process's command line is longer than about 30 KB.
//
// The model must be exported with its preprocessing inside (`fer-export onnx CKPT
// --with-preprocessing`): it takes raw uint8 grayscale crops of any size, and its labels come from
// its own metadata. This program only decodes each image to gray pixels.
// Exit codes: 0 every file classified, 1 some files failed (they have an "error" entry), 2 usage
// or model error.
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parseArgs } from 'node:util';

import ort from 'onnxruntime-node';
import sharp from 'sharp';

import { readContract, toGray } from '../contract.mjs';

const USAGE = 'usage: node node/classify.mjs --model MODEL.onnx IMAGE_OR_FOLDER...';
const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);

/** The files to classify: each argument, or the images under it when it is a folder. */
async function expand(paths) {
  const files = [];
  for (const path of paths) {
    const info = await stat(path).catch(() => null);
    if (!info?.isDirectory()) {
      files.push(path); // a missing file gets its error entry later
      continue;
    }
    const entries = await readdir(path, { recursive: true, withFileTypes: true });
    files.push(...entries.filter((e) => e.isFile() && IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase()))
      .map((e) => join(e.parentPath ?? e.path, e.name)).sort());
  }
  return files;
}

/** An image file as uint8 gray pixels, upright (EXIF orientation applied, alpha ignored, as OpenCV reads it). */
async function readGray(path) {
  const { data, info } = await sharp(path).rotate().removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { gray: toGray(data, info.width, info.height, info.channels), width: info.width, height: info.height };
}

async function loadModel(path) {
  const bytes = await readFile(path);
  const contract = readContract(bytes, path);
  const session = await ort.InferenceSession.create(bytes);
  return { contract, session };
}

/** Probabilities of one crop, in the order of `contract.labels`. */
async function classify({ session }, { gray, width, height }) {
  const input = new ort.Tensor('uint8', gray, [1, 1, height, width]);
  const out = await session.run({ [session.inputNames[0]]: input });
  return Array.from(out.probs.data);
}

async function main() {
  let args;
  try {
    args = parseArgs({ options: { model: { type: 'string' }, help: { type: 'boolean' } }, allowPositionals: true });
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (args.values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!args.values.model || args.positionals.length === 0) {
    console.error(USAGE);
    return 2;
  }
  let model;
  try {
    model = await loadModel(args.values.model);
  } catch (err) {
    console.error(`error: ${err.message}`);
    return 2;
  }
  const { labels } = model.contract;
  const results = [];
  for (const file of await expand(args.positionals)) {
    try {
      const probs = await classify(model, await readGray(file));
      const top = probs.indexOf(Math.max(...probs));
      results.push({ file, emotion: labels[top], confidence: probs[top],
        probs: Object.fromEntries(labels.map((label, i) => [label, probs[i]])) });
    } catch (err) {
      results.push({ file, error: err.message });
    }
  }
  console.log(JSON.stringify({ model: args.values.model, labels, input: model.contract.input, results }, null, 2));
  return results.some((r) => r.error) ? 1 : 0;
}

process.exitCode = await main();
