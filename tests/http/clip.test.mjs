// fixture: clip-tiny
// CLIP over HTTP against the real binary (--clip on the clip-tiny fixture):
// /v1/classify via multipart (curl/browser style) and via JSON (bare base64
// and data: URIs, with prompt ensembles), /v1/embeddings through the official
// openai client (its default base64 encoding and 'float') and the image
// extension, all compared with OpenAI CLIP's float64 references in
// clip-tiny/ref; the label cache seen in /health; a table of bad inputs, each
// answered with its 4xx while the server keeps serving.
// Tolerances (clip-tiny/README.md; pixels are bit-exact, see
// test_clip_image): logits 1e-3, probabilities 1e-4, unit embeddings 1e-5.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { startServer, post, assertOpenAIError, fixturePath } from './harness.mjs';

const dir = fixturePath('clip-tiny');
const zeroshot = JSON.parse(readFileSync(`${dir}/ref/zeroshot.json`, 'utf8'));
const images = JSON.parse(readFileSync(`${dir}/ref/images.json`, 'utf8')).images;
const texts = JSON.parse(readFileSync(`${dir}/ref/text.json`, 'utf8')).items;
const imageBytes = images.map((im) => readFileSync(`${dir}/${im.file}`));
const MAX_BODY = 2000000;
let srv;

// Reads the F32 tensors of a safetensors file: name -> {shape, data}.
function readSafetensors(path) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue;
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    const data = new Float32Array(bytes.length / 4);
    for (let i = 0; i < data.length; i++) data[i] = bytes.readFloatLE(4 * i);
    out[name] = { shape: t.shape, data };
  }
  return out;
}
const refImg = readSafetensors(`${dir}/ref/image_embeds.safetensors`);
const refTxt = readSafetensors(`${dir}/ref/text.safetensors`);
const E = refImg.image_embeds_norm.shape[1];
const row = (t, i) => Array.from(t.data.subarray(i * E, (i + 1) * E));
const maxAbs = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

const dataUri = (i) => `data:${images[i].file.endsWith('.png') ? 'image/png' : 'image/jpeg'};base64,${imageBytes[i].toString('base64')}`;

// Checks one classify reply against the reference row of a label set.
function checkScores(body, set, i, what) {
  const res = set.results[i];
  assert.equal(body.model, 'clip-tiny');
  assert.equal(body.labels.length, set.labels.length, what);
  for (let k = 0; k < body.labels.length; k++) {
    const got = body.labels[k];
    const c = set.labels.indexOf(got.label);
    assert.ok(c >= 0, `${what}: unknown label ${got.label}`);
    assert.ok(Math.abs(got.probability - res.probs[c]) <= 1e-4, `${what} ${got.label}: p ${got.probability} vs ${res.probs[c]}`);
    assert.ok(Math.abs(got.logit - res.logits_per_image[c]) <= 1e-3, `${what} ${got.label}: logit ${got.logit} vs ${res.logits_per_image[c]}`);
    if (k > 0) assert.ok(body.labels[k - 1].probability >= got.probability, `${what}: not sorted`);
  }
  assert.equal(body.labels[0].label, res.argmax, `${what}: top-1`);
}

const setNamed = (name) => zeroshot.label_sets.find((s) => s.name === name);

before(async () => {
  srv = await startServer({ args: ['--clip', dir, '--clip-device', 'cpu', '--clip-max-body', String(MAX_BODY), '--clip-max-labels', '2048'] });
});

after(async () => {
  if (srv.alive()) assert.equal(await srv.stop(), 0);
});

test('GET /v1/models and /health list the CLIP model', async () => {
  const models = await (await fetch(`${srv.url}/v1/models`)).json();
  assert.ok(models.data.some((m) => m.id === 'clip-tiny'), JSON.stringify(models));
  const one = await fetch(`${srv.url}/v1/models/clip-tiny`);
  assert.equal(one.status, 200);
  const h = await (await fetch(`${srv.url}/health`)).json();
  assert.equal(h.clip.model, 'clip-tiny');
  assert.equal(h.clip.embed_dim, E);
  assert.equal(h.clip.image_size, 32);
});

