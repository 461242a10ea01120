// Bad input against the real binary: every request in the table gets the
// right status and an OpenAI-shaped error body naming the parameter, and the
// server still serves a normal request afterwards. Also: the official client
// maps our errors to its error classes, API-key auth, the concurrent
// generation cap (503), a client leaving mid-stream, and shutdown while a
// stream is open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, post, assertOpenAIError } from './harness.mjs';

const MAX_BODY = 65536;
let srv, model, ctxLen;

before(async () => {
  srv = await startServer({ args: ['--max-body', String(MAX_BODY), '--max-streams', '2', '--http-threads', '8', '--shutdown-grace', '0'] });
  const h = await (await fetch(`${srv.url}/health`)).json();
  model = h.model;
  ctxLen = h.ctx_len;
});

after(async () => {
  if (srv.alive()) await srv.stop();
});

const chat = (extra) => ({ model: () => model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, ...extra });
const cmpl = (extra) => ({ model: () => model, prompt: 'hi', max_tokens: 2, ...extra });
const resolve = (b) => (typeof b === 'string' ? b : JSON.stringify({ ...b, model: typeof b.model === 'function' ? b.model() : b.model }));

// [name, path, body (object or raw string), status, code, param, headers]
const table = [
  ['malformed JSON', '/v1/chat/completions', '{"model": "x", "messages": [', 400, 'invalid_json', null],
  ['body is an array', '/v1/completions', '[1, 2]', 400, 'invalid_json', null],
  ['empty body', '/v1/completions', '', 400, 'invalid_json', null],
  // 3000 levels once overflowed a CivetWeb worker's stack inside the JSON parser
  ['deeply nested JSON', '/v1/completions', `{"model":"x","prompt":${'['.repeat(3000)}${']'.repeat(3000)}}`, 400, 'invalid_json', null],
  ['multipart content type', '/v1/completions', () => resolve(cmpl()), 415, 'unsupported_media_type', null, { 'Content-Type': 'multipart/form-data; boundary=x' }],
  ['missing messages', '/v1/chat/completions', { model: () => model, max_tokens: 2 }, 400, 'invalid_value', 'messages'],
  ['empty messages', '/v1/chat/completions', chat({ messages: [] }), 400, 'invalid_value', 'messages'],
  ['messages not an array', '/v1/chat/completions', chat({ messages: 'hi' }), 400, 'invalid_value', 'messages'],
  ['message content a number', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 5 }] }), 400, 'invalid_value', 'messages'],
  ['unknown role', '/v1/chat/completions', chat({ messages: [{ role: 'wizard', content: 'x' }] }), 400, 'invalid_value', 'messages'],
  ['image part', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AA==' } }] }] }), 400, 'unsupported_value', 'messages'],
  ['tools', '/v1/chat/completions', chat({ tools: [{ type: 'function', function: { name: 'f' } }] }), 400, 'unsupported_value', 'tools'],
  ['missing model', '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] }, 400, 'invalid_value', 'model'],
  ['unknown model (chat)', '/v1/chat/completions', chat({ model: 'no-such-model' }), 404, 'model_not_found', 'model'],
  ['unknown model (completions)', '/v1/completions', cmpl({ model: 'no-such-model' }), 404, 'model_not_found', 'model'],
  ['missing prompt', '/v1/completions', { model: () => model }, 400, 'invalid_value', 'prompt'],
  ['prompt an object', '/v1/completions', cmpl({ prompt: {} }), 400, 'invalid_value', 'prompt'],
  ['two prompts', '/v1/completions', cmpl({ prompt: ['a', 'b'] }), 400, 'unsupported_value', 'prompt'],
  ['token id out of range', '/v1/completions', cmpl({ prompt: [1, 99999999] }), 400, 'invalid_value', 'prompt'],
  ['negative token id', '/v1/completions', cmpl({ prompt: [-1] }), 400, 'invalid_value', 'prompt'],
  ['max_tokens 0', '/v1/completions', cmpl({ max_tokens: 0 }), 400, 'invalid_value', 'max_tokens'],
  ['max_tokens a string', '/v1/completions', cmpl({ max_tokens: '10' }), 400, 'invalid_value', 'max_tokens'],
  ['max_tokens a fraction', '/v1/chat/completions', chat({ max_tokens: 2.5 }), 400, 'invalid_value', 'max_tokens'],
  ['max_completion_tokens -1', '/v1/chat/completions', chat({ max_completion_tokens: -1 }), 400, 'invalid_value', 'max_completion_tokens'],
  ['temperature 5', '/v1/chat/completions', chat({ temperature: 5 }), 400, 'invalid_value', 'temperature'],
  ['temperature a string', '/v1/completions', cmpl({ temperature: 'hot' }), 400, 'invalid_value', 'temperature'],
  ['top_p 0', '/v1/chat/completions', chat({ top_p: 0 }), 400, 'invalid_value', 'top_p'],
  ['top_p 1.5', '/v1/completions', cmpl({ top_p: 1.5 }), 400, 'invalid_value', 'top_p'],
  ['n 2', '/v1/chat/completions', chat({ n: 2 }), 400, 'unsupported_value', 'n'],
  ['stop with 5 entries', '/v1/chat/completions', chat({ stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'invalid_value', 'stop'],
  ['stop a number', '/v1/completions', cmpl({ stop: 7 }), 400, 'invalid_value', 'stop'],
  ['stop entry empty', '/v1/completions', cmpl({ stop: [''] }), 400, 'invalid_value', 'stop'],
  ['stream a string', '/v1/completions', cmpl({ stream: 'yes' }), 400, 'invalid_value', 'stream'],
  ['stream_options without stream', '/v1/chat/completions', chat({ stream_options: { include_usage: true } }), 400, 'invalid_value', 'stream_options'],
  ['seed a fraction', '/v1/completions', cmpl({ seed: 1.5 }), 400, 'invalid_value', 'seed'],
  ['presence_penalty 1', '/v1/chat/completions', chat({ presence_penalty: 1 }), 400, 'unsupported_value', 'presence_penalty'],
  ['frequency_penalty a string', '/v1/completions', cmpl({ frequency_penalty: 'x' }), 400, 'invalid_value', 'frequency_penalty'],
  ['logit_bias', '/v1/completions', cmpl({ logit_bias: { 5: 10 } }), 400, 'unsupported_value', 'logit_bias'],
  ['logprobs 50', '/v1/completions', cmpl({ logprobs: 50 }), 400, 'invalid_value', 'logprobs'],
  ['top_logprobs without logprobs', '/v1/chat/completions', chat({ top_logprobs: 2 }), 400, 'invalid_value', 'top_logprobs'],
  ['echo with token ids', '/v1/completions', cmpl({ prompt: [1, 2], echo: true }), 400, 'unsupported_value', 'echo'],
  ['response_format json', '/v1/chat/completions', chat({ response_format: { type: 'json_object' } }), 400, 'unsupported_value', 'response_format'],
];

test('bad requests: status, OpenAI error body, param', async () => {
  for (const [name, path, body, status, code, param, headers] of table) {
    const raw = typeof body === 'function' ? body() : resolve(body);
    const r = await post(`${srv.url}${path}`, raw, headers);
    try {
      assertOpenAIError(assert, r, status, { code, param });
    } catch (e) {
      e.message = `${name}: ${e.message}`;
      throw e;
    }
  }
});

test('malformed JSON names the line and column', async () => {
  const r = await post(`${srv.url}/v1/completions`, '{\n  "model": "x",\n  "prompt": nope\n}');
  const e = assertOpenAIError(assert, r, 400, { code: 'invalid_json' });
  assert.match(e.message, /line 3 column \d+/);
});

test('over-long prompt and prompt + max_tokens over the context: 400 with both numbers', async () => {
  const ids = new Array(ctxLen + 5).fill(100);
  let r = await post(`${srv.url}/v1/completions`, { model, prompt: ids, max_tokens: 1 });
  let e = assertOpenAIError(assert, r, 400, { code: 'context_length_exceeded' });
  assert.ok(e.message.includes(String(ctxLen)) && e.message.includes(String(ctxLen + 5)), e.message);
  r = await post(`${srv.url}/v1/completions`, { model, prompt: [1, 100, 101], max_tokens: ctxLen });
  e = assertOpenAIError(assert, r, 400, { code: 'context_length_exceeded', param: 'max_tokens' });
  assert.ok(e.message.includes(String(ctxLen)) && e.message.includes(String(ctxLen + 3)), e.message);
});

test('body over --max-body: 413', async () => {
  const big = JSON.stringify({ model, prompt: 'x'.repeat(MAX_BODY * 2) });
  const r = await post(`${srv.url}/v1/completions`, big);
  assertOpenAIError(assert, r, 413, { code: 'request_too_large' });
});

test('unknown route 404, wrong method 405 with Allow', async () => {
  let r = await fetch(`${srv.url}/v1/nothing-here`);
  let j = await r.json();
  assert.equal(r.status, 404);
  assert.equal(j.error.code, 'unknown_url');
  r = await fetch(`${srv.url}/v1/chat/completions`);
  j = await r.json();
  assert.equal(r.status, 405);
  assert.equal(r.headers.get('allow'), 'POST');
  assert.equal(j.error.code, 'method_not_allowed');
  r = await fetch(`${srv.url}/v1/models`, { method: 'DELETE' });
  assert.equal(r.status, 405);
  await r.arrayBuffer();
  r = await fetch(`${srv.url}/v1/models/not-a-model`);
  j = await r.json();
  assert.equal(r.status, 404);
  assert.equal(j.error.code, 'model_not_found');
});

test('the official client raises its typed errors from our bodies', async () => {
  const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'x', maxRetries: 0 });
  await assert.rejects(
    client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404 && err.code === 'model_not_found' && err.param === 'model',
  );
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], temperature: 9 }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'temperature',
  );
  await assert.rejects(
    client.completions.create({ model, prompt: 'x', n: 3 }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'n',
  );
});

