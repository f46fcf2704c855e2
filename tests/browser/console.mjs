// Drive CardioNode's operator console in Debian's Chromium (puppeteer-core) as an operator and a read-only user.
// Usage: node console.mjs plan.json   (plan: base, chromium, out, study, delivery, users{operator,readonly})
// Steps: log in as the operator, find the study on the studies page, open it, retry its failed delivery on the
// jobs page (confirm page, then done), read the audit trail for the study, log out; log in read-only, see no
// action buttons, be refused the retry (confirm page and a POST with the session's own CSRF token).
// One screenshot per step; writes <out>/report.json with what each step saw.
import puppeteer from 'puppeteer-core';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(plan.out, { recursive: true });
const report = { steps: [], console_errors: [], page_errors: [] };
const browser = await puppeteer.launch({
  executablePath: plan.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run',
    '--disable-sync', '--disable-gpu'],
  defaultViewport: { width: 1400, height: 900 },
});

async function shot(page, name) {
  await page.screenshot({ path: `${plan.out}/${name}.png`, fullPage: true });
}

async function text(page) {
  return page.evaluate(() => document.body.innerText);
}

async function step(name, page, extra = {}) {
  const entry = { name, url: page.url(), title: await page.title(), ...extra };
  report.steps.push(entry);
  await shot(page, name);
  return entry;
}

async function login(page, user, password) {
  await page.goto(`${plan.base}/console/studies`, { waitUntil: 'networkidle0' });
  await page.type('#username', user);
  await page.type('#password', password);
  await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }), page.click('#login')]);
}

async function logout(page) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }), page.click('#logout')]);
}

try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  page.on('pageerror', (e) => report.page_errors.push(String(e)));

  // no session: the console sends us to the login page
  await page.goto(`${plan.base}/console/jobs`, { waitUntil: 'networkidle0' });
  await step('01-login-page', page, { has_login_form: Boolean(await page.$('#username')) });

  await login(page, plan.users.operator.name, plan.users.operator.password);
  await step('02-studies', page, { who: await page.$eval('#who', (e) => e.textContent),
    lists_study: (await text(page)).includes(plan.study) });

  await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }),
    page.click(`a[href="/console/studies/${plan.study}"]`)]);
  const studyText = await text(page);
  await step('03-study', page, { state: await page.$eval('#study-state', (e) => e.textContent),
    text: studyText, viewer: await page.$eval('#viewer', (e) => e.href).catch(() => null) });

  await page.goto(`${plan.base}/console/jobs`, { waitUntil: 'networkidle0' });
  await step('04-jobs-failed-delivery', page, { text: await text(page) });
  await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }),
    page.click(`#retry-delivery-${plan.delivery}`)]);
  await step('05-confirm-retry', page, { what: await page.$eval('#what', (e) => e.textContent) });
  await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }), page.click('#confirm')]);
  await step('06-retried', page, { done: await page.$eval('#done', (e) => e.textContent).catch(() => null) });

  // the delivery goes out now; the study page says so once it is sent
  let sent = false;
  for (let i = 0; i < 60 && !sent; i++) {
    await page.goto(`${plan.base}/console/studies/${plan.study}`, { waitUntil: 'networkidle0' });
    sent = (await page.$eval('#study-state', (e) => e.textContent)) === 'processed';
    if (!sent) await new Promise((r) => setTimeout(r, 500));
  }
  await step('07-study-processed', page, { processed: sent, text: await text(page) });

  await page.goto(`${plan.base}/console/audit`, { waitUntil: 'networkidle0' });
  await page.type('#audit-q', plan.study);
  await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }), page.click('#audit-search')]);
  await step('08-audit', page, { rows: await page.$$eval('#audit tr', (rows) => rows.slice(1).map((r) =>
    [...r.querySelectorAll('td')].map((c) => c.textContent.trim()))) });
  await logout(page);

  // read-only: sees the pages, no action, and is refused when trying anyway
  await login(page, plan.users.readonly.name, plan.users.readonly.password);
  await page.goto(`${plan.base}/console/jobs`, { waitUntil: 'networkidle0' });
  await step('09-readonly-jobs', page, { action_links: await page.$$eval('a[href^="/console/confirm/"]', (a) => a.length) });
  const refused = await page.goto(`${plan.base}/console/confirm/retry-delivery?target=${plan.delivery}`,
    { waitUntil: 'networkidle0' });
  await step('10-readonly-refused', page, { status: refused.status(),
    message: await page.$eval('#refused', (e) => e.textContent).catch(() => null) });
  // trying anyway: the retry form an operator would post, with this session's own CSRF token
  const [posted] = await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }),
    page.evaluate((target) => {
      const csrf = document.querySelector('input[name=csrf]').value;
      const form = document.createElement('form');
      form.method = 'post';
      form.action = '/console/actions/retry-delivery';
      for (const [name, value] of Object.entries({ csrf, target })) {
        const input = document.createElement('input');
        Object.assign(input, { type: 'hidden', name, value });
        form.appendChild(input);
      }
      document.body.appendChild(form);
      form.submit();
    }, String(plan.delivery))]);
  await step('11-readonly-post-refused', page, { status: posted.status(),
    message: await page.$eval('#refused', (e) => e.textContent).catch(() => null) });
  report.readonly_post = { status: posted.status(), refused: (await text(page)).includes('you are read-only') };
} catch (err) {
  report.error = String(err && err.stack || err);
} finally {
  writeFileSync(`${plan.out}/report.json`, JSON.stringify(report, null, 2));
  await browser.close();
}