test('classify: multipart upload, every image, label set "three"', async () => {
  const set = setNamed('three');
  for (let i = 0; i < images.length; i++) {
    const form = new FormData();
    form.append('image', new Blob([imageBytes[i]]), images[i].file.split('/').pop());
    form.append('labels', JSON.stringify(set.labels));
    const r = await fetch(`${srv.url}/v1/classify`, { method: 'POST', body: form });
    const body = await r.json();
    assert.equal(r.status, 200, JSON.stringify(body));
    checkScores(body, set, i, `multipart ${images[i].name}`);
  }
});

test('classify: JSON with data: URIs and prompt ensembles ("ensemble3"), bare base64 ("cifar10")', async () => {
  for (const [name, enc] of [['ensemble3', dataUri], ['cifar10', (i) => imageBytes[i].toString('base64')]]) {
    const set = setNamed(name);
    for (let i = 0; i < images.length; i++) {
      const body = { model: 'clip-tiny', image: enc(i), labels: set.labels };
      if (name === 'ensemble3') body.templates = set.templates;
      const r = await post(`${srv.url}/v1/classify`, body);
      assert.equal(r.status, 200, r.text);
      checkScores(r.json, set, i, `${name} ${images[i].name}`);
    }
  }
});

test('classify: a repeated label set is served from the cache', async () => {
  const set = setNamed('cifar10');
  const health = async () => (await (await fetch(`${srv.url}/health`)).json()).clip;
  const labels = set.labels.map((l) => `${l} (cache test)`);
  const a = await post(`${srv.url}/v1/classify`, { image: dataUri(0), labels });
  const h1 = await health();
  const b = await post(`${srv.url}/v1/classify`, { image: dataUri(0), labels });
  const h2 = await health();
  assert.equal(a.status, 200);
  assert.deepEqual(b.json, a.json);
  assert.equal(h2.cache_hits - h1.cache_hits, labels.length, 'every prompt a cache hit');
  assert.equal(h2.texts_total, h1.texts_total, 'no text went through the tower');
});

test('embeddings: texts through the openai client (base64 by default, and float)', async () => {
  const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused' });
  const input = texts.map((t) => t.text);
  const want = refTxt.text_embeds_norm;
  for (const encoding_format of [undefined, 'float']) {
    const r = await client.embeddings.create({ model: 'clip-tiny', input, ...(encoding_format ? { encoding_format } : {}) });
    assert.equal(r.object, 'list');
    assert.equal(r.data.length, input.length);
    let worst = 0;
    r.data.forEach((d, i) => {
      assert.equal(d.index, i);
      assert.equal(d.embedding.length, E);
      worst = Math.max(worst, maxAbs(d.embedding, row(want, i)));
    });
    assert.ok(worst <= 1e-5, `text embeddings (${encoding_format ?? 'base64'}) max |err| ${worst}`);
    const tokens = texts.reduce((s, t) => s + t.eot_index + 1, 0);
    assert.equal(r.usage.prompt_tokens, tokens);
  }
  const one = await client.embeddings.create({ model: 'clip-tiny', input: texts[3].text });
  assert.ok(maxAbs(one.data[0].embedding, row(want, 3)) <= 1e-5);
});

test('embeddings: images (extension) and mixed inputs keep their order', async () => {
  const input = images.map((_, i) => ({ image: i % 2 ? dataUri(i) : imageBytes[i].toString('base64') }));
  const r = await post(`${srv.url}/v1/embeddings`, { model: 'clip-tiny', input });
  assert.equal(r.status, 200, r.text);
  let worst = 0;
  r.json.data.forEach((d, i) => (worst = Math.max(worst, maxAbs(d.embedding, row(refImg.image_embeds_norm, i)))));
  assert.ok(worst <= 1e-5, `image embeddings max |err| ${worst}`);
  const mixed = await post(`${srv.url}/v1/embeddings`, { model: 'clip-tiny', input: [{ image: dataUri(4) }, texts[0].text] });
  assert.equal(mixed.status, 200, mixed.text);
  assert.ok(maxAbs(mixed.json.data[0].embedding, row(refImg.image_embeds_norm, 4)) <= 1e-5);
  assert.ok(maxAbs(mixed.json.data[1].embedding, row(refTxt.text_embeds_norm, 0)) <= 1e-5);
  const raw = await post(`${srv.url}/v1/embeddings`, { model: 'clip-tiny', input: [{ image: dataUri(4) }], normalize: false });
  assert.ok(maxAbs(raw.json.data[0].embedding, row(refImg.image_embeds, 4)) <= 1e-4, 'unnormalised image embedding');
});

