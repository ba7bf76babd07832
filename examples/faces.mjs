// Faces in a picture, as fer-batch finds and frames them: YuNet's decoding, and the model's framing.
// Plain JavaScript on typed arrays, shared by the Node.js program and the page (no onnxruntime here;
// pipeline.mjs runs the two models).
//
// The arithmetic follows what fer-batch runs, so that the same picture gives the same boxes and the
// same crop pixels: fer_export/batch/faces.py (`scaled`, `_clip`), yunet.py (`yunet_decode`) and
// crops.py (`frame_face`), and the OpenCV 4 calls they make: cv2.resize INTER_AREA
// (modules/imgproc/src/resize.cpp: the integer-ratio path and the float32 area table),
// cv2.dnn.NMSBoxes (modules/dnn/src/nms.inl.hpp) and cv2.warpAffine INTER_LINEAR with a replicated
// border (imgwarp.cpp: 1/32 px positions, 15-bit integer weights). Python's round() and OpenCV's
// cvRound round half to even, and float32 steps are rounded where OpenCV rounds them: a pixel off by
// one gray level changes a probability in its fourth decimal.
//
// An image is { data, width, height, channels }: 8-bit pixels, row-major, channels 1 (gray), 3 (RGB)
// or 4 (RGBA, alpha ignored as OpenCV drops it).
import { toGray } from './contract.mjs';

/**
 * What fer-batch runs with by default (fer_export/batch/settings.py, crops.py, yunet.py, sources.py);
 * tests/test_embed_detect.py checks that they agree.
 */
export const DEFAULTS = Object.freeze({
  detSize: 640, // DET_SIZES: the long side a picture is shrunk to for detection (fer-batch may take several)
  threshold: 0.7, // DetectionSettings.det_threshold
  minFace: 20, // DetectionSettings.min_face: faces whose box's shorter side is smaller are dropped
  cropSpread: 0.22, // CROP_SPREAD: a picture's face is also classified this much wider and tighter
  nmsIou: 0.3, // DetectionSettings.det_nms: boxes overlapping more (IoU) are one face
  topK: 5000, // YUNET_TOP_K
  cropMaxSide: 64, // sources.CROP_MAX_SIDE: a picture no larger is a face crop, classified whole
  cropMargin: 0.1, // CROP_MARGIN: a model without a framing gets a square with this margin
  framedSides: Object.freeze([16, 1024]), // FRAMED_SIDES: bounds on a framed crop's side (px)
});
export const YUNET_STRIDES = Object.freeze([8, 16, 32]);
export const YUNET_OUTPUTS = Object.freeze(['cls', 'obj', 'bbox', 'kps'].flatMap((k) => YUNET_STRIDES.map((s) => `${k}_${s}`)));

const f32 = Math.fround;

/** Round half to even: Python's round(), numpy's rint and OpenCV's cvRound. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** True when a picture is a face crop already (both sides at most 64 px): fer-batch classifies it whole. */
export function isFaceCrop(width, height) {
  return Math.max(width, height) <= DEFAULTS.cropMaxSide;
}

/** The picture's gray pixels (ITU-R BT.601 in OpenCV's 15-bit fixed point, as COLOR_BGR2GRAY). */
export function grayOf({ data, width, height, channels }) {
  return toGray(data, width, height, channels);
}

// ---- cv2.resize(INTER_AREA), shrinking ----------------------------------------------------------

/** OpenCV's `computeResizeAreaTab`: { di, si, alpha } arrays, one entry per (destination, source) pixel pair. */
function areaTable(ssize, dsize, scale) {
  const di = [];
  const si = [];
  const alpha = [];
  const push = (d, src, a) => { di.push(d); si.push(src); alpha.push(a); };
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) push(dx, sx1 - 1, f32((sx1 - fsx1) / cellWidth));
    for (let sx = sx1; sx < sx2; sx++) push(dx, sx, f32(1.0 / cellWidth));
    if (fsx2 - sx2 > 1e-3) push(dx, sx2, f32(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth));
  }
  return { di: Int32Array.from(di), si: Int32Array.from(si), alpha: Float32Array.from(alpha) };
}

