#!/usr/bin/env node
// Serve examples/ for the page, cross-origin isolated, on this machine only.
//
//   node serve.mjs [--port 8000] [--model ../model.onnx] [--yunet FILE]      # then open http://127.0.0.1:8000/web/
//
// Every response carries Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy:
// require-corp, which make the page cross-origin isolated: onnxruntime-web may then run WebAssembly
// threads (SharedArrayBuffer). `python -m http.server` sends neither header, and the page then runs
// on one thread.
//
// /web/model.onnx is --model (else web/model.onnx, if there is one) and /web/yunet.onnx is --yunet
// (else web/yunet.onnx, else the YuNet file fer-export ships, ../fer_export/models/). Nothing else
// outside examples/ is served. --port 0 picks a free port; the first line printed is the page's URL.
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('.', import.meta.url));
const BUNDLED_YUNET = fileURLToPath(new URL('../fer_export/models/face_detection_yunet_2026may.onnx', import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm', '.onnx': 'application/octet-stream', '.json': 'application/json', '.png': 'image/png',
  '.css': 'text/css; charset=utf-8', '.map': 'application/json',
};
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** The file a URL path names: the two model aliases, else a file under examples/ (never above it). */
function fileFor(path, aliases) {
  if (aliases[path]) return aliases[path];
  const file = normalize(join(ROOT, decodeURIComponent(path)));
  if (file !== resolve(ROOT) && !file.startsWith(resolve(ROOT) + sep)) return null;
  if (existsSync(file) && statSync(file).isDirectory()) return join(file, 'index.html');
  return file;
}

export function serve({ port = 8000, host = '127.0.0.1', model, yunet } = {}) {
  const aliases = {};
  const pageModel = model ?? join(ROOT, 'web', 'model.onnx');
  if (existsSync(pageModel)) aliases['/web/model.onnx'] = resolve(pageModel);
  const pageYunet = yunet ?? [join(ROOT, 'web', 'yunet.onnx'), BUNDLED_YUNET].find((f) => existsSync(f));
  if (pageYunet) aliases['/web/yunet.onnx'] = resolve(pageYunet);
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://localhost').pathname;
    if (path.endsWith('/') === false && existsSync(join(ROOT, path)) && statSync(join(ROOT, path)).isDirectory()) {
      res.writeHead(301, { Location: `${path}/` });
      res.end();
      return;
    }
    const file = fileFor(path, aliases);
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain', ...ISOLATION_HEADERS });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Content-Length': statSync(file).size, 'Cache-Control': 'no-cache', ...ISOLATION_HEADERS });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((done, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => done(server));
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '8000' }, host: { type: 'string' },
    model: { type: 'string' }, yunet: { type: 'string' } } });
  for (const name of ['model', 'yunet']) {
    if (values[name] && !existsSync(values[name])) {
      console.error(`error: --${name} ${values[name]}: no such file`);
      process.exit(2);
    }
  }
  try {
    const server = await serve({ port: Number(values.port), host: values.host, model: values.model, yunet: values.yunet });
    const { address, port } = server.address();
    console.log(`http://${address}:${port}/web/`);
  } catch (err) {
    console.error(`error: cannot listen on port ${values.port}: ${err.message}`);
    process.exit(2);
  }
}
