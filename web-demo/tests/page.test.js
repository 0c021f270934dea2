// The demo page against a scripted gateway: a small HTTP server for the page and the REST calls,
// Playwright's WebSocket routing for /ws, and a second RTCPeerConnection inside the page that
// answers the offer and plays a tone as "the agent". Needs Chromium only, not the Rust gateway.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  RESULTS, WEB_DIR, browserSkipReason, launchBrowser, pageSummary, waitFor, watchPage,
} from './helpers.js';

const skip = browserSkipReason();
if (skip) console.log(`SKIPPED: page tests: ${skip}`);

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
const JOIN_FIELDS = new Set(['type', 'v', 'token', 'sdp', 'agent', 'output']);

function startStaticServer() {
  const tokens = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const json = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/healthz') return json(200, { status: 'ok', version: '0.0.0-test' });
    if (url.pathname === '/readyz') return json(200, { ready: true, missing_models: [] });
    if (url.pathname === '/api/agents') {
      return json(200, {
        default: 'assistant',
        agents: [
          { name: 'concierge', description: 'Books tables.' },
          { name: 'assistant', description: 'A helpful voice assistant.' },
        ],
      });
    }
    if (url.pathname === '/api/token' && req.method === 'POST') {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const r = JSON.parse(body);
        tokens.push(r);
        json(200, { token: `tok-${r.identity}`, room: r.room, identity: r.identity, expires_in: r.ttl_secs });
      });
      return undefined;
    }
    const file = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    if (!/^[a-z]+\.(html|js|css)$/.test(file)) {
      res.writeHead(404);
      return res.end('not found');
    }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] });
    return res.end(fs.readFileSync(path.join(WEB_DIR, file)));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      server, tokens, url: `http://127.0.0.1:${server.address().port}/`,
    }));
  });
}

/** Runs in the page: answers the demo's offer with a second peer whose track is a gated tone. */
async function mockAnswer(offer) {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  osc.frequency.value = 330;
  const gain = ctx.createGain();
  gain.gain.value = 0;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  const pc = new RTCPeerConnection({ iceServers: [] });
  const mock = { ctx, gain, pc, dcMessages: [] };
  window.mockAgent = mock;
  pc.ondatachannel = (e) => {
    mock.dc = e.channel;
    e.channel.onmessage = (m) => mock.dcMessages.push(m.data);
  };
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  const [transceiver] = pc.getTransceivers();
  transceiver.direction = 'sendrecv';
  await transceiver.sender.replaceTrack(dest.stream.getAudioTracks()[0]);
  await pc.setLocalDescription(await pc.createAnswer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
      setTimeout(resolve, 2000);
    });
  }
  return pc.localDescription.sdp;
}

/** The scripted gateway side of one page's /ws. */
function scriptSocket(page) {
  const gw = { received: [], ws: null, waiters: [] };
  gw.next = (type, timeout = 10000) => new Promise((resolve, reject) => {
    const found = gw.received.find((m) => m.type === type && !m.taken);
    if (found) { found.taken = true; resolve(found); return; }
    const timer = setTimeout(() => reject(new Error(`no ${type} message from the page`)), timeout);
    gw.waiters.push({ type, resolve: (m) => { clearTimeout(timer); resolve(m); } });
  });
  gw.send = (msg) => gw.ws.send(JSON.stringify(msg));
  return page.routeWebSocket(/\/ws$/, (ws) => {
    gw.ws = ws;
    ws.onMessage(async (text) => {
      const msg = JSON.parse(String(text));
      gw.received.push(msg);
      const waiter = gw.waiters.findIndex((w) => w.type === msg.type);
      if (waiter >= 0) {
        msg.taken = true;
        gw.waiters.splice(waiter, 1)[0].resolve(msg);
      }
      if (msg.type === 'join') {
        const sdp = await page.evaluate(mockAnswer, msg.sdp);
        gw.send({ type: 'joined', v: 1, room: 'demo', identity: 'tok', sdp, agent: msg.agent });
      }
    });
  }).then(() => gw);
}