/**
 * `cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA)` for a shrink (dw <= width, dh <= height):
 * the first `outChannels` channels of an 8-bit image, as OpenCV computes them.
 */
export function resizeArea({ data, width, height, channels }, dw, dh, outChannels = channels >= 3 ? 3 : 1) {
  const cn = outChannels;
  const out = new Uint8Array(dw * dh * cn);
  const scaleX = 1 / (dw / width);
  const scaleY = 1 / (dh / height);
  if (scaleX < 1 || scaleY < 1) throw new Error(`resizeArea shrinks only (${width}x${height} -> ${dw}x${dh})`);
  const isx = roundHalfEven(scaleX);
  const isy = roundHalfEven(scaleY);
  if (Math.abs(scaleX - isx) < Number.EPSILON && Math.abs(scaleY - isy) < Number.EPSILON) {
    // whole ratios: integer sums; 2x2 rounds half up in integers, other ratios multiply by float32 1/area
    const two = isx === 2 && isy === 2;
    const inv = f32(1 / (isx * isy));
    for (let dy = 0; dy < dh; dy++) {
      for (let dx = 0; dx < dw; dx++) {
        for (let c = 0; c < cn; c++) {
          let sum = 0;
          for (let sy = 0; sy < isy; sy++) {
            const row = (dy * isy + sy) * width;
            for (let sx = 0; sx < isx; sx++) sum += data[(row + dx * isx + sx) * channels + c];
          }
          out[(dy * dw + dx) * cn + c] = two ? (sum + 2) >> 2 : Math.min(255, roundHalfEven(f32(sum * inv)));
        }
      }
    }
    return out;
  }
  const xtab = areaTable(width, dw, scaleX);
  const ytab = areaTable(height, dh, scaleY);
  const buf = new Float32Array(dw * cn);
  const sum = new Float32Array(dw * cn);
  const write = (dy) => {
    for (let i = 0; i < sum.length; i++) out[dy * dw * cn + i] = Math.min(255, Math.max(0, roundHalfEven(sum[i])));
  };
  let prevDy = ytab.di[0];
  for (let j = 0; j < ytab.di.length; j++) {
    const dy = ytab.di[j];
    const beta = ytab.alpha[j];
    buf.fill(0);
    const row = ytab.si[j] * width * channels;
    for (let k = 0; k < xtab.di.length; k++) {
      const s = row + xtab.si[k] * channels;
      const d = xtab.di[k] * cn;
      const a = xtab.alpha[k];
      for (let c = 0; c < cn; c++) buf[d + c] += f32(data[s + c] * a); // float32 stores round each step
    }
    if (dy !== prevDy) {
      write(prevDy);
      for (let i = 0; i < sum.length; i++) sum[i] = beta * buf[i];
      prevDy = dy;
    } else {
      for (let i = 0; i < sum.length; i++) sum[i] += f32(beta * buf[i]);
    }
  }
  write(prevDy);
  return out;
}

/** fer-batch's `scaled`: the size a picture is shrunk to so that its long side is at most `longSide`, and the scale. */
export function detectionSize(width, height, longSide = DEFAULTS.detSize) {
  const s = Math.min(1.0, longSide / Math.max(width, height));
  return { s, width: Math.max(1, roundHalfEven(width * s)), height: Math.max(1, roundHalfEven(height * s)) };
}

// ---- YuNet ------------------------------------------------------------------------------------

/**
 * YuNet's input: the BGR planes of an image (`channels` 3 or 4 in RGB order, or 1 gray, repeated as
 * OpenCV's GRAY2BGR), zero-padded to multiples of 32.
 */
