// Shared pieces of the browser tests: the gateway process, speech fixtures and headless Chromium.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(WEB_DIR, '..');
export const RESULTS = path.join(WEB_DIR, 'test-results');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

fs.mkdirSync(RESULTS, { recursive: true });

/** The gateway binary: $DARTMOUTH_BIN, else $CARGO_TARGET_DIR/release/dartmouth, else target/. */
export function gatewayBinary() {
  if (process.env.DARTMOUTH_BIN) return path.resolve(process.env.DARTMOUTH_BIN);
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(REPO, 'target');
  return path.join(target, 'release', 'dartmouth');
}

export function hasCommand(name) {
  return spawnSync('sh', ['-c', `command -v "${name}"`], { stdio: 'ignore' }).status === 0;
}

/** Why the browser tests cannot run here, or null. */
export function browserSkipReason() {
  if (process.env.DARTMOUTH_SKIP_BROWSER === '1') return 'DARTMOUTH_SKIP_BROWSER=1';
  if (!fs.existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
  return null;
}

/** Why the end-to-end tests against the real gateway cannot run here, or null. */
export function gatewaySkipReason() {
  const browser = browserSkipReason();
  if (browser) return browser;
  const bin = gatewayBinary();
  if (!fs.existsSync(bin)) return `no gateway binary at ${bin} (cargo build --release -p dartmouth)`;
  for (const tool of ['espeak-ng', 'sox']) {
    if (!hasCommand(tool)) return `${tool} is not installed (apt-get install espeak-ng sox)`;
  }
  return null;
}

export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `dartmouth serve` on free loopback ports and waits for /readyz.
 * The page is served from web-demo/ (DARTMOUTH_WEB_DIR) unless DARTMOUTH_TEST_EMBEDDED_WEB=1.
 * `args` are extra flags; `env` extra environment; `https` when the flags turn TLS on (the
 * readiness probe then skips certificate checks: the tests use a self-signed certificate).
 */
export async function startGateway(name, { readyTimeoutMs = 60000, args = [], env: extraEnv = {}, https = false } = {}) {
  const bin = gatewayBinary();
  const [httpPort, udpPort] = [await freeTcpPort(), await freeUdpPort()];
  const logPath = path.join(RESULTS, `gateway-${name}.log`);
  const log = fs.openSync(logPath, 'w');
  const env = { ...process.env, DARTMOUTH_PLATFORM__HTTP: '127.0.0.1:0', ...extraEnv };
  if (process.env.DARTMOUTH_TEST_EMBEDDED_WEB !== '1') env.DARTMOUTH_WEB_DIR = WEB_DIR;
  const proc = spawn(
    bin,
    ['serve', '--http', `127.0.0.1:${httpPort}`, '--media-udp', `127.0.0.1:${udpPort}`, ...args],
    { env, stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  let exited = null;
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const url = `${https ? 'https' : 'http'}://127.0.0.1:${httpPort}`;
  const gateway = {
    url, proc, logPath, httpPort, udpPort,
    logTail: (n = 30) => fs.readFileSync(logPath, 'utf8').split('\n').slice(-n).join('\n'),
    async stop() {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, 5000);
      const result = await exit;
      clearTimeout(timer);
      return result;
    },
  };
  const deadline = Date.now() + readyTimeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`the gateway exited (${JSON.stringify(exited)}) before it was ready:\n${gateway.logTail()}`);
    }
    try {
      const res = await probe(`${url}/readyz`, https);
      if (res.ok) return gateway;
      last = `${res.status} ${await res.text()}`;
    } catch (e) {
      last = String(e.cause?.code || e.message || e);
    }
    await sleep(250);
  }
  await gateway.stop();
  throw new Error(`the gateway was not ready within ${readyTimeoutMs} ms (last /readyz: ${last}):\n${gateway.logTail()}`);
}

/** GET `url` as {ok, status, text()}; over HTTPS without checking the certificate. */
export async function probe(url, insecure) {
  if (!insecure) return fetch(url, { signal: AbortSignal.timeout(2000) });
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(url, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({
        ok: res.statusCode >= 200 && res.statusCode < 300,
        status: res.statusCode,
        headers: res.headers,
        text: async () => body,
      }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error}`);
}

/**
 * Writes a 48 kHz mono 16-bit WAV of spoken text and silences, e.g.
 * [{ silence: 2 }, { say: 'What is the capital of France?' }, { silence: 25 }].
 * Chromium's fake capture loops the file, so end it with enough silence.
 */
export function speechWav(name, parts) {
  const file = path.join(RESULTS, `${name}.wav`);
  const spec = JSON.stringify(parts);
  const specFile = `${file}.spec`;
  if (fs.existsSync(file) && fs.existsSync(specFile) && fs.readFileSync(specFile, 'utf8') === spec) return file;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dartmouth-wav-'));
  try {
    const pieces = parts.map((part, i) => {
      const out = path.join(dir, `${i}.wav`);
      if (part.say) {
        const raw = path.join(dir, `${i}-raw.wav`);
        run('espeak-ng', ['-v', 'en-us', '-s', String(part.rate || 150), '-w', raw, part.say]);
        run('sox', [raw, '-r', '48000', '-c', '1', '-b', '16', out]);
      } else {
        run('sox', ['-n', '-r', '48000', '-c', '1', '-b', '16', out, 'trim', '0', String(part.silence)]);
      }
      return out;
    });
    run('sox', [...pieces, file]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.writeFileSync(specFile, spec);
  return file;
}

/**
 * Headless Debian Chromium on a fresh profile, its microphone fed by `wav` (looped). With
 * `budgetMs`, the browser closes itself after that long, so a stuck test fails instead of hanging
 * (`expired()` then says so).
 */
export async function launchBrowser(wav, { budgetMs, extraArgs = [] } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dartmouth-chromium-'));
  const args = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
  ];
  if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}`);
  args.push(...extraArgs);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1100, height: 900 },
  });
  let expired = false;
  const close = async () => {
    clearTimeout(guard);
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  const guard = budgetMs && setTimeout(() => {
    expired = true;
    context.close().catch(() => {});
  }, budgetMs);
  return { context, close, expired: () => expired };
}

/** Records console errors and uncaught exceptions of a page. */
export function watchPage(page) {
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  return problems;
}

/** page.waitForFunction with a readable failure that shows the page's state. */
export async function waitFor(page, what, fn, arg, timeout) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const state = await pageSummary(page).catch(() => '(page unavailable)');
    throw new Error(`timed out after ${timeout} ms waiting for ${what}\n${state}`);
  }
}

export async function pageSummary(page) {
  return page.evaluate(() => {
    const s = window.dartmouthDemo && window.dartmouthDemo.stats;
    const lines = [...document.querySelectorAll('#transcript li')].map((li) => `${li.dataset.speaker}#${li.dataset.turn}${li.dataset.final === 'true' ? '' : '~'}${li.dataset.interrupted ? '!' : ''}: ${li.textContent}`);
    return JSON.stringify({
      state: document.body.dataset.state,
      status: document.getElementById('status').textContent,
      alert: document.getElementById('alert').textContent,
      agentStates: s && s.agentStates.map((x) => x.state),
      events: s && s.events,
      errors: s && s.errors,
      remoteMaxRms: s && s.remoteMaxRms,
      localMaxRms: s && s.localMaxRms,
      transcript: lines,
    }, null, 1);
  });
}