async function openStream(extra = {}) {
  const ac = new AbortController();
  const r = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'long', max_tokens: ctxLen - 8, ignore_eos: true, temperature: 0, stream: true, ...extra }),
    signal: ac.signal,
  });
  assert.equal(r.status, 200);
  const reader = r.body.getReader();
  const first = await reader.read(); // at least one event arrived
  assert.ok(!first.done);
  return { ac, reader };
}

async function metric(name) {
  const t = await (await fetch(`${srv.url}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => '\\' + c)} (\\d+)$`, 'm').exec(t);
  return m ? Number(m[1]) : NaN;
}

async function waitFor(cond, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

test('generation cap: past --max-streams a request gets 503 server_busy, then recovers', async () => {
  const a = await openStream();
  const b = await openStream();
  const r = await post(`${srv.url}/v1/completions`, { model, prompt: 'x', max_tokens: 1 });
  assertOpenAIError(assert, r, 503, { code: 'server_busy' });
  assert.equal(r.headers.get('retry-after'), '1');
  const h = await fetch(`${srv.url}/health`); // probes still answered while both slots are taken
  assert.equal(h.status, 200);
  await h.arrayBuffer();
  a.ac.abort();
  b.ac.abort();
  assert.ok(await waitFor(async () => (await (await fetch(`${srv.url}/health`)).json()).generations === 0));
});

test('client disconnect mid-stream cancels the generation and the server goes on', async () => {
  const before = await metric('peftserve_request_finish_total{reason="client_gone"}');
  const s = await openStream();
  s.ac.abort();
  assert.ok(await waitFor(async () => (await metric('peftserve_request_finish_total{reason="client_gone"}')) === before + 1),
    'client_gone counted');
  assert.ok(await waitFor(async () => (await (await fetch(`${srv.url}/health`)).json()).running === 0), 'engine stopped running it');
  const t1 = await metric('peftserve_engine_generated_tokens_total');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await metric('peftserve_engine_generated_tokens_total'), t1, 'no tokens generated after the cancel');
});

test('after all of that, a normal request is served', async () => {
  const r = await post(`${srv.url}/v1/chat/completions`, { model, messages: [{ role: 'user', content: 'still there?' }], max_tokens: 3 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'chat.completion');
  assert.ok(srv.alive());
});

test('SIGTERM with a stream open: the stream ends with an error event and [DONE], exit 0', async () => {
  const ac = new AbortController();
  const r = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'long', max_tokens: ctxLen - 8, ignore_eos: true, stream: true }),
    signal: ac.signal,
  });
  assert.equal(r.status, 200);
  const body = r.text().catch((e) => `read failed: ${e}`);
  const code = await srv.stop();
  assert.equal(code, 0, srv.log());
  // --shutdown-grace 0: the stream is cut with an error event, then [DONE]
  // (unless it had already finished on its own)
  const text = await body;
  assert.ok(text.trim().endsWith('data: [DONE]'), text.slice(-300));
  if (!text.includes('"finish_reason":"length"')) assert.match(text, /"code":"service_unavailable"/);
});

