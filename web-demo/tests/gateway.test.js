// End to end: headless Chromium speaks a WAV into the demo page, served by the real gateway, and
// hears the agent answer. Skipped (with the reason printed) when the gateway binary, Chromium,
// espeak-ng or sox is missing, or with DARTMOUTH_SKIP_BROWSER=1.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  RESULTS, gatewaySkipReason, launchBrowser, pageSummary, speechWav, startGateway, waitFor, watchPage,
} from './helpers.js';

const skip = gatewaySkipReason();
if (skip) console.log(`SKIPPED: gateway browser tests: ${skip}`);

const TEST_BUDGET_MS = 90000; // every wait of a test fits in this; the browser closes after it
const TEST_TIMEOUT_MS = TEST_BUDGET_MS + 15000;
const SOUND_RMS = 0.02; // the agent's voice, measured in the page
// How long the agent has been heard answering when the person talks over it.
const TALK_OVER_AFTER_MS = Number(process.env.DARTMOUTH_TALK_OVER_AFTER_MS || 1500);

/** Opens the demo on `gateway` in `page` and connects to `room`. */
async function connectPage(page, gateway, room) {
  await page.goto(`${gateway.url}/`);
  await page.fill('#room', room);
  await waitFor(page, 'the agent list', () => document.querySelector('#agent option')?.value, null, 10000);
  await page.click('#connect');
  await waitFor(page, 'the call to connect', () => document.body.dataset.state === 'connected'
    || document.body.dataset.state === 'failed', null, 20000);
  const state = await page.getAttribute('body', 'data-state');
  assert.equal(state, 'connected', `the call did not connect: ${await page.textContent('#alert')}`);
}

/** Opens the demo on `gateway` with `wav` as the microphone and connects to `room`. */
async function openCall(gateway, wav, room) {
  const browser = await launchBrowser(wav, { budgetMs: TEST_BUDGET_MS });
  const page = await browser.context.newPage();
  const problems = watchPage(page);
  try {
    await connectPage(page, gateway, room);
  } catch (e) {
    await page.screenshot({ path: path.join(RESULTS, 'gateway-connect-failed.png') }).catch(() => {});
    const error = await failure(e, browser, page, gateway);
    await browser.close();
    throw error;
  }
  return { browser, page, problems };
}

/**
 * Init script: the page's microphone becomes the real (fake-capture) one mixed with whatever
 * `window.talkOver(url)` plays, a WAV decoded and started at once.
 */
function mixableMicrophone() {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const real = await original(constraints);
    const ctx = new AudioContext();
    const dest = ctx.createMediaStreamDestination();
    ctx.createMediaStreamSource(real).connect(dest);
    window.talkOver = async (url) => {
      const buffer = await ctx.decodeAudioData(await (await fetch(url)).arrayBuffer());
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(dest);
      source.start();
      return buffer.duration;
    };
    const [track] = dest.stream.getAudioTracks();
    const stop = track.stop.bind(track);
    track.stop = () => {
      stop();
      real.getTracks().forEach((t) => t.stop());
      ctx.close();
    };
    return dest.stream;
  };
}

/** The error a failed test reports: what it waited for, the page's state, the gateway's log. */
async function failure(e, browser, page, gateway) {
  const budget = browser.expired() ? `the test ran out of its ${TEST_BUDGET_MS / 1000} s budget; ` : '';
  const state = await pageSummary(page).catch(() => '(page closed)');
  return new Error(`${budget}${e.message}\n${state}\ngateway log:\n${gateway.logTail(20)}`, { cause: e });
}

async function hangUp(page) {
  await page.click('#connect');
  await waitFor(page, 'the page to hang up', () => document.body.dataset.state === 'idle', null, 5000);
}