export function yunetInput(rgb, width, height, channels = 3) {
  const pw = Math.ceil(width / 32) * 32;
  const ph = Math.ceil(height / 32) * 32;
  const blob = new Float32Array(3 * ph * pw);
  const plane = ph * pw;
  const [g, b] = channels >= 3 ? [1, 2] : [0, 0];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      const o = y * pw + x;
      blob[o] = rgb[i + b];
      blob[plane + o] = rgb[i + g];
      blob[2 * plane + o] = rgb[i];
    }
  }
  return { blob, dims: [1, 3, ph, pw] };
}

/** cv2.dnn.NMSBoxes on (x, y, w, h) boxes in double, scores in float32: indices kept, best first. */
export function nmsBoxes(boxes, scores, threshold, iou, topK = DEFAULTS.topK) {
  const thr = f32(threshold);
  const iouThr = f32(iou);
  let order = scores.map((s, i) => [s, i]).filter(([s]) => s > thr);
  order.sort((a, b) => b[0] - a[0]); // stable, as std::stable_sort
  if (topK > 0 && order.length > topK) order = order.slice(0, topK);
  const keep = [];
  for (const [, i] of order) {
    const a = boxes[i];
    let ok = true;
    for (let k = 0; k < keep.length && ok; k++) {
      const b = boxes[keep[k]];
      const x1 = Math.max(a[0], b[0]);
      const y1 = Math.max(a[1], b[1]);
      const w = Math.min(a[0] + a[2], b[0] + b[2]) - x1;
      const h = Math.min(a[1] + a[3], b[1] + b[3]) - y1;
      const inter = w <= 0 || h <= 0 ? 0 : w * h;
      const areas = a[2] * a[3] + b[2] * b[3];
      const jaccard = areas <= Number.EPSILON ? 0 : 1 - inter / (areas - inter);
      ok = f32(1 - f32(jaccard)) <= iouThr;
    }
    if (ok) keep.push(i);
  }
  return keep;
}

/**
 * YuNet's faces from its twelve outputs (`outputs[name].data`) for an input padded to pw x ph:
 * fer-batch's `_yunet_decode` (score = sqrt(cls * obj), box centre and landmarks as grid offsets,
 * sides as exp), then NMS. Boxes and landmarks are in the pixels of the image YuNet saw.
 */
export function decodeYunet(outputs, pw, ph, threshold = DEFAULTS.threshold, nmsIou = DEFAULTS.nmsIou) {
  const boxes = [];
  const scores = [];
  const marks = [];
  const thr = f32(threshold);
  for (const stride of YUNET_STRIDES) {
    const cls = outputs[`cls_${stride}`].data;
    const obj = outputs[`obj_${stride}`].data;
    const bbox = outputs[`bbox_${stride}`].data;
    const kps = outputs[`kps_${stride}`].data;
    const cols = pw / stride;
    for (let idx = 0; idx < cls.length; idx++) {
      const score = f32(Math.sqrt(f32(Math.min(Math.max(cls[idx], 0), 1) * Math.min(Math.max(obj[idx], 0), 1))));
      if (!(score >= thr)) continue;
      const row = Math.floor(idx / cols);
      const col = idx - row * cols;
      const sideW = f32(f32(Math.exp(bbox[idx * 4 + 2])) * stride);
      const sideH = f32(f32(Math.exp(bbox[idx * 4 + 3])) * stride);
      boxes.push([(col + bbox[idx * 4]) * stride - sideW / 2, (row + bbox[idx * 4 + 1]) * stride - sideH / 2, sideW, sideH]);
      scores.push(score);
      const k = [];
      for (let j = 0; j < 10; j += 2) k.push((kps[idx * 10 + j] + col) * stride, (kps[idx * 10 + j + 1] + row) * stride);
      marks.push(k);
    }
  }
  if (!boxes.length) return [];
  return nmsBoxes(boxes, scores, threshold, nmsIou).map((i) => ({ box: boxes[i], score: scores[i], landmarks: marks[i] }));
}

/**
 * Faces found at scale `s` mapped back to the picture's pixels as fer-batch's `_clip` does: rounded
 * (half to even), clipped to the picture, dropped when under 2 px or under `minFace`; sorted by (x, y).
 */