test('API key: 401 without or with a wrong key on /v1, open /health', async () => {
  const auth = await startServer({ args: ['--api-key', 'sekret-key'] });
  try {
    let r = await fetch(`${auth.url}/v1/models`);
    let j = await r.json();
    assert.equal(r.status, 401);
    assert.equal(j.error.code, 'invalid_api_key');
    assert.match(r.headers.get('www-authenticate') ?? '', /Bearer/);
    r = await fetch(`${auth.url}/v1/models`, { headers: { Authorization: 'Bearer wrong' } });
    assert.equal(r.status, 401);
    await r.arrayBuffer();
    r = await fetch(`${auth.url}/v1/models`, { headers: { Authorization: 'Bearer sekret-key' } });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    r = await fetch(`${auth.url}/health`);
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const bad = new OpenAI({ baseURL: `${auth.url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (err) => err instanceof OpenAI.AuthenticationError);
    const good = new OpenAI({ baseURL: `${auth.url}/v1`, apiKey: 'sekret-key', maxRetries: 0 });
    const m = (await good.models.list()).data[0].id;
    const c = await good.chat.completions.create({ model: m, messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
    assert.equal(c.object, 'chat.completion');
    assert.ok(!auth.log().includes('sekret-key'), 'the key never appears in the log');
  } finally {
    assert.equal(await auth.stop(), 0);
  }
});

test('command line: unknown flag -> usage on stderr, exit 2; --help -> usage on stdout, exit 0', async () => {
  const { spawnSync } = await import('node:child_process');
  const bad = spawnSync(process.env.PEFTSERVE_BIN, ['--no-such-flag'], { encoding: 'utf8', timeout: 30000 });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown flag '--no-such-flag'/);
  assert.match(bad.stderr, /usage: peftserve/);
  const range = spawnSync(process.env.PEFTSERVE_BIN, ['--port', '99999'], { encoding: 'utf8', timeout: 30000 });
  assert.equal(range.status, 2);
  assert.match(range.stderr, /--port is '99999', must be an integer in \[0, 65535\]/);
  const help = spawnSync(process.env.PEFTSERVE_BIN, ['--help'], { encoding: 'utf8', timeout: 30000 });
  assert.equal(help.status, 0);
  for (const f of ['--model', '--host', '--port', '--api-key', '--quant', '--device', '--max-seqs', '--ctx-len', '--adapters-dir'])
    assert.ok(help.stdout.includes(f), `usage lists ${f}`);
});
