// Starts the REAL peftserve binary on a free loopback port for a test file,
// waits for /health, and stops it at the end (SIGTERM, then SIGKILL after a
// grace period). The port comes from the server's own "listening on" log
// line (it is started with --port 0), so there is no port race.
//
//   const srv = await startServer({ args: ['--api-key', 'k'] });
//   const r = await fetch(`${srv.url}/health`);
//   const code = await srv.stop();   // exit code; 0 = clean shutdown
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export function fixturesDir() {
  return process.env.PEFTSERVE_FIXTURES || process.env.PS_FIXTURES_DEFAULT || '';
}

export function fixturePath(...parts) {
  const root = fixturesDir();
  const p = path.join(root, ...parts);
  return root && existsSync(p) ? p : null;
}

export async function startServer({ args = [], env = {}, startTimeoutMs = 120000 } = {}) {
  const bin = process.env.PEFTSERVE_BIN;
  if (!bin) throw new Error('PEFTSERVE_BIN is not set (ctest sets it; or export it by hand)');
  const child = spawn(bin, ['--host', '127.0.0.1', '--port', '0', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  child.stderr.setEncoding('utf8');
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in ${startTimeoutMs} ms:\n${log}`)), startTimeoutMs);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      if (process.env.PEFTSERVE_TEST_VERBOSE) process.stderr.write(chunk);
      const m = /listening on http:\/\/[^:\s]+:(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exitPromise.then((e) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (${JSON.stringify(e)}):\n${log}`));
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      const r = await fetch(`${url}/health`);
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`/health never answered 200:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    port,
    child,
    log: () => log,
    alive: () => exited === null,
    async stop(graceMs = 20000) {
      if (exited) return exited.code;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const e = await exitPromise;
      clearTimeout(t);
      return e.code;
    },
  };
}

// POST JSON (or a raw string body) and return {status, headers, json, text}.
export async function post(url, body, headers = {}) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, headers: r.headers, json, text };
}

// Reads an SSE body into the list of `data:` payloads (strings).
export async function readSse(response) {
  const text = await response.text();
  return text
    .split('\n\n')
    .map((ev) => ev.trim())
    .filter((ev) => ev.length > 0)
    .map((ev) => {
      if (!ev.startsWith('data: ')) throw new Error(`not an SSE data event: ${JSON.stringify(ev)}`);
      return ev.slice(6);
    });
}

// Asserts the OpenAI error shape {"error":{"message","type","param","code"}}.
export function assertOpenAIError(assert, res, status, { code, param, type } = {}) {
  assert.equal(res.status, status, `status for ${res.text}`);
  assert.ok(res.json && typeof res.json.error === 'object', `error body: ${res.text}`);
  const e = res.json.error;
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in e, `error.${k} missing in ${res.text}`);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  assert.equal(typeof e.type, 'string');
  if (code !== undefined) assert.equal(e.code, code, `error.code in ${res.text}`);
  if (param !== undefined) assert.equal(e.param, param, `error.param in ${res.text}`);
  if (type !== undefined) assert.equal(e.type, type, `error.type in ${res.text}`);
  return e;
}