describe('demo page (scripted gateway)', { timeout: 120000 }, () => {
  let web;
  let browser;

  before(async () => {
    if (skip) return;
    web = await startStaticServer();
    browser = await launchBrowser(null);
  });

  after(async () => {
    await browser?.close();
    web?.server.close();
  });

  test('a call: transcript, agent state, audio level, latency waterfall, typing, barge-in, hang up', { skip: skip || false }, async () => {
    const page = await browser.context.newPage();
    const problems = watchPage(page);
    const gw = await scriptSocket(page);
    try {
      await page.goto(web.url);
      await waitFor(page, 'the agent list', () => document.querySelectorAll('#agent option').length === 2, null, 5000);
      assert.equal(await page.inputValue('#agent'), 'assistant', 'the default agent is preselected');
      assert.match(await page.textContent('#agent-description'), /helpful/);
      assert.match(await page.textContent('#status'), /ready/i);
      assert.equal(await page.getAttribute('body', 'data-state'), 'idle');

      await page.click('#connect');
      const join = await gw.next('join');
      assert.equal(join.v, 1);
      assert.equal(join.agent, 'assistant');
      assert.match(join.token, /^tok-guest-/);
      assert.match(join.sdp, /m=audio/);
      assert.match(join.sdp, /m=application/, 'the chat data channel is in the offer');
      assert.match(join.sdp, /a=sendrecv/);
      assert.match(join.sdp, /a=candidate:/, 'candidates are in the offer (gathered before join)');
      for (const k of Object.keys(join)) if (k !== 'taken') assert.ok(JOIN_FIELDS.has(k), `unknown join field ${k}`);
      assert.equal(web.tokens[0].room, 'demo');
      assert.equal(web.tokens[0].ttl_secs, 3600);

      await waitFor(page, 'the call to connect', () => document.body.dataset.state === 'connected', null, 15000);
      assert.equal(await page.textContent('#connect'), 'Hang up');

      // Turn 1: partial then final user transcript, then the agent speaks (the tone).
      gw.send({ type: 'agent_state', state: 'listening' });
      gw.send({ type: 'transcript', speaker: 'user', text: 'what is the', final: false, turn: 1 });
      await waitFor(page, 'the partial', () => document.querySelector('#transcript li.partial'), null, 5000);
      gw.send({ type: 'transcript', speaker: 'user', text: 'What is the capital of France?', final: true, turn: 1 });
      gw.send({ type: 'agent_state', state: 'thinking' });
      await waitFor(page, 'the thinking state', () => document.querySelector('#agent-state').dataset.state === 'thinking', null, 5000);
      assert.equal(await page.locator('#transcript li[data-speaker="user"]').count(), 1, 'the partial was replaced');
      await page.waitForTimeout(300);
      gw.send({ type: 'agent_state', state: 'speaking' });
      await page.evaluate(() => { window.mockAgent.gain.gain.value = 0.3; });
      gw.send({ type: 'transcript', speaker: 'agent', text: 'The capital', final: false, turn: 1 });
      gw.send({ type: 'transcript', speaker: 'agent', text: 'The capital of France is Paris.', final: true, turn: 1 });
      await waitFor(page, 'agent audio', () => window.dartmouthDemo.stats.remoteMaxRms > 0.05, null, 10000);
      assert.equal(await page.textContent('#announcer'), 'Agent: The capital of France is Paris.', 'finished lines are announced');
      gw.send({
        type: 'latency', turn: 1, end_of_turn_ms: 210, stt_ms: 260, llm_first_token_ms: 420,
        tts_first_audio_ms: 530, first_packet_out_ms: 300 + 240, providers: ['moonshine', 'smollm', 'kokoro'],
      });
      await waitFor(page, 'the network bar', () => document.querySelector('#latency tr[data-stage="network"]')?.dataset.ms, null, 5000);
      const stages = await page.$$eval('#latency figure[data-turn="1"] tr', (rows) => rows.map((r) => [r.dataset.stage, r.dataset.ms, r.querySelector('td.ms').textContent]));
      assert.deepEqual(stages.map((s) => s[0]), ['end_of_turn', 'stt', 'llm_first_token', 'tts_first_audio', 'first_packet_out', 'network']);
      assert.deepEqual(stages.slice(0, 5).map((s) => s[1]), ['210', '50', '160', '110', '10']);
      const network = Number(stages[5][1]);
      assert.ok(network >= 0 && network < 2000, `network estimate ${network} ms`);
      assert.match(await page.textContent('#latency figcaption'), /Turn 1 — \d+ ms to first sound here · moonshine \/ smollm \/ kokoro/);
      assert.match(await page.textContent('#transcript'), /The capital of France is Paris\./);
      await page.evaluate(() => { window.mockAgent.gain.gain.value = 0; });
      gw.send({ type: 'agent_state', state: 'listening' });

      // Typing goes over the data channel once it is open.
      await page.fill('#text-input', 'Hello from the keyboard');
      await page.press('#text-input', 'Enter');
      await waitFor(page, 'the typed text on the data channel', () => window.mockAgent.dcMessages.length > 0, null, 5000);
      assert.deepEqual(JSON.parse(await page.evaluate(() => window.mockAgent.dcMessages[0])), { type: 'text', text: 'Hello from the keyboard' });
      assert.equal(await page.inputValue('#text-input'), '');
      assert.match(await page.textContent('#transcript li[data-typed="true"]'), /Hello from the keyboard/);
      // The gateway echoes typed text as the user's final transcript of a new turn: one line.
      gw.send({ type: 'transcript', speaker: 'user', text: 'Hello from the keyboard', final: true, turn: 2 });
      gw.send({ type: 'transcript', speaker: 'agent', text: 'Hello!', final: true, turn: 2 });
      await waitFor(page, 'the answer to the typed text', () => document.querySelector('#transcript li[data-speaker="agent"][data-turn="2"]'), null, 5000);
      assert.equal(await page.locator('#transcript li', { hasText: 'Hello from the keyboard' }).count(), 1);
      assert.equal(await page.getAttribute('#transcript li[data-typed="true"]', 'data-turn'), '2');

      // Turn 3: the person talks over the agent. As the gateway does it: the agent pauses at the
      // speech onset (state), the words confirm it (interrupted + the heard text as the final).
      gw.send({ type: 'transcript', speaker: 'user', text: 'Tell me a long story about a dragon.', final: true, turn: 3 });
      gw.send({ type: 'agent_state', state: 'speaking' });
      gw.send({ type: 'transcript', speaker: 'agent', text: 'Once upon a time there was a dragon who', final: false, turn: 3 });
      gw.send({ type: 'agent_state', state: 'interrupted' });
      gw.send({ type: 'interrupted', turn: 3, heard: 'Once upon a time' });
      gw.send({ type: 'transcript', speaker: 'agent', text: 'Once upon a time', final: true, turn: 3 });
      gw.send({ type: 'transcript', speaker: 'user', text: 'Stop. What time is it?', final: true, turn: 4 });
      gw.send({ type: 'agent_state', state: 'thinking' });
      await waitFor(page, 'the interruption', () => document.querySelector('#transcript li[data-turn="4"]'), null, 5000);
      assert.deepEqual(await page.evaluate(() => window.dartmouthDemo.stats.agentStates.map((s) => s.state).slice(-3)), ['speaking', 'interrupted', 'thinking']);
      const agentLine = page.locator('#transcript li[data-speaker="agent"][data-turn="3"]');
      assert.equal(await agentLine.getAttribute('data-interrupted'), 'true');
      assert.match(await agentLine.textContent(), /interrupted — heard:\s*Once upon a time/);
      assert.equal((await agentLine.locator('del').textContent()).trim(), 'there was a dragon who');
      assert.deepEqual(await page.evaluate(() => window.dartmouthDemo.stats.interruptions.map((i) => [i.turn, i.heard])), [[3, 'Once upon a time']]);
      await page.screenshot({ path: path.join(RESULTS, 'page-scripted.png'), fullPage: true });

      // Mute.
      await page.click('#mute');
      assert.deepEqual((await gw.next('mute')).muted, true);
      assert.equal(await page.getAttribute('#mute', 'aria-pressed'), 'true');

      // Hang up.
      await page.click('#connect');
      await gw.next('leave');
      assert.equal(await page.getAttribute('body', 'data-state'), 'idle');
      assert.equal(await page.getAttribute('#agent-state', 'data-state'), 'offline');
      assert.equal(await page.isHidden('#alert'), true, 'no alert after a normal hang-up');
      assert.deepEqual(problems, []);
    } catch (e) {
      throw new Error(`${e.message}\n${await pageSummary(page).catch(() => '')}`, { cause: e });
    } finally {
      await page.close();
    }
  });

  test('a lost connection is shown', { skip: skip || false }, async () => {
    const page = await browser.context.newPage();
    const problems = watchPage(page);
    const gw = await scriptSocket(page);
    try {
      await page.goto(web.url);
      await page.click('#connect');
      await waitFor(page, 'the call to connect', () => document.body.dataset.state === 'connected', null, 15000);
      gw.ws.close({ code: 1011, reason: 'gone' });
      await waitFor(page, 'the lost-connection alert', () => !document.getElementById('alert').hidden, null, 5000);
      assert.match(await page.textContent('#alert'), /Lost the connection to the gateway/);
      assert.equal(await page.getAttribute('body', 'data-state'), 'failed');
      assert.equal(await page.textContent('#connect'), 'Connect', 'one can connect again');

      // The gateway ends a call: media lost is an alert, so is a shutdown; the page can reconnect.
      for (const [reason, state, alert] of [
        ['media did not connect (ICE/DTLS) within 10 s', 'failed', /connection to the agent was lost: media did not connect/],
        ['the gateway is shutting down', 'idle', /The gateway ended the call: the gateway is shutting down/],
      ]) {
        await page.click('#connect');
        await waitFor(page, 'the call to connect again', () => document.body.dataset.state === 'connected', null, 15000);
        assert.equal(await page.isHidden('#alert'), true, 'a new call clears the alert');
        gw.send({ type: 'bye', reason });
        await waitFor(page, 'the end of the call', () => document.body.dataset.state !== 'connected', null, 5000);
        assert.equal(await page.getAttribute('body', 'data-state'), state);
        assert.match(await page.textContent('#alert'), alert);
      }
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });

  test('a refused join is shown', { skip: skip || false }, async () => {
    const page = await browser.context.newPage();
    await page.routeWebSocket(/\/ws$/, (ws) => {
      ws.onMessage(() => ws.send(JSON.stringify({ type: 'error', code: 'unauthorized', message: 'token expired' })));
    });
    try {
      await page.goto(web.url);
      await page.click('#connect');
      await waitFor(page, 'the refusal', () => !document.getElementById('alert').hidden, null, 10000);
      assert.match(await page.textContent('#alert'), /refused the call: token expired \(unauthorized\)/);
      assert.equal(await page.getAttribute('body', 'data-state'), 'failed');
    } finally {
      await page.close();
    }
  });

  test('a denied microphone is explained, and the page works from the keyboard', { skip: skip || false }, async () => {
    const page = await browser.context.newPage();
    const problems = watchPage(page);
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    });
    try {
      await page.goto(web.url);
      await waitFor(page, 'the agent list', () => document.querySelectorAll('#agent option').length === 2, null, 5000);
      await page.focus('#room');
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'agent');
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'connect');
      await page.keyboard.press('Enter');
      await waitFor(page, 'the microphone alert', () => !document.getElementById('alert').hidden, null, 5000);
      assert.match(await page.textContent('#alert'), /Microphone access was denied/);
      assert.equal(await page.getAttribute('body', 'data-state'), 'failed');
      await page.screenshot({ path: path.join(RESULTS, 'page-mic-denied.png') });
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });
});
