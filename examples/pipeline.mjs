// Every face in a picture, classified: YuNet, the model's framing, the classifier. Shared by the
// Node.js program (onnxruntime-node) and the page (onnxruntime-web): each host passes its own `ort`
// module and its sessions; both have the same API. The pixel work is in faces.mjs.
import {
  DEFAULTS, YUNET_OUTPUTS, decodeYunet, detectionSize, frameFace, grayOf, isFaceCrop, resizeArea,
  toPictureFaces, viewScales, yunetInput,
} from './faces.mjs';

/** Crops per classifier call, as fer-batch's default --batch-size. */
export const BATCH = 32;

/** A YuNet session from the file's bytes; an Error naming the file when it is not a 2023+ YuNet model. */
export async function openYunet(ort, bytes, name = 'YuNet model', options = {}) {
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, options);
  } catch (err) {
    throw new Error(`${name}: onnxruntime cannot load it as a YuNet model (${err.message})`);
  }
  return checkYunet(session, name);
}

/** `session` if it is YuNet's (one input, the twelve outputs `decodeYunet` reads); else an Error naming the file. */
export function checkYunet(session, name = 'YuNet model') {
  const missing = YUNET_OUTPUTS.filter((o) => !session.outputNames.includes(o));
  if (missing.length || session.inputNames.length !== 1) {
    throw new Error(`${name}: not a YuNet model with outputs ${YUNET_OUTPUTS.join(', ')} ` +
      '(use face_detection_yunet_2023mar.onnx or later, e.g. fer_export/models/face_detection_yunet_2026may.onnx)');
  }
  return session;
}

/**
 * The faces in `image` ({ data, width, height, channels }, RGB(A) or gray), as fer-batch's YuNet finds
 * them on a picture: shrunk (area-averaged) so its long side is at most `detSize`, decoded, mapped
 * back to the picture's pixels. Each face: { x, y, w, h, score, landmarks }, sorted by x then y.
 */
export async function detectFaces(ort, yunet, image, { detSize = DEFAULTS.detSize, threshold = DEFAULTS.threshold,
  nmsIou = DEFAULTS.nmsIou, minFace = DEFAULTS.minFace } = {}) {
  const { s, width, height } = detectionSize(image.width, image.height, detSize);
  const [pixels, channels] = s === 1 ? [image.data, image.channels]
    : [resizeArea(image, width, height), image.channels >= 3 ? 3 : 1];
  const { blob, dims } = yunetInput(pixels, width, height, channels);
  const out = await yunet.run({ [yunet.inputNames[0]]: new ort.Tensor('float32', blob, dims) });
  return toPictureFaces(decodeYunet(out, dims[3], dims[2], threshold, nmsIou), s, image.width, image.height, minFace);
}

/** Probabilities of gray crops ({ data, width, height }), in order; one call per crop size and BATCH crops. */
export async function classifyCrops(ort, session, crops) {
  const out = new Array(crops.length);
  const sizes = new Map();
  crops.forEach((c, i) => {
    const key = `${c.width}x${c.height}`;
    if (!sizes.has(key)) sizes.set(key, []);
    sizes.get(key).push(i);
  });
  for (const idx of sizes.values()) {
    for (let start = 0; start < idx.length; start += BATCH) {
      const part = idx.slice(start, start + BATCH);
      const { width, height } = crops[part[0]];
      const batch = new Uint8Array(part.length * width * height);
      part.forEach((i, k) => batch.set(crops[i].data, k * width * height));
      const result = await session.run({ [session.inputNames[0]]: new ort.Tensor('uint8', batch, [part.length, 1, height, width]) });
      const probs = result.probs.data;
      const classes = probs.length / part.length;
      part.forEach((i, k) => { out[i] = Array.from(probs.subarray(k * classes, (k + 1) * classes)); });
    }
  }
  return out;
}

/** The mean of a face's views' probabilities, in float32 steps as numpy's mean of float32 rows. */
function meanOfViews(views) {
  if (views.length === 1) return views[0];
  return views[0].map((_, j) => {
    let sum = 0;
    for (const v of views) sum = Math.fround(sum + v[j]);
    return Math.fround(sum / views.length);
  });
}

/** The first largest probability's index (np.argmax). */
export function argmax(values) {
  let k = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[k]) k = i;
  return k;
}

/**
 * Every face of `image` with its probabilities, as fer-batch gives them: a picture no larger than
 * 64 px is a face crop, classified whole; otherwise YuNet's faces, each framed as the model's
 * training crops were (its metadata's framing) and, for a `still` picture, seen in three views whose
 * probabilities are averaged. `models` = { classifier, yunet, contract } (contract from readContract).
 * Returns [{ x, y, w, h, score, landmarks, probs, emotion, confidence, crops? }]; `keepCrops` keeps
 * the gray crops the model saw.
 */
export async function facesInPicture(ort, models, image, { still = true, keepCrops = false, cropSpread = DEFAULTS.cropSpread,
  ...detection } = {}) {
  const { classifier, yunet, contract } = models;
  const gray = grayOf(image);
  const framing = contract.spec.framing ?? null;
  let faces;
  let perFace;
  if (still && isFaceCrop(image.width, image.height)) {
    faces = [{ x: 0, y: 0, w: image.width, h: image.height, score: null, landmarks: null, whole: true }];
    perFace = [[{ data: gray, width: image.width, height: image.height }]];
  } else {
    faces = await detectFaces(ort, yunet, image, detection);
    const scales = viewScales(framing, still, cropSpread);
    perFace = faces.map((f) => scales.map((v) => frameFace(gray, image.width, image.height, f, framing, 'yunet', v)));
  }
  const probs = await classifyCrops(ort, classifier, perFace.flat());
  let k = 0;
  return faces.map((face, i) => {
    const views = perFace[i].map(() => probs[k++]);
    const p = meanOfViews(views);
    const top = argmax(p);
    return { ...face, probs: p, emotion: contract.labels[top], confidence: p[top], ...(keepCrops ? { crops: perFace[i] } : {}) };
  });
}

/**
 * The classifier's milliseconds per face on `crops`, over `reps` passes after a warm-up: BATCH crops a
 * call, and one crop a call (benchmarks/browser.py times both hosts with it).
 */
export async function timeClassifier(ort, session, crops, reps) {
  await classifyCrops(ort, session, crops);
  const perFace = async (calls) => {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) for (const call of calls) await classifyCrops(ort, session, call);
    return (performance.now() - t0) / (reps * crops.length);
  };
  return { crops: crops.length, reps, ms_per_face_batch32: await perFace([crops]), ms_per_face_single: await perFace(crops.map((c) => [c])) };
}
