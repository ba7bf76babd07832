#!/usr/bin/env node
// Classify faces with a fer-export ONNX model in Node.js.
//
//   node node/classify.mjs --model model.onnx face1.jpg face2.png FOLDER ...           # each file is one face: JSON
//   node node/classify.mjs --model model.onnx --detect [--format csv] photo.jpg FOLDER  # every face YuNet finds
//
// A folder stands for the images under it (sorted). Pass folders rather than thousands of file
// names: onnxruntime-node 1.30 crashes (a stack overflow while creating the session) when the
// process's command line is longer than about 30 KB.
//
// The model must be exported with its preprocessing inside (`fer-export onnx CKPT
// --with-preprocessing`, or `fer-export embed MODEL.onnx`): it takes raw uint8 grayscale crops of any
// size, and its labels and face framing come from its own metadata.
//
// --detect runs fer-batch's picture pipeline (../pipeline.mjs): YuNet on the picture shrunk to
// --det-size, each face framed as the model's training crops were and seen in three views
// (--crop-spread), and prints one row per face as fer-batch writes them (source, kind, face, box,
// det_score, emotion, confidence, one probability per label, status, error): JSON, or with
// --format csv fer-batch's own CSV columns. A picture without a face gets a `no_face` row.
// Pictures no larger than 64 px are face crops, classified whole. A picture in which YuNet finds
// nothing is not searched again (fer-batch's --look-again): such a picture stays `no_face` here.
//
// Exit codes: 0 every file read, 1 some files failed (they have an error entry), 2 usage or model error.
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import ort from 'onnxruntime-node';
import sharp from 'sharp';

import { readContract, toGray } from '../contract.mjs';
import { DEFAULTS } from '../faces.mjs';
import { facesInPicture, openYunet } from '../pipeline.mjs';

const USAGE = `usage: node node/classify.mjs --model MODEL.onnx [--detect] [--format json|csv] IMAGE_OR_FOLDER...
  --detect           find every face with YuNet, as fer-batch does (default: each file is one face crop)
  --yunet FILE       YuNet .onnx (default: $FER_YUNET_MODEL, ~/.cache/fer-export/face_detection_yunet_2026may.onnx, else the file fer-export ships)
  --det-size N       long side (px) a picture is shrunk to for detection (default ${DEFAULTS.detSize})
  --threshold T      YuNet score threshold (default ${DEFAULTS.threshold})
  --det-nms IOU      boxes overlapping more than this are one face (default ${DEFAULTS.nmsIou})
  --min-face N       ignore faces whose box is smaller (px, shorter side; default ${DEFAULTS.minFace})
  --crop-spread S    a face is also classified S wider and tighter, averaged; 0 = one crop (default ${DEFAULTS.cropSpread})
  --format F         json (default) or csv (fer-batch's columns)`;
const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp']);
const YUNET_FILE = 'face_detection_yunet_2026may.onnx';
const BUNDLED_YUNET = fileURLToPath(new URL(`../../fer_export/models/${YUNET_FILE}`, import.meta.url));
const FIXED = ['source', 'kind', 'frame', 'timestamp_s', 'face', 'track', 'x', 'y', 'w', 'h', 'det_score', 'emotion', 'confidence'];

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

/**
 * An image file's 8-bit pixels as OpenCV reads them: upright (EXIF orientation applied), alpha dropped,
 * no colour management (an embedded ICC profile is ignored, as cv2.imread ignores it). Gray files stay
 * one channel.
 */
async function readPixels(path) {
  const { data, info } = await sharp(path, { ignoreIcc: true }).rotate().removeAlpha().raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height,
    channels: info.channels };
}

async function readGray(path) {
  const { data, width, height, channels } = await readPixels(path);
  return { gray: toGray(data, width, height, channels), width, height };
}

/** fer-batch's order: --yunet, $FER_YUNET_MODEL, the user cache, the file shipped beside fer_export. */
function yunetPath(explicit) {
  if (explicit) return explicit;
  if (process.env.FER_YUNET_MODEL) return process.env.FER_YUNET_MODEL;
  const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'fer-export', YUNET_FILE);
  return existsSync(cache) ? cache : BUNDLED_YUNET;
}

async function loadModels(values) {
  const bytes = await readFile(values.model);
  const contract = readContract(bytes, values.model);
  const classifier = await ort.InferenceSession.create(bytes);
  if (!values.detect) return { contract, classifier };
  const path = yunetPath(values.yunet);
  const yunetBytes = await readFile(path).catch((err) => {
    throw new Error(`${path}: cannot read the YuNet model (${err.code ?? err.message}); pass --yunet FILE`);
  });
  return { contract, classifier, yunet: await openYunet(ort, yunetBytes, path), yunetPath: path };
}

