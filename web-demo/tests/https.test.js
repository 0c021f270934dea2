// The demo over HTTPS/WSS: `dartmouth serve --tls-self-signed` makes a development certificate,
// and headless Chromium (told to accept it, as a person clicking through the warning would) opens
// the page in a secure context, speaks a question and hears the agent answer. Skipped (with the
// reason printed) when the gateway binary, Chromium, espeak-ng or sox is missing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  RESULTS, gatewaySkipReason, launchBrowser, pageSummary, probe, speechWav, startGateway, waitFor, watchPage,
} from './helpers.js';

const skip = gatewaySkipReason();
if (skip) console.log(`SKIPPED: HTTPS browser test: ${skip}`);

const TEST_BUDGET_MS = 90000;
const SOUND_RMS = 0.02;

/** Where the models are: the usual home's, since the test gives the gateway a fresh home. */
function modelsDir() {
  const home = process.env.DARTMOUTH_HOME || path.join(os.homedir(), '.cache', 'dartmouth');
  return path.join(home, 'models');
}

describe('demo page over HTTPS with a self-signed certificate', { timeout: TEST_BUDGET_MS + 90000 }, () => {
  let gateway;
  let home;

  before(async () => {
    if (skip) return;
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'dartmouth-https-'));
    gateway = await startGateway('https', {
      args: ['--tls-self-signed'],
      env: { DARTMOUTH_HOME: home, DARTMOUTH_MODELS__DIR: modelsDir() },
      https: true,
    });
  });

  after(async () => {
    await gateway?.stop();
    if (home) fs.rmSync(home, { recursive: true, force: true });
  });

  test('the certificate is made, HSTS is sent, and the agent answers over WSS', { skip: skip || false, timeout: TEST_BUDGET_MS + 15000 }, async () => {
    assert.ok(gateway.url.startsWith('https://'));
    assert.ok(fs.existsSync(path.join(home, 'tls', 'self-signed.crt')), 'the certificate is under DARTMOUTH_HOME/tls');
    const key = fs.statSync(path.join(home, 'tls', 'self-signed.key'));
    assert.equal(key.mode & 0o777, 0o600, 'the private key is private');
    const health = await probe(`${gateway.url}/healthz`, true);
    assert.equal(health.status, 200);
    assert.match(String(health.headers['strict-transport-security']), /max-age=\d+/);
    const log = fs.readFileSync(gateway.logPath, 'utf8');
    const devKey = fs.readFileSync(path.join(home, 'dev-token-key'), 'utf8').trim();
    assert.ok(devKey.length >= 32 && !log.includes(devKey), 'the development key is not in the log');

    const wav = speechWav('question', [{ silence: 2 }, { say: 'What is the capital of France?' }, { silence: 25 }]);
    const browser = await launchBrowser(wav, { budgetMs: TEST_BUDGET_MS, extraArgs: ['--ignore-certificate-errors'] });
    const page = await browser.context.newPage();
    const problems = watchPage(page);
    try {
      await page.goto(`${gateway.url}/`);
      assert.equal(await page.evaluate(() => window.isSecureContext), true, 'a secure context (the microphone is allowed)');
      await page.fill('#room', `https-${process.pid}`);
      await waitFor(page, 'the agent list', () => document.querySelector('#agent option')?.value, null, 10000);
      await page.click('#connect');
      await waitFor(page, 'the call to connect', () => ['connected', 'failed'].includes(document.body.dataset.state), null, 20000);
      assert.equal(await page.getAttribute('body', 'data-state'), 'connected', await page.textContent('#alert'));
      await waitFor(page, 'the user\'s final transcript of the question', () => [...document.querySelectorAll('#transcript li[data-speaker="user"][data-final="true"]')]
        .some((li) => /capital|france/i.test(li.textContent)), null, 45000);
      await waitFor(page, 'agent audio in the page', (rms) => window.dartmouthDemo.stats.remoteMaxRms > rms, SOUND_RMS, 30000);
      const agentText = await page.$$eval('#transcript li[data-speaker="agent"]', (lis) => lis.map((li) => li.textContent));
      console.log('agent said over HTTPS:', agentText.join(' | '));
      await page.screenshot({ path: path.join(RESULTS, 'https-question.png'), fullPage: true });
      await page.click('#connect');
      await waitFor(page, 'the page to hang up', () => document.body.dataset.state === 'idle', null, 5000);
      assert.deepEqual(problems, []);
    } catch (e) {
      await page.screenshot({ path: path.join(RESULTS, 'https-failed.png'), fullPage: true }).catch(() => {});
      const state = await pageSummary(page).catch(() => '(page closed)');
      throw new Error(`${e.message}\n${state}\ngateway log:\n${gateway.logTail(20)}`, { cause: e });
    } finally {
      await browser.close();
    }
  });
});
