// The model's contract, read from the .onnx file itself (Node and browser alike).
//
// fer-export writes the contract into the ONNX model's `metadata_props`: `fer_export.spec` (JSON:
// labels in output order, input size, ...) and `fer_export.input` ("uint8": the graph takes raw
// grayscale crops and resizes and normalises inside; "normalized": it takes float tensors a host
// would have to prepare). onnxruntime-node and onnxruntime-web do not expose `metadata_props`, so
// this reads them from the ModelProto's protobuf bytes: field 14, repeated {1: key, 2: value}.

const METADATA_PROPS = 14;
const decoder = new TextDecoder();

function readVarint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= bytes.length) throw new Error('truncated varint');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale; // plain arithmetic: lengths may pass 2^31
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
}

/** Top-level fields of one protobuf message: yields [fieldNumber, wireType, value]. */
function* fields(bytes) {
  let pos = 0;
  while (pos < bytes.length) {
    let key;
    [key, pos] = readVarint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      let v;
      [v, pos] = readVarint(bytes, pos);
      yield [field, wire, v];
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(bytes, pos);
      if (pos + len > bytes.length) throw new Error('truncated field');
      yield [field, wire, bytes.subarray(pos, pos + len)];
      pos += len;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
}

/** `metadata_props` of an ONNX model as a plain object. */
export function readMetadata(modelBytes) {
  const bytes = modelBytes instanceof Uint8Array ? modelBytes : new Uint8Array(modelBytes);
  const meta = {};
  for (const [field, wire, value] of fields(bytes)) {
    if (field !== METADATA_PROPS || wire !== 2) continue;
    let key = '';
    let val = '';
    for (const [f, w, v] of fields(value)) {
      if (w !== 2) continue;
      if (f === 1) key = decoder.decode(v);
      if (f === 2) val = decoder.decode(v);
    }
    meta[key] = val;
  }
  return meta;
}

/**
 * The contract a host needs: labels in output order and the input format. Throws an Error that
 * says what to do when the file was not exported by fer-export or wants host-side preprocessing.
 */
export function readContract(modelBytes, name = 'model') {
  let meta;
  try {
    meta = readMetadata(modelBytes);
  } catch (err) {
    throw new Error(`${name}: not an ONNX model (${err.message})`);
  }
  if (!('fer_export.spec' in meta)) {
    throw new Error(`${name}: has no 'fer_export.spec' metadata, so its labels are unknown; ` +
      'export it with `fer-export onnx CHECKPOINT --with-preprocessing`');
  }
  const spec = JSON.parse(meta['fer_export.spec']);
  const input = meta['fer_export.input'] ?? 'normalized';
  if (input !== 'uint8') {
    throw new Error(`${name}: takes '${input}' input (float, resized and normalised by the host); ` +
      'this example feeds raw grayscale crops, so export the graph with preprocessing inside: ' +
      '`fer-export onnx CHECKPOINT --with-preprocessing`');
  }
  return { labels: spec.labels, input, spec, tta: meta['fer_export.tta'] ?? 'none', metadata: meta };
}

/**
 * Luma of RGB(A) pixels as OpenCV 4.x's COLOR_RGB2GRAY computes it (ITU-R BT.601 weights, 15-bit fixed
 * point). Gray images (R = G = B) come out unchanged. For colour files the Python runtime lets the
 * decoder (libjpeg, libpng) make gray, which can differ from this by one gray level.
 */
export function toGray(pixels, width, height, channels) {
  const gray = new Uint8Array(width * height);
  if (channels === 1) {
    gray.set(pixels.subarray(0, width * height));
    return gray;
  }
  for (let i = 0, j = 0; i < gray.length; i++, j += channels) {
    gray[i] = (pixels[j] * 9798 + pixels[j + 1] * 19235 + pixels[j + 2] * 3735 + 16384) >> 15;
  }
  return gray;
}
