// How fast the widget is ready, measured in headless Chromium against a running Switchboard's
// demo page. A benchmark, not a test: run it with `scripts/widget.sh bench [N]`.
//
//   node bench.mjs --url URL [--runs N] [--gzip-bytes B] [--bundle FILE] [--write FILE]...
//
// Every run uses a fresh browser context (empty cache, no session) and measures, from the
// widget's own User Timing marks (`switchboard:ready` after boot, `switchboard:topics` when
// the topic list is filled) and the script's Resource Timing entry:
//   - script request → launcher interactive (the widget's <script> fetched, run, launcher wired)
//   - navigation start → launcher interactive
//   - launcher click → topics shown (GET /api/v1/config, first open)
// Results go to stdout and, with --write, between the widget-bench markers of each file.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { launch, step } from './lib.mjs';

const START = '<!-- widget-bench:start -->';
const END = '<!-- widget-bench:end -->';

function args() {
  const a = process.argv.slice(2);
  const out = { url: process.env.SWITCHBOARD_URL || '', runs: 30, write: [], gzipBytes: null, bundle: null };
  for (let i = 0; i < a.length; i++) {
    const v = a[i + 1];
    if (a[i] === '--url') out.url = v, i++;
    else if (a[i] === '--runs') out.runs = Number(v), i++;
    else if (a[i] === '--write') out.write.push(v), i++;
    else if (a[i] === '--gzip-bytes') out.gzipBytes = Number(v), i++;
    else if (a[i] === '--bundle') out.bundle = v, i++;
    else throw new Error(`unknown argument ${a[i]}`);
  }
  if (!out.url) throw new Error('no --url and no SWITCHBOARD_URL');
  if (!(out.runs >= 1)) throw new Error('--runs must be at least 1');
  out.url = out.url.replace(/\/+$/, '');
  return out;
}

function quantile(sorted, q) {
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function summary(values) {
  const s = [...values].sort((x, y) => x - y);
  return { median: quantile(s, 0.5), p95: quantile(s, 0.95), min: s[0], max: s[s.length - 1] };
}

async function once(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  try {
    const page = await context.newPage();
    await page.goto(url + '/', { waitUntil: 'load' });
    await page.waitForFunction(() => performance.getEntriesByName('switchboard:ready').length, null, { timeout: 15000 });
    const clickAt = await page.evaluate(() => {
      const t = performance.now();
      document.querySelector('[data-switchboard-widget]').shadowRoot.querySelector('button.launcher').click();
      return t;
    });
    await page.waitForFunction(() => performance.getEntriesByName('switchboard:topics').length, null, { timeout: 15000 });
    return await page.evaluate((clickAt) => {
      const script = performance
        .getEntriesByType('resource')
        .find((e) => /\/widget\/switchboard-widget[^/]*\.js/.test(e.name));
      const ready = performance.getEntriesByName('switchboard:ready')[0].startTime;
      const topics = performance.getEntriesByName('switchboard:topics')[0].startTime;
      return {
        scriptToReady: ready - script.startTime,
        navToReady: ready,
        clickToTopics: topics - clickAt,
        servedBytes: script.decodedBodySize,
        transferBytes: script.transferSize,
      };
    }, clickAt);
  } finally {
    await context.close();
  }
}

const fmt = (ms) => `${ms.toFixed(1)} ms`;

async function main() {
  const opt = args();
  const browser = await launch();
  const samples = [];
  const version = browser.version();
  try {
    await once(browser, opt.url); // warm-up: Switchboard's and Chromium's first-request costs
    for (let i = 0; i < opt.runs; i++) samples.push(await once(browser, opt.url));
  } finally {
    await browser.close();
  }
  const s = {
    scriptToReady: summary(samples.map((x) => x.scriptToReady)),
    navToReady: summary(samples.map((x) => x.navToReady)),
    clickToTopics: summary(samples.map((x) => x.clickToTopics)),
  };
  const served = samples[0].servedBytes;
  const bundleBytes = opt.bundle ? readFileSync(opt.bundle).length : null;
  const date = new Date().toISOString().slice(0, 10);
  const row = (name, x) => `| ${name} | ${fmt(x.median)} | ${fmt(x.p95)} | ${fmt(x.min)} | ${fmt(x.max)} |`;
  const section = [
    START,
    `Measured ${date} by \`scripts/widget.sh bench ${opt.runs}\`: headless Chromium ${version}, ` +
      `${cpus().length} cores, Switchboard and Synapse on loopback, ${opt.runs} runs after one warm-up, ` +
      'each in a fresh browser context (empty cache, no session).',
    '',
    '| from → to | median | p95 | min | max |',
    '|---|---|---|---|---|',
    row('widget script requested → launcher interactive', s.scriptToReady),
    row('navigation start → launcher interactive', s.navToReady),
    row('launcher click → topics shown (`GET /api/v1/config`)', s.clickToTopics),
    '',
    (bundleBytes !== null
      ? `Bundle \`web-widget/dist/switchboard-widget.min.js\`: ${bundleBytes} bytes` +
        (opt.gzipBytes ? `, **${opt.gzipBytes} bytes gzipped** (\`gzip -9\`)` : '') + '. '
      : '') +
      `The script Switchboard served in this run was ${served} bytes` +
      (bundleBytes !== null && served !== bundleBytes ? ' (not the minified bundle: see web-widget/README.md)' : '') +
      ', sent uncompressed over loopback.',
    END,
  ].join('\n');
  process.stdout.write(section + '\n');

  for (const file of opt.write) {
    let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n\n## Widget\n\n' + START + '\n' + END + '\n';
    const a = text.indexOf(START);
    const b = text.indexOf(END);
    if (a === -1 || b < a) {
      if (/benchmarks\.md$/.test(file)) {
        text = text.replace(/\s*$/, '\n\n## Widget\n\n' + START + '\n' + END + '\n');
      } else {
        throw new Error(`${file} has no ${START} … ${END} markers`);
      }
    }
    const i = text.indexOf(START);
    const j = text.indexOf(END) + END.length;
    writeFileSync(file, text.slice(0, i) + section + text.slice(j));
    step(`wrote the results into ${file}`);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);