export function toPictureFaces(found, s, width, height, minFace = DEFAULTS.minFace) {
  const faces = [];
  for (const { box, score, landmarks } of found) {
    const [x, y, w, h] = [box[0] / s, box[1] / s, box[2] / s, box[3] / s];
    const x0 = Math.max(0, roundHalfEven(x));
    const y0 = Math.max(0, roundHalfEven(y));
    const x1 = Math.min(width, roundHalfEven(x + w));
    const y1 = Math.min(height, roundHalfEven(y + h));
    if (x1 - x0 < 2 || y1 - y0 < 2 || Math.min(x1 - x0, y1 - y0) < minFace) continue;
    faces.push({ x: x0, y: y0, w: x1 - x0, h: y1 - y0, score: Math.round(score * 1e4) / 1e4,
      landmarks: landmarks.map((v) => Math.round((v / s) * 100) / 100) });
  }
  return faces.sort((a, b) => a.x - b.x || a.y - b.y);
}

// ---- the model's framing ------------------------------------------------------------------------

/**
 * cv2.warpAffine(gray, M, (dw, dh), INTER_LINEAR, BORDER_REPLICATE) for a forward 2x3 map M, in
 * OpenCV 4's fixed point: M inverted in double; each destination pixel's source position rounded to
 * 1/32 px (10-bit products, cvRound, shifted to 5 bits); the four taps (edges repeated) weighted by
 * products of (32 - f) and f, scaled to 15 bits and rounded half up.
 */
export function warpAffine(gray, width, height, M, dw, dh) {
  let D = M[0] * M[4] - M[1] * M[3];
  D = D !== 0 ? 1 / D : 0;
  const A11 = M[4] * D;
  const A22 = M[0] * D;
  const A12 = -M[1] * D;
  const A21 = -M[3] * D;
  const b1 = -A11 * M[2] - A12 * M[5];
  const b2 = -A21 * M[2] - A22 * M[5];
  const out = new Uint8Array(dw * dh);
  const at = (x, y) => gray[Math.min(Math.max(y, 0), height - 1) * width + Math.min(Math.max(x, 0), width - 1)];
  const adelta = new Int32Array(dw);
  const bdelta = new Int32Array(dw);
  for (let x = 0; x < dw; x++) {
    adelta[x] = roundHalfEven(A11 * x * 1024);
    bdelta[x] = roundHalfEven(A21 * x * 1024);
  }
  for (let y = 0; y < dh; y++) {
    const X0 = roundHalfEven((A12 * y + b1) * 1024) + 16;
    const Y0 = roundHalfEven((A22 * y + b2) * 1024) + 16;
    for (let x = 0; x < dw; x++) {
      const X = (X0 + adelta[x]) >> 5;
      const Y = (Y0 + bdelta[x]) >> 5;
      const ix = X >> 5;
      const iy = Y >> 5;
      const fx = X & 31;
      const fy = Y & 31;
      const v = at(ix, iy) * (32 - fy) * (32 - fx) + at(ix + 1, iy) * (32 - fy) * fx
        + at(ix, iy + 1) * fy * (32 - fx) + at(ix + 1, iy + 1) * fy * fx;
      out[y * dw + x] = (v * 32 + 16384) >> 15;
    }
  }
  return out;
}

/** The 2x3 similarity (rotation, uniform scale, shift) taking points `src` nearest to `dst` (least squares; Umeyama). */
export function similarity(src, dst) {
  const n = src.length / 2;
  let msx = 0; let msy = 0; let mdx = 0; let mdy = 0;
  for (let i = 0; i < n; i++) {
    msx += src[2 * i]; msy += src[2 * i + 1]; mdx += dst[2 * i]; mdy += dst[2 * i + 1];
  }
  msx /= n; msy /= n; mdx /= n; mdy /= n;
  let a00 = 0; let a01 = 0; let a10 = 0; let a11 = 0; let vs = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[2 * i] - msx; const sy = src[2 * i + 1] - msy;
    const dx = dst[2 * i] - mdx; const dy = dst[2 * i + 1] - mdy;
    a00 += dx * sx; a01 += dx * sy; a10 += dy * sx; a11 += dy * sy; vs += sx * sx + sy * sy;
  }
  // the best proper rotation of a 2x2 covariance has a closed form; Umeyama's SVD gives the same
  const c = a00 + a11;
  const s = a10 - a01;
  const r = Math.hypot(c, s) || 1;
  const k = r / n / Math.max(vs / n, 1e-12);
  const [cos, sin] = [c / r, s / r];
  return [k * cos, -k * sin, mdx - k * (cos * msx - sin * msy), k * sin, k * cos, mdy - k * (sin * msx + cos * msy)];
}

