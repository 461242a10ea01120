// The happy paths against the real binary on the built-in demo model:
// health/models/metrics, chat and completions with the official openai
// client (plain and streamed), token-id prompts and return_token_ids, seeded
// sampling, greedy batch invariance, stop strings, usage, logprobs, echo.
// The demo model's text is noise, so every check compares the server with
// itself along an axis that must not matter (stream vs not, alone vs
// batched, text vs the same ids) or with the request's own numbers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, post, readSse } from './harness.mjs';

let srv, client, model, health;

before(async () => {
  srv = await startServer();
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
  health = await (await fetch(`${srv.url}/health`)).json();
  model = health.model;
});

after(async () => {
  const code = await srv.stop();
  assert.equal(code, 0, `clean shutdown on SIGTERM, log:\n${srv.log()}`);
});

async function complete(body) {
  const r = await post(`${srv.url}/v1/completions`, { model, ...body });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

test('GET /health reports the demo model and device facts', () => {
  assert.equal(health.status, 'ok');
  assert.equal(health.demo, true);
  assert.equal(typeof health.model, 'string');
  assert.ok(health.model.length > 0);
  assert.ok(['cpu', 'cuda'].includes(health.device), health.device);
  assert.ok(health.ctx_len > 0);
  assert.ok(health.vocab_size > 0);
  assert.equal(health.running, 0);
  assert.ok(health.kv_pages_total > 0 && health.kv_pages_free === health.kv_pages_total, 'KV pages all free at rest');
  assert.equal(health.kv_dtype, 'f32', 'the default KV cache dtype');
});

test('GET /v1/models lists the served model (official client)', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.deepEqual(ids, [model]);
  assert.equal(page.data[0].object, 'model');
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
});

test('chat completion, non-streaming, has OpenAI shape and usage', async () => {
  const r = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'Say hello' }],
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-[0-9a-f]+$/);
  assert.equal(r.model, model);
  assert.ok(Number.isInteger(r.created));
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
  if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat streaming equals non-streaming (greedy), role first, usage last', async () => {
  const params = {
    model,
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: [{ type: 'text', text: 'Count' }, { type: 'text', text: 'to three' }] },
    ],
    max_tokens: 12,
    temperature: 0,
    ignore_eos: true,
  };
  const plain = await client.chat.completions.create(params);
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const ch of stream) chunks.push(ch);
  assert.ok(chunks.length >= 3);
  for (const ch of chunks) {
    assert.equal(ch.object, 'chat.completion.chunk');
    assert.equal(ch.id, chunks[0].id);
    assert.equal(ch.model, model);
  }
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const usageChunk = chunks.at(-1);
  assert.deepEqual(usageChunk.choices, []);
  assert.deepEqual(usageChunk.usage, plain.usage);
  const finals = chunks.filter((ch) => ch.choices[0]?.finish_reason);
  assert.equal(finals.length, 1);
  assert.equal(finals[0].choices[0].finish_reason, plain.choices[0].finish_reason);
  const text = chunks.map((ch) => ch.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, plain.choices[0].message.content);
  for (const ch of chunks.slice(0, -1)) assert.equal(ch.usage, null);
});

test('raw SSE framing: data lines, [DONE] last, event-stream content type', async () => {
  const r = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'abc', max_tokens: 4, stream: true, temperature: 0, ignore_eos: true }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const events = await readSse(r);
  assert.equal(events.at(-1), '[DONE]');
  const objs = events.slice(0, -1).map((e) => JSON.parse(e));
  for (const o of objs) assert.equal(o.object, 'text_completion');
  assert.equal(objs.at(-1).choices[0].finish_reason, 'length');
  assert.equal(objs.filter((o) => o.choices[0].finish_reason !== null).length, 1);
});

