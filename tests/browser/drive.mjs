// Open CardioNode results in OHIF with Debian's Chromium (puppeteer-core) and report what a person sees.
// Usage: node drive.mjs plan.json   (plan: base, chromium, out, studies[]; see tests/support/viewer.py)
// Per study, each in its own viewer page: the summary SC, the SR (every drawn measurement, stepped with the viewport arrows) and the
// SEG (segments listed in the segmentation panel); console errors, page errors and on-screen errors;
// one screenshot per step.  Writes <out>/report.json.
import puppeteer from 'puppeteer-core';
import { readFileSync, writeFileSync } from 'node:fs';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const SCREEN_ERRORS = ['Something went wrong', 'An error occurred', 'Failed to load', 'Unable to'];

const browser = await puppeteer.launch({
  executablePath: plan.chromium,
  headless: true,
  args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync'],
  defaultViewport: { width: 1600, height: 1000 },
});

// a visible element without children whose text is ``text`` (else the first that starts with it)
async function leafWithText(page, text) {
  const handle = await page.evaluateHandle((t) => {
    const leaves = [...document.querySelectorAll('body *')]
      .filter((e) => e.children.length === 0 && e.getClientRects().length);
    return leaves.find((e) => e.textContent.trim() === t) || leaves.find((e) => e.textContent.trim().startsWith(t)) || null;
  }, text);
  return handle.asElement();
}

// the viewer's first-visit tour pops up a while after loading and covers the viewport
async function dismissTour(page) {
  if (await page.evaluate(() => document.body.innerText.includes('Skip all'))) {
    await clickIfPresent(page, 'Skip all');
    await sleep(500);
  }
}

async function waitText(page, text, timeout) {
  try {
    await page.waitForFunction((t) => document.body.innerText.includes(t), { timeout }, text);
    return true;
  } catch {
    return false;
  }
}

// OHIF shows the study's first series on load and fetches its frames; opening another series while
// they are in flight tears the viewport down under its loader ("The stack viewport has been destroyed")
// or is ignored.  Wait until no DICOMweb request has been pending for a second (at most ``timeout``).
async function settle(page, timeout = 60000) {
  let quietSince = Date.now();
  for (const end = Date.now() + timeout; Date.now() < end;) {
    await sleep(250);
    if (page.pending.size) quietSince = Date.now();
    else if (Date.now() - quietSince >= 1000) return true;
  }
  return false;
}

// the study browser fills in its thumbnails one series at a time (slowly on a loaded machine): wait for this one
async function openSeries(page, label, timeout = 60000) {
  await dismissTour(page);
  let el = await leafWithText(page, label);
  for (const end = Date.now() + timeout; !el && Date.now() < end;) {
    await sleep(500);
    el = await leafWithText(page, label);
  }
  if (!el) throw new Error(`no series thumbnail '${label}' within ${timeout / 1000} s`);
  await el.click({ count: 2 });
}

async function clickIfPresent(page, text) {
  const el = await leafWithText(page, text);
  if (el) await el.click();
  return Boolean(el);
}

// the measurement labels OHIF draws in the viewport (SVG text of the annotation layer)
const drawnLabels = (page) => page.evaluate(() => [...document.querySelectorAll('[data-cy="viewport-pane"] svg text')]
  .map((t) => [...t.querySelectorAll('tspan')].map((s) => s.textContent).join('\n') || t.textContent)
  .filter((s) => s.trim()));

const report = { studies: {} };
let tourSeen = false; // the tour shows once per browser profile