// A PNG signature and an IHDR claiming w x h (valid CRC), nothing after it.
function pngHeader(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const ihdr = Buffer.alloc(17);
  ihdr.write('IHDR', 0, 'ascii');
  ihdr.writeUInt32BE(w, 4);
  ihdr.writeUInt32BE(h, 8);
  ihdr.set([8, 2, 0, 0, 0], 12);
  let crc = 0xffffffff;
  for (const b of ihdr) crc = crcTable[(crc ^ b) & 0xff] ^ (crc >>> 8);
  const out = Buffer.alloc(33);
  out.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 0);
  out.writeUInt32BE(13, 8);
  out.set(ihdr, 12);
  out.writeUInt32BE((crc ^ 0xffffffff) >>> 0, 29);
  return out;
}

function multipart(parts) {
  const form = new FormData();
  for (const [k, v] of parts) {
    if (typeof v === 'string') form.append(k, v);
    else form.append(k, new Blob([v]), 'upload.bin');
  }
  return form;
}

test('bad inputs get the right 4xx and the server keeps serving', async () => {
  const jpeg = imageBytes[images.findIndex((im) => im.name === 'jpeg_baseline420')];
  const labels = ['dog', 'cat'];
  const many = Array.from({ length: 10000 }, (_, i) => `label ${i}`);
  const huge = pngHeader(100000, 100000);
  // [name, path, body: object (JSON) | FormData | string, status, code, param, content type]
  const table = [
    ['not an image', '/v1/classify', { image: Buffer.from('hello, world').toString('base64'), labels }, 400, 'invalid_value', 'image'],
    ['not an image (multipart)', '/v1/classify', multipart([['image', Buffer.from('plain text')], ['labels', '["a"]']]), 400, 'invalid_value', 'image'],
    ['truncated JPEG', '/v1/classify', { image: jpeg.subarray(0, jpeg.length >> 1).toString('base64'), labels }, 400, 'invalid_value', 'image'],
    ['100000x100000 PNG header', '/v1/classify', { image: huge.toString('base64'), labels }, 413, 'request_too_large', 'image'],
    ['100000x100000 PNG header (multipart)', '/v1/classify', multipart([['image', huge], ['labels', '["a"]']]), 413, 'request_too_large', 'image'],
    ['empty labels', '/v1/classify', { image: dataUri(0), labels: [] }, 400, 'invalid_value', 'labels'],
    ['10000 labels', '/v1/classify', { image: dataUri(0), labels: many }, 400, 'invalid_value', 'labels'],
    ['bad base64', '/v1/classify', { image: 'iVBORw0K!!!@@@', labels }, 400, 'invalid_value', 'image'],
    ['data: URI that is not base64', '/v1/classify', { image: 'data:image/png,abc', labels }, 400, 'invalid_value', 'image'],
    ['no image', '/v1/classify', { labels }, 400, 'invalid_value', 'image'],
    ['labels a string', '/v1/classify', { image: dataUri(0), labels: 'dog' }, 400, 'invalid_value', 'labels'],
    ['a label not a string', '/v1/classify', { image: dataUri(0), labels: ['dog', 5] }, 400, 'invalid_value', 'labels'],
    ['an empty label', '/v1/classify', { image: dataUri(0), labels: ['dog', ''] }, 400, 'invalid_value', 'labels'],
    ['template without {}', '/v1/classify', { image: dataUri(0), labels, templates: ['a photo'] }, 400, 'invalid_value', 'templates'],
    ['unknown model', '/v1/classify', { model: 'gpt-4', image: dataUri(0), labels }, 404, 'model_not_found', 'model'],
    ['multipart without an image', '/v1/classify', multipart([['labels', '["a"]']]), 400, 'invalid_value', 'image'],
    ['multipart labels not JSON', '/v1/classify', multipart([['image', jpeg], ['labels', 'dog, cat']]), 400, 'invalid_value', 'labels'],
    ['malformed multipart', '/v1/classify', '--x\r\nbroken', 400, 'invalid_value', null, 'multipart/form-data; boundary=x'],
    ['malformed JSON', '/v1/classify', '{"image": ', 400, 'invalid_json', null],
    ['XML body', '/v1/classify', '<image/>', 415, 'unsupported_media_type', null, 'application/xml'],
    ['body over --clip-max-body', '/v1/classify', { image: Buffer.alloc(MAX_BODY).toString('base64'), labels }, 413, 'request_too_large', null],
    ['embeddings without model', '/v1/embeddings', { input: 'x' }, 400, 'invalid_value', 'model'],
    ['embeddings, unknown model', '/v1/embeddings', { model: 'text-embedding-3-small', input: 'x' }, 404, 'model_not_found', 'model'],
    ['embeddings, no input', '/v1/embeddings', { model: 'clip-tiny' }, 400, 'invalid_value', 'input'],
    ['embeddings, empty input', '/v1/embeddings', { model: 'clip-tiny', input: [] }, 400, 'invalid_value', 'input'],
    ['embeddings, token ids', '/v1/embeddings', { model: 'clip-tiny', input: [1, 2, 3] }, 400, 'unsupported_value', 'input'],
    ['embeddings, input a number', '/v1/embeddings', { model: 'clip-tiny', input: [{ text: 'x' }] }, 400, 'invalid_value', 'input'],
    ['embeddings, dimensions', '/v1/embeddings', { model: 'clip-tiny', input: 'x', dimensions: 7 }, 400, 'unsupported_value', 'dimensions'],
    ['embeddings, encoding_format', '/v1/embeddings', { model: 'clip-tiny', input: 'x', encoding_format: 'hex' }, 400, 'invalid_value', 'encoding_format'],
    ['embeddings, bad image base64', '/v1/embeddings', { model: 'clip-tiny', input: [{ image: '%%%' }] }, 400, 'invalid_value', 'input[0].image'],
    ['embeddings, truncated image', '/v1/embeddings', { model: 'clip-tiny', input: [{ image: jpeg.subarray(0, 300).toString('base64') }] }, 400, 'invalid_value', 'input'],
    ['embeddings, invalid UTF-8 is impossible in JSON: a lone surrogate', '/v1/embeddings', '{"model":"clip-tiny","input":"\\ud800"}', 400, 'invalid_json', null],
  ];
  for (const [name, path, body, status, code, param, ctype] of table) {
    let res;
    if (body instanceof FormData) {
      const r = await fetch(`${srv.url}${path}`, { method: 'POST', body });
      const text = await r.text();
      res = { status: r.status, text, json: JSON.parse(text) };
    } else {
      res = await post(`${srv.url}${path}`, body, ctype ? { 'Content-Type': ctype } : {});
    }
    assertOpenAIError(assert, res, status, { code, param: param === undefined ? undefined : param });
    assert.ok(srv.alive(), `server died on: ${name}`);
  }
  const ok = await post(`${srv.url}/v1/classify`, { image: dataUri(7), labels: setNamed('three').labels });
  assert.equal(ok.status, 200, ok.text);
  checkScores(ok.json, setNamed('three'), 7, 'after the bad inputs');
});

test('concurrent classify requests get the serial answers', async () => {
  const set = setNamed('cifar10');
  const runs = await Promise.all(
    Array.from({ length: 12 }, (_, k) => post(`${srv.url}/v1/classify`, { image: dataUri(k % images.length), labels: set.labels })),
  );
  runs.forEach((r, k) => {
    assert.equal(r.status, 200, r.text);
    checkScores(r.json, set, k % images.length, `concurrent ${k}`);
  });
});
