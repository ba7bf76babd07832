// Faces followed from frame to frame, and their probabilities smoothed, so that camera labels do not
// flicker. The matching is fer-batch's (fer_export/batch/tracking.py): boxes to live tracks by IoU,
// best pairs first, then by how far the face moved; a track unseen for `maxMissed` frames ends.

function iou(a, b) {
  const ix = Math.max(0, Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]));
  const inter = ix * iy;
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

/** Centre distance in mean box sides; infinite when one box is over 1.5x the other's size. */
function shift(a, b) {
  const sa = Math.sqrt(a[2] * a[3]);
  const sb = Math.sqrt(b[2] * b[3]);
  if (Math.min(sa, sb) <= 0 || Math.max(sa, sb) > 1.5 * Math.min(sa, sb)) return Infinity;
  const dx = a[0] + a[2] / 2 - (b[0] + b[2] / 2);
  const dy = a[1] + a[3] / 2 - (b[1] + b[3] / 2);
  return Math.hypot(dx, dy) / ((sa + sb) / 2);
}

export class FaceTracker {
  /**
   * `smoothing`: the weight a track's earlier probabilities keep against a new frame's (an
   * exponential moving average; 0 = none). 0.6 settles within about five frames.
   */
  constructor({ minIou = 0.3, maxMissed = 5, maxShift = 0.8, smoothing = 0.6 } = {}) {
    Object.assign(this, { minIou, maxMissed, maxShift, smoothing });
    this.tracks = new Map(); // id -> { box, missed, probs }
    this.nextId = 0;
  }

  /** Track ids for `boxes` ([x, y, w, h] each), in order. */
  match(boxes) {
    const ids = boxes.map(() => null);
    const used = new Set();
    const take = (pairs, limitOk) => {
      for (const [score, id, j] of pairs) {
        if (!limitOk(score)) break;
        if (!used.has(id) && ids[j] === null) {
          ids[j] = id;
          used.add(id);
        }
      }
    };
    const overlaps = [];
    for (const [id, t] of this.tracks) boxes.forEach((b, j) => overlaps.push([iou(b, t.box), id, j]));
    take(overlaps.sort((p, q) => q[0] - p[0] || q[1] - p[1] || q[2] - p[2]), (s) => s >= this.minIou);
    const moves = [];
    for (const [id, t] of this.tracks) {
      if (!used.has(id)) boxes.forEach((b, j) => { if (ids[j] === null) moves.push([shift(b, t.box), id, j]); });
    }
    take(moves.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2]), (s) => s <= this.maxShift);
    return ids.map((id) => (id === null ? this.nextId++ : id));
  }

  /**
   * Faces of one frame ({ x, y, w, h, probs } each) with `track` and `smoothed` probabilities added;
   * tracks not seen age, and end after `maxMissed` frames.
   */
  update(faces) {
    const ids = this.match(faces.map((f) => [f.x, f.y, f.w, f.h]));
    const out = faces.map((f, j) => {
      const earlier = this.tracks.get(ids[j])?.probs;
      const k = this.smoothing;
      const smoothed = earlier ? f.probs.map((p, i) => k * earlier[i] + (1 - k) * p) : f.probs.slice();
      this.tracks.set(ids[j], { box: [f.x, f.y, f.w, f.h], missed: 0, probs: smoothed, seen: true });
      return { ...f, track: ids[j], smoothed };
    });
    for (const [id, t] of this.tracks) {
      if (t.seen) t.seen = false;
      else if (t.missed >= this.maxMissed) this.tracks.delete(id);
      else t.missed += 1;
    }
    return out;
  }
}