/** Options as numbers, each checked: a bad one is a usage error. */
function detectionOptions(values) {
  const number = (name, fallback, ok) => {
    if (values[name] === undefined) return fallback;
    const v = Number(values[name]);
    if (!Number.isFinite(v) || !ok(v)) throw new Error(`--${name} ${values[name]}: out of range`);
    return v;
  };
  return {
    detSize: number('det-size', DEFAULTS.detSize, (v) => Number.isInteger(v) && v >= 64),
    threshold: number('threshold', DEFAULTS.threshold, (v) => v >= 0.1 && v <= 1),
    nmsIou: number('det-nms', DEFAULTS.nmsIou, (v) => v >= 0 && v < 1),
    minFace: number('min-face', DEFAULTS.minFace, (v) => Number.isInteger(v) && v >= 0),
    cropSpread: number('crop-spread', DEFAULTS.cropSpread, (v) => v >= 0 && v <= 0.5),
  };
}

/** fer-batch's rows for one picture: one per face, or one `no_face` row. */
async function pictureRows(models, file, options) {
  const faces = await facesInPicture(ort, models, await readPixels(file), { still: true, ...options });
  if (!faces.length) return [{ source: file, kind: 'image', status: 'no_face' }];
  return faces.map((f, i) => ({
    source: file, kind: 'image', face: i, x: f.x, y: f.y, w: f.w, h: f.h, det_score: f.score,
    emotion: f.emotion, confidence: f.confidence,
    probs: Object.fromEntries(models.contract.labels.map((label, k) => [label, f.probs[k]])), status: 'ok',
  }));
}

function csvCell(value) {
  const text = value === undefined || value === null ? '' : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Rows as fer-batch's CSV: its fixed columns, one column per label (%.6f), status, error. */
function toCsv(rows, labels) {
  const lines = [[...FIXED, ...labels, 'status', 'error'].join(',')];
  for (const r of rows) {
    const p = r.probs ? labels.map((l) => r.probs[l].toFixed(6)) : labels.map(() => '');
    lines.push([r.source, r.kind, '', '', r.face, '', r.x, r.y, r.w, r.h, r.det_score?.toFixed(4),
      r.emotion, r.probs ? r.probs[r.emotion].toFixed(6) : '', ...p, r.status, r.error].map(csvCell).join(','));
  }
  return `${lines.join('\n')}\n`;
}

async function main() {
  let args;
  try {
    args = parseArgs({
      options: {
        model: { type: 'string' }, help: { type: 'boolean' }, detect: { type: 'boolean' }, yunet: { type: 'string' },
        format: { type: 'string', default: 'json' }, 'det-size': { type: 'string' }, threshold: { type: 'string' },
        'det-nms': { type: 'string' },
        'min-face': { type: 'string' }, 'crop-spread': { type: 'string' },
      },
      allowPositionals: true,
    });
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = args;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let options;
  try {
    if (!values.model || positionals.length === 0) throw new Error('give --model and at least one image or folder');
    if (!['json', 'csv'].includes(values.format)) throw new Error(`--format ${values.format}: json or csv`);
    const detection = ['yunet', 'det-size', 'threshold', 'det-nms', 'min-face', 'crop-spread'].filter((o) => values[o] !== undefined);
    if (detection.length && !values.detect) throw new Error(`--${detection[0]} applies to --detect only`);
    options = detectionOptions(values);
  } catch (err) {
    console.error(`error: ${err.message}\n${USAGE}`);
    return 2;
  }
  let models;
  try {
    models = await loadModels(values);
  } catch (err) {
    console.error(`error: ${err.message}`);
    return 2;
  }
  const { labels } = models.contract;
  const rows = [];
  for (const file of await expand(positionals)) {
    try {
      if (values.detect) {
        rows.push(...await pictureRows(models, file, options));
      } else {
        const { gray, width, height } = await readGray(file);
        const out = await models.classifier.run({ [models.classifier.inputNames[0]]: new ort.Tensor('uint8', gray, [1, 1, height, width]) });
        const probs = Array.from(out.probs.data);
        const top = probs.indexOf(Math.max(...probs));
        rows.push({ file, emotion: labels[top], confidence: probs[top],
          probs: Object.fromEntries(labels.map((label, i) => [label, probs[i]])) });
      }
    } catch (err) {
      rows.push(values.detect ? { source: file, kind: 'image', status: 'error', error: err.message } : { file, error: err.message });
    }
  }
  if (values.format === 'csv') {
    process.stdout.write(toCsv(values.detect ? rows : rows.map((r) => ({ source: r.file, kind: 'image', face: r.error ? undefined : 0,
      emotion: r.emotion, probs: r.probs, status: r.error ? 'error' : 'ok', error: r.error })), labels));
  } else if (values.detect) {
    console.log(JSON.stringify({ model: values.model, labels, input: models.contract.input, detector: 'yunet',
      yunet: models.yunetPath, options, rows }, null, 2));
  } else {
    console.log(JSON.stringify({ model: values.model, labels, input: models.contract.input, results: rows }, null, 2));
  }
  return rows.some((r) => r.error) ? 1 : 0;
}

process.exitCode = await main();