describe('demo page against the gateway', { timeout: 2 * TEST_TIMEOUT_MS + 70000 }, () => {
  let gateway;

  before(async () => {
    if (!skip) gateway = await startGateway('browser');
  });

  after(async () => {
    await gateway?.stop();
  });

  test('the agent hears the question and answers aloud; the waterfall shows the turn', { skip: skip || false, timeout: TEST_TIMEOUT_MS }, async () => {
    const wav = speechWav('question', [{ silence: 2 }, { say: 'What is the capital of France?' }, { silence: 25 }]);
    const { browser, page, problems } = await openCall(gateway, wav, `demo-${process.pid}-q`);
    try {
      await waitFor(page, 'the user\'s final transcript of the question', () => [...document.querySelectorAll('#transcript li[data-speaker="user"][data-final="true"]')]
        .some((li) => /capital|france/i.test(li.textContent)), null, 45000);
      await waitFor(page, 'agent audio in the page', (rms) => window.dartmouthDemo.stats.remoteMaxRms > rms, SOUND_RMS, 30000);
      await waitFor(page, 'the latency waterfall', () => {
        const fig = document.querySelector('#latency figure');
        return fig && ['end_of_turn', 'stt', 'first_packet_out'].every((s) => fig.querySelector(`tr[data-stage="${s}"]`)?.dataset.ms);
      }, null, 30000);
      // The network bar needs the page to have heard the turn's answer; give it a moment.
      await waitFor(page, 'the network bar', () => document.querySelector('#latency tr[data-stage="network"]')?.dataset.ms, null, 5000)
        .catch((e) => console.log(`note: ${e.message.split('\n')[0]}`));
      const stages = await page.$$eval('#latency figure:last-child tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.stage, r.dataset.ms])));
      console.log('latency (ms per stage):', JSON.stringify(stages));
      for (const s of ['end_of_turn', 'stt', 'first_packet_out']) {
        assert.ok(Number.isFinite(Number(stages[s])) && stages[s] !== '', `stage ${s} shows a number`);
      }
      const agentText = await page.$$eval('#transcript li[data-speaker="agent"]', (lis) => lis.map((li) => li.textContent));
      console.log('agent said:', agentText.join(' | '));
      assert.ok((await page.evaluate(() => window.dartmouthDemo.stats.remoteMaxRms)) > SOUND_RMS);

      // Typing goes over the data channel and is answered like speech.
      await waitFor(page, 'the agent to listen again', () => document.getElementById('agent-state').dataset.state === 'listening', null, 20000);
      assert.equal(await page.evaluate(() => window.dartmouthDemo.stats.state), 'connected');
      await page.fill('#text-input', 'What is two plus two?');
      await page.press('#text-input', 'Enter');
      await waitFor(page, 'the typed message as a turn', () => document.querySelector('#transcript li[data-typed="true"]')?.dataset.turn, null, 10000);
      const typedTurn = await page.getAttribute('#transcript li[data-typed="true"]', 'data-turn');
      await waitFor(page, 'an answer to the typed message', (turnNo) => document.querySelector(`#transcript li[data-speaker="agent"][data-turn="${turnNo}"]`)?.textContent.trim(), typedTurn, 30000);
      assert.equal(await page.locator('#transcript li', { hasText: 'What is two plus two?' }).count(), 1, 'the typed line and its transcript are one line');
      console.log('typed answer:', (await page.textContent(`#transcript li[data-speaker="agent"][data-turn="${typedTurn}"]`)).trim());
      await page.waitForTimeout(1500); // let the typed turn's answer play a little for the picture
      await page.screenshot({ path: path.join(RESULTS, 'gateway-question.png'), fullPage: true });
      await hangUp(page);
      assert.deepEqual(problems, []);
    } catch (e) {
      await page.screenshot({ path: path.join(RESULTS, 'gateway-question-failed.png'), fullPage: true }).catch(() => {});
      throw await failure(e, browser, page, gateway);
    } finally {
      await browser.close();
    }
  });

  test('talking over the agent interrupts it', { skip: skip || false, timeout: TEST_TIMEOUT_MS }, async () => {
    // The question comes from Chromium's fake capture (the WAV); the talk-over WAV is mixed into
    // the microphone once the agent has been heard speaking for a while, so the barge-in lands
    // inside the answer however fast or slow this machine's pipeline is.
    const wav = speechWav('barge-in-question', [{ silence: 2 }, { say: 'Tell me a long story about a dragon.' }, { silence: 45 }]);
    const talkOver = speechWav('barge-in-talk-over', [{ say: 'Stop, what time is it?' }, { silence: 0.5 }]);
    const browser = await launchBrowser(wav, { budgetMs: TEST_BUDGET_MS });
    const page = await browser.context.newPage();
    const problems = watchPage(page);
    await page.addInitScript(mixableMicrophone);
    await page.route('**/__test/talk-over.wav', (route) => route.fulfill({ path: talkOver, contentType: 'audio/wav' }));
    try {
      await connectPage(page, gateway, `demo-${process.pid}-b`);
      await waitFor(page, 'the story question', () => [...document.querySelectorAll('#transcript li[data-speaker="user"][data-final="true"]')]
        .some((li) => /story|dragon/i.test(li.textContent)), null, 45000);
      const storyTurn = Number(await page.getAttribute('#transcript li[data-speaker="user"][data-final="true"]', 'data-turn'));
      await waitFor(page, 'the agent to speak', (rms) => window.dartmouthDemo.stats.agentStates.some((s) => s.state === 'speaking')
        && window.dartmouthDemo.stats.remoteMaxRms > rms, SOUND_RMS, 45000);
      await page.waitForTimeout(TALK_OVER_AFTER_MS);
      const before = await page.evaluate((rms) => {
        const s = window.dartmouthDemo.stats;
        const now = performance.now();
        return {
          state: document.getElementById('agent-state').dataset.state,
          loudRecently: s.remoteLevels.some(([t, level]) => now - t < 1000 && level > rms),
        };
      }, SOUND_RMS);
      assert.ok(before.state === 'speaking' && before.loudRecently,
        `the agent should still be speaking ${TALK_OVER_AFTER_MS} ms into its answer (state ${before.state}, sound in the last second: ${before.loudRecently})`);

      const t0 = await page.evaluate(async () => {
        const at = performance.now();
        await window.talkOver('__test/talk-over.wav');
        return at;
      });
      await waitFor(page, 'the agent to pause (state interrupted)', (at) => window.dartmouthDemo.stats.agentStates
        .some((s) => s.state === 'interrupted' && s.at > at), t0, 10000);
      await waitFor(page, 'the interruption to be confirmed', () => window.dartmouthDemo.stats.interruptions.length > 0, null, 20000);
      const { pausedAt, interruption } = await page.evaluate((at) => {
        const s = window.dartmouthDemo.stats;
        return { pausedAt: s.agentStates.find((x) => x.state === 'interrupted' && x.at > at).at, interruption: s.interruptions[0] };
      }, t0);
      console.log(`agent paused ${Math.round(pausedAt - t0)} ms after the talk-over began; interrupted turn ${interruption.turn}, heard: ${JSON.stringify(interruption.heard)}`);
      assert.equal(interruption.turn, storyTurn, 'the story\'s turn was interrupted');

      // The agent stops: within 1 s of pausing, the page hears ≥ 300 ms of silence.
      const quietAfter = await page.evaluate(({ at, rms }) => {
        let quietSince = null;
        for (const [t, level] of window.dartmouthDemo.stats.remoteLevels) {
          if (t < at) continue;
          if (level > rms) quietSince = null;
          else if (quietSince == null) quietSince = t;
          else if (t - quietSince >= 300) return quietSince - at;
        }
        return null;
      }, { at: pausedAt, rms: SOUND_RMS });
      assert.ok(quietAfter != null && quietAfter <= 1000, `the agent's audio went quiet ${quietAfter == null ? 'never' : Math.round(quietAfter) + ' ms'} after it paused`);
      console.log(`agent audio quiet ${Math.round(quietAfter)} ms after the pause`);

      // The transcript shows the interruption.
      const line = page.locator(`#transcript li[data-speaker="agent"][data-turn="${storyTurn}"]`);
      assert.equal(await line.getAttribute('data-interrupted'), 'true');
      const text = (await line.textContent()).replace(/\s+/g, ' ').trim();
      console.log('interrupted line:', text);
      assert.match(text, /interrupted — heard:/);

      // And the conversation goes on with what the person said over it.
      await waitFor(page, 'the talk-over\'s transcript', (turnNo) => [...document.querySelectorAll('#transcript li[data-speaker="user"][data-final="true"]')]
        .some((li) => Number(li.dataset.turn) > turnNo && /time|stop/i.test(li.textContent)), storyTurn, 20000);
      await page.screenshot({ path: path.join(RESULTS, 'gateway-barge-in.png'), fullPage: true });
      await hangUp(page);
      assert.deepEqual(problems, []);
    } catch (e) {
      await page.screenshot({ path: path.join(RESULTS, 'gateway-barge-in-failed.png'), fullPage: true }).catch(() => {});
      throw await failure(e, browser, page, gateway);
    } finally {
      await browser.close();
    }
  });
});