test('completions: text prompt, then the same ids as a token list, same greedy tokens', async () => {
  const a = await complete({ prompt: 'The quick brown fox', max_tokens: 10, temperature: 0, ignore_eos: true, return_token_ids: true });
  assert.equal(a.object, 'text_completion');
  assert.match(a.id, /^cmpl-[0-9a-f]+$/);
  const ca = a.choices[0];
  assert.ok(Array.isArray(ca.prompt_token_ids));
  assert.equal(ca.prompt_token_ids.length, a.usage.prompt_tokens);
  assert.equal(ca.token_ids.length, a.usage.completion_tokens);
  assert.equal(a.usage.completion_tokens, 10);
  assert.equal(ca.finish_reason, 'length');
  // token ids are used as given (no BOS added): the same ids give the same output
  const b = await complete({ prompt: ca.prompt_token_ids, max_tokens: 10, temperature: 0, ignore_eos: true, return_token_ids: true });
  assert.deepEqual(b.choices[0].prompt_token_ids, ca.prompt_token_ids);
  assert.deepEqual(b.choices[0].token_ids, ca.token_ids);
  assert.equal(b.choices[0].text, ca.text);
  // a one-element list holding the id list is the same prompt
  const c = await complete({ prompt: [ca.prompt_token_ids], max_tokens: 10, temperature: 0, ignore_eos: true, return_token_ids: true });
  assert.deepEqual(c.choices[0].token_ids, ca.token_ids);
  // dropping the first id (BOS) changes the prompt length by one
  const d = await complete({ prompt: ca.prompt_token_ids.slice(1), max_tokens: 1, temperature: 0, return_token_ids: true });
  assert.equal(d.usage.prompt_tokens, ca.prompt_token_ids.length - 1);
});

test('completions via the official client, with a one-element string list', async () => {
  const r = await client.completions.create({ model, prompt: ['Once upon a time'], max_tokens: 5, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.usage.completion_tokens <= 5);
});

test('seeded sampling is reproducible; different seeds differ', async () => {
  const body = { prompt: 'Random:', max_tokens: 16, temperature: 1.0, top_p: 1, ignore_eos: true, return_token_ids: true };
  const a = await complete({ ...body, seed: 1234 });
  const b = await complete({ ...body, seed: 1234 });
  assert.deepEqual(a.choices[0].token_ids, b.choices[0].token_ids);
  const outs = new Set([JSON.stringify(a.choices[0].token_ids)]);
  for (const seed of [1, 2, 3]) outs.add(JSON.stringify((await complete({ ...body, seed })).choices[0].token_ids));
  assert.ok(outs.size >= 2, 'four seeds all gave the same 16 sampled tokens');
});

test('usage and token_ids agree, also when EOS ends a sampled completion', async (t) => {
  // EOS may release held-back text (an unfinished UTF-8 sequence, a partial
  // stop string) as continuation events: text, but no token. At temperature
  // 2 on the demo vocabulary about half of these runs end at EOS.
  const runs = await Promise.all(Array.from({ length: 12 }, (_, i) => complete({
    prompt: 'Sampled', max_tokens: 200, temperature: 2, seed: i + 1, stop: ['zq'], return_token_ids: true, logprobs: 0,
  })));
  let stops = 0;
  runs.forEach((r, i) => {
    const c = r.choices[0];
    assert.equal(c.token_ids.length, r.usage.completion_tokens, `seed ${i + 1}`);
    assert.equal(c.logprobs.tokens.length, r.usage.completion_tokens, `seed ${i + 1}`);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    if (c.finish_reason === 'stop') stops++;
    else assert.equal(r.usage.completion_tokens, 200);
  });
  t.diagnostic(`${stops} of 12 sampled completions ended at EOS or the stop string`);
});

test('greedy output is the same alone and with 4 concurrent requests', async () => {
  const prompts = ['alpha', 'beta gamma', 'delta epsilon zeta', 'eta'];
  const body = (p) => ({ prompt: p, max_tokens: 12, temperature: 0, ignore_eos: true, return_token_ids: true });
  const alone = [];
  for (const p of prompts) alone.push((await complete(body(p))).choices[0].token_ids);
  const together = await Promise.all(prompts.map((p) => complete(body(p))));
  together.forEach((r, i) => assert.deepEqual(r.choices[0].token_ids, alone[i], `prompt ${i}`));
});

test('stop strings end the text before the stop, finish_reason stop', async () => {
  const base = await complete({ prompt: 'Stop test', max_tokens: 24, temperature: 0, ignore_eos: true });
  const text = base.choices[0].text;
  // a stop string from the middle of the greedy text, avoiding U+FFFD (bytes
  // that were not valid UTF-8 cannot be matched as a stop string)
  const chars = Array.from(text);
  let at = -1;
  for (let i = 3; i + 1 < chars.length; i++) {
    if (chars[i] !== '\uFFFD' && chars[i + 1] !== '\uFFFD') { at = i; break; }
  }
  if (at < 0) {
    assert.ok(text.length >= 0);
    return; // the demo model produced too little valid text for this check
  }
  const stop = chars[at] + chars[at + 1];
  const expect = text.slice(0, text.indexOf(stop));
  const r = await complete({ prompt: 'Stop test', max_tokens: 24, temperature: 0, ignore_eos: true, stop: ['\u2603\u2603 never', stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, expect);
  assert.ok(r.usage.completion_tokens < 24);
  // streamed: the same text
  const s = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'Stop test', max_tokens: 24, temperature: 0, ignore_eos: true, stop, stream: true }),
  });
  const events = (await readSse(s)).slice(0, -1).map((e) => JSON.parse(e));
  assert.equal(events.map((e) => e.choices[0].text).join(''), expect);
  assert.equal(events.at(-1).choices[0].finish_reason, 'stop');
});