/**
 * fer-batch's `frame_face`: the face as a gray crop framed as the model's training crops were. With
 * the framing's box rule for `detector`, the square it places around the box; else a landmark warp;
 * else the framing's own box rule; `scale` widens or tightens the square about its centre. Cut at the
 * face's resolution (16 to 1024 px), edges repeated, then area-averaged down to `framing.size`.
 * Without a framing, a square around the box with a 10 % margin, clipped to the picture.
 * Returns { data, width, height }.
 */
export function frameFace(gray, width, height, face, framing, detector = 'yunet', scale = 1.0) {
  if (!framing) return cropSquare(gray, width, height, face);
  const rule = framing.detector_boxes?.[detector];
  let unit;
  if (!rule && face.landmarks) {
    unit = similarity(face.landmarks, framing.landmarks);
    if (scale !== 1.0) unit = [unit[0] / scale, unit[1] / scale, (unit[2] - 0.5) / scale + 0.5,
      unit[3] / scale, unit[4] / scale, (unit[5] - 0.5) / scale + 0.5];
  } else {
    const [dx, dy, ruleScale] = rule ?? framing.box;
    const long = Math.max(face.w, face.h);
    const side = ruleScale * scale * long;
    const x0 = face.x + face.w / 2 + dx * long - side / 2;
    const y0 = face.y + face.h / 2 + dy * long - side / 2;
    unit = [1 / side, 0, -x0 / side, 0, 1 / side, -y0 / side];
  }
  const [lo, hi] = DEFAULTS.framedSides;
  const side = Math.min(hi, Math.max(lo, roundHalfEven(1 / Math.hypot(unit[0], unit[3]))));
  const crop = warpAffine(gray, width, height, unit.map((v) => v * side), side, side);
  const size = framing.size;
  if (size != null && side > size) {
    return { data: resizeArea({ data: crop, width: side, height: side, channels: 1 }, size, size, 1), width: size, height: size };
  }
  return { data: crop, width: side, height: side };
}

/** fer-batch's `crop_face`: a square around the box with a 10 % margin, clipped to the picture. */
function cropSquare(gray, width, height, face) {
  const side = Math.max(face.w, face.h) * (1 + 2 * DEFAULTS.cropMargin);
  const cx = face.x + face.w / 2;
  const cy = face.y + face.h / 2;
  const x0 = Math.max(0, roundHalfEven(cx - side / 2));
  const y0 = Math.max(0, roundHalfEven(cy - side / 2));
  const x1 = Math.min(width, roundHalfEven(cx + side / 2));
  const y1 = Math.min(height, roundHalfEven(cy + side / 2));
  const data = new Uint8Array((x1 - x0) * (y1 - y0));
  for (let y = y0; y < y1; y++) data.set(gray.subarray(y * width + x0, y * width + x1), (y - y0) * (x1 - x0));
  return { data, width: x1 - x0, height: y1 - y0 };
}

/**
 * The side multiples of the crops a face gets: a picture's framed face is seen at its framed side and
 * `spread` wider and tighter, and the three answers averaged (fer-batch's views); a video or camera
 * frame, or a model without a framing, gets one crop.
 */
export function viewScales(framing, still, spread = DEFAULTS.cropSpread) {
  return framing && still && spread ? [1.0, 1.0 - spread, 1.0 + spread] : [1.0];
}