// One object per viewer page: a fresh page loads the study, lets the first series finish loading
// (settle) and then opens one of our series, so that each object is judged on its own.
async function inViewer(study, r, step, fn) {
  const page = await browser.newPage();
  page.pending = new Set();
  const dicomweb = (req) => req.url().includes('/dicom-web/') || req.url().includes('/wado');
  page.on('request', (q) => { if (dicomweb(q)) page.pending.add(q); });
  page.on('requestfinished', (q) => page.pending.delete(q));
  page.on('requestfailed', (q) => page.pending.delete(q));
  page.on('console', (m) => { if (m.type() === 'error') r.console_errors.push(`${step}: ${m.text()}`); });
  page.on('pageerror', (e) => r.page_errors.push(`${step}: ${String(e.message || e)}`));
  const shot = async (name) => {
    const path = `${plan.out}/${study.name}-${name}.png`;
    await page.screenshot({ path });
    r.screenshots.push(path);
  };
  const t0 = Date.now();
  try {
    await page.goto(`${plan.base}/viewer?StudyInstanceUIDs=${study.study}`, { waitUntil: 'domcontentloaded', timeout: 120000 });
    await page.waitForSelector('[data-cy="study-browser-thumbnail"], [data-cy="viewport-pane"] canvas', { timeout: 120000 });
    if (!tourSeen && await waitText(page, 'Skip all', 15000)) {
      tourSeen = true;
      await dismissTour(page);
    }
    await settle(page);
    r.seconds[`${step}_load`] = (Date.now() - t0) / 1000;
    await fn(page, shot);
    r.seconds[step] = (Date.now() - t0) / 1000;
  } catch (e) {
    r.page_errors.push(`${step}: driver: ${e.message}`);
    await shot(`${step}-failure`).catch(() => {});
  }
  const text = await page.evaluate(() => document.body.innerText).catch(() => '');
  for (const s of SCREEN_ERRORS.filter((e) => text.includes(e))) r.screen_errors.push(`${step}: ${s}`);
  await page.close();
}

for (const study of plan.studies) {
  const r = { console_errors: [], page_errors: [], screen_errors: [], screenshots: [], segments: [], sr: [], seconds: {} };
  report.studies[study.name] = r;
  const t0 = Date.now();
  if (study.summary) {
    await inViewer(study, r, 'summary', async (page, shot) => {
      await openSeries(page, study.summary);
      await settle(page);
      await sleep(1000);
      await shot('summary');
    });
  }
  if (study.sr) {
    await inViewer(study, r, 'sr', async (page, shot) => {
      await openSeries(page, study.sr.label);
      await waitText(page, study.sr.expect_first, 60000);
      await sleep(1500);
      await shot('sr');
      r.sr_text = await page.$eval('[data-cy="viewport-grid"]', (e) => e.innerText).catch(() => '');
      for (let i = 0; i < study.sr.count; i += 1) {
        r.sr.push(await drawnLabels(page));
        await dismissTour(page);
        const next = await page.$('[data-cy="viewport-action-arrows-right"]');
        if (!next || i === study.sr.count - 1) break;
        await next.click();
        await sleep(1000);
      }
    });
  }
  if (study.seg) {
    await inViewer(study, r, 'seg', async (page, shot) => {
      await openSeries(page, study.seg.label);
      if (await waitText(page, 'Do you want to open this Segmentation?', 30000)) {
        const yes = await page.evaluateHandle(() => [...document.querySelectorAll('button')]
          .find((b) => b.textContent.trim() === 'Yes' && b.getClientRects().length) || null);
        if (yes.asElement()) await yes.asElement().click();
      }
      await sleep(3000);
      await dismissTour(page);
      const panel = await page.$('[data-cy="panelSegmentation-btn"]');
      if (panel) await panel.click();
      try {
        await page.waitForFunction((n) => document.querySelectorAll('[data-cy="data-row-title"]').length >= n,
          { timeout: 60000 }, study.seg.segments.length);
      } catch { /* reported below: segments listed */ }
      await sleep(1000);
      r.segments = await page.$$eval('[data-cy="data-row-title"]', (els) => els.map((e) => e.textContent.trim()));
      await shot('seg');
    });
  }
  r.seconds.total = (Date.now() - t0) / 1000;
}
await browser.close();
writeFileSync(`${plan.out}/report.json`, JSON.stringify(report, null, 1));