test('logprobs: completions shape and chat shape', async () => {
  const a = await complete({ prompt: 'log', max_tokens: 4, temperature: 0, ignore_eos: true, logprobs: 2 });
  const lp = a.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  assert.equal(lp.top_logprobs.length, 4);
  assert.equal(lp.text_offset.length, 4);
  for (const x of lp.token_logprobs) assert.ok(x <= 0, `logprob ${x}`);
  for (const t of lp.top_logprobs) assert.ok(Object.keys(t).length >= 1 && Object.keys(t).length <= 2);
  const c = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'x' }], max_tokens: 3, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 2,
  });
  const content = c.choices[0].logprobs.content;
  assert.equal(content.length, 3);
  for (const ent of content) {
    assert.equal(typeof ent.token, 'string');
    assert.ok(ent.logprob <= 0);
    assert.ok(Array.isArray(ent.bytes));
    assert.equal(ent.top_logprobs.length, 2);
    // greedy: the sampled token is the most likely one
    assert.ok(ent.logprob >= ent.top_logprobs[0].logprob - 1e-5);
  }
  const none = await complete({ prompt: 'log', max_tokens: 2 });
  assert.equal(none.choices[0].logprobs, null);
});

test('echo prepends the prompt', async () => {
  const a = await complete({ prompt: 'Echo me', max_tokens: 3, temperature: 0, ignore_eos: true });
  const b = await complete({ prompt: 'Echo me', max_tokens: 3, temperature: 0, ignore_eos: true, echo: true });
  assert.equal(b.choices[0].text, 'Echo me' + a.choices[0].text);
});

test('GET /metrics is Prometheus text with request, token and queue figures', async () => {
  const r = await fetch(`${srv.url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain/);
  const t = await r.text();
  for (const name of ['peftserve_http_requests_total', 'peftserve_requests_running', 'peftserve_requests_waiting',
    'peftserve_completion_tokens_total', 'peftserve_prompt_tokens_total', 'peftserve_request_duration_seconds_bucket']) {
    assert.match(t, new RegExp(`^${name}`, 'm'), name);
  }
  const m = /^peftserve_http_requests_total\{route="\/v1\/completions",code="2xx"\} (\d+)$/m.exec(t);
  assert.ok(m && Number(m[1]) >= 5, 'completions 2xx counter');
  const toks = Number(/^peftserve_completion_tokens_total (\d+)$/m.exec(t)[1]);
  assert.ok(toks >= 50, `completion tokens ${toks}`);
});

// Raw HTTP over a socket: what fetch would hide (HTTP/1.0, keep-alive reuse).
async function rawHttp(request) {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const sock = net.connect(srv.port, '127.0.0.1', () => sock.end(request));
    const parts = [];
    sock.on('data', (d) => parts.push(d));
    sock.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    sock.on('error', reject);
  });
}

test('HTTP/1.0 client: the stream is plain SSE ended by closing the connection', async () => {
  const body = JSON.stringify({ model, prompt: 'old client', max_tokens: 3, temperature: 0, ignore_eos: true, stream: true });
  const res = await rawHttp(`POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  const [head, payload] = [res.slice(0, res.indexOf('\r\n\r\n')), res.slice(res.indexOf('\r\n\r\n') + 4)];
  assert.match(head, /^HTTP\/1\.0 200/);
  assert.doesNotMatch(head, /Transfer-Encoding: chunked/i);
  assert.ok(payload.startsWith('data: {'), payload.slice(0, 40));
  assert.ok(payload.endsWith('data: [DONE]\n\n'), payload.slice(-40));
});

test('chunked request body and two requests on one keep-alive connection', async () => {
  const body = JSON.stringify({ model, prompt: 'chunked', max_tokens: 2 });
  const half = Math.floor(body.length / 2);
  const chunked = `${half.toString(16)}\r\n${body.slice(0, half)}\r\n${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n0\r\n\r\n`;
  const res = await rawHttp(
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}` +
    'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const statuses = [...res.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
  assert.deepEqual(statuses, ['200', '200'], res.slice(0, 300));
  assert.match(res, /"object":"text_completion"/);
  assert.match(res, /"object":"list"/);
});
