// The widget's formatted-body sanitiser, case by case, in headless Chromium: the built bundle
// (the file Switchboard serves) is loaded into a blank page and its
// SwitchboardWidget.sanitizeHtml(html) must return exactly what the allow-list permits,
// without any payload running while it parses. Needs no server. Run by tests/e2e_widget.rs.
import { fileURLToPath } from 'node:url';
import { check, launch, run, step } from './lib.mjs';

const BUNDLE = fileURLToPath(new URL('../../web-widget/dist/switchboard-widget.min.js', import.meta.url));
const SAFE_A = (href, text) => `<a href="${href}" target="_blank" rel="noopener noreferrer">${text}</a>`;

// [input, exact expected output]
const CASES = [
  ['plain text', 'plain text'],
  ['<img src=x onerror="window.__xss=1">hi', 'hi'],
  ['<script>window.__xss=2</script>ok', 'ok'],
  ['<b onclick="window.__xss=3">bold</b> <strong>strong</strong>', '<b>bold</b> <strong>strong</strong>'],
  ['<i>i</i><em>em</em><u>u</u><s>s</s>', '<i>i</i><em>em</em><u>u</u><s>s</s>'],
  ['<a href="javascript:alert(1)">js</a>', 'js'],
  ['<a href=" JaVaScRiPt:window.__xss=5">js2</a>', 'js2'],
  ['<a href="data:text/html,<script>alert(1)</script>">data</a>', 'data'],
  ['<a href="/relative">rel</a>', 'rel'],
  ['<a name="anchor">no href</a>', 'no href'],
  ['<a href="https://example.org/x?y=1&amp;z=2" title="t" onclick="x()">ok</a>', SAFE_A('https://example.org/x?y=1&amp;z=2', 'ok')],
  ['<a href="http://example.org/">http</a>', SAFE_A('http://example.org/', 'http')],
  ['<a href="mailto:someone@example.org">mail</a>', SAFE_A('mailto:someone@example.org', 'mail')],
  ['<svg><script>window.__xss=6</script><a href="https://x.example/">s</a></svg>t', 't'],
  ['<math><mi xlink:href="javascript:alert(1)">m</mi></math>after', 'after'],
  ['<style>*{display:none}</style><p style="color:red" class="x" id="y">p</p>', '<p>p</p>'],
  ['<iframe src="https://example.org/"></iframe><object data="x"></object><embed src="x">x', 'x'],
  ['<mx-reply><blockquote>quoted</blockquote></mx-reply>answer', 'answer'],
  ['<span data-mx-color="#f00">span</span> <font color="red">font</font> <div><h1>Title</h1></div>', 'span font Title'],
  ['<ul><li>one</li><li><code>two</code></li></ul><ol><li>n</li></ol>', '<ul><li>one</li><li><code>two</code></li></ul><ol><li>n</li></ol>'],
  ['<pre><code>x &lt; y &amp;&amp; z</code></pre>', '<pre><code>x &lt; y &amp;&amp; z</code></pre>'],
  ['<blockquote>q</blockquote>a<br>b<br/>c', '<blockquote>q</blockquote>a<br>b<br>c'],
  ['<br>text inside br?</br>', '<br>text inside br?<br>'],
  // Mutation-XSS classic: the attribute text never becomes markup (we build nodes, not strings).
  ['<noscript><p title="</noscript><img src=x onerror=window.__xss=7>"></noscript>n', '<p>n</p>'],
  ['<template><img src=x onerror=window.__xss=8></template>t', 't'],
  ['<form action="https://example.org/"><input value="v"><button>b</button><textarea>ta</textarea></form>', 'b'],
  ['<img src="https://example.org/tracker.png" alt="alt">', ''],
  ['<!-- comment --><b>c</b>', '<b>c</b>'],
  ['<details open ontoggle="window.__xss=9">d</details>', 'd'],
  ['&lt;script&gt;alert(1)&lt;/script&gt;', '&lt;script&gt;alert(1)&lt;/script&gt;'],
];

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.setContent('<!doctype html><html><head><title>sanitiser</title></head><body></body></html>');
    await page.addScriptTag({ path: BUNDLE });
    await page.waitForFunction(() => window.SwitchboardWidget, null, { timeout: 10000 });

    const results = await page.evaluate(
      (inputs) => inputs.map((html) => window.SwitchboardWidget.sanitizeHtml(html)),
      CASES.map(([input]) => input),
    );
    const failures = [];
    CASES.forEach(([input, expected], i) => {
      if (results[i] !== expected) failures.push(`  ${JSON.stringify(input)}\n    -> ${JSON.stringify(results[i])}\n    expected ${JSON.stringify(expected)}`);
    });

    // Deep nesting neither crashes nor loses text.
    const deep = await page.evaluate(() =>
      window.SwitchboardWidget.sanitizeHtml('<b>'.repeat(200) + 'deep' + '</b>'.repeat(200)),
    );
    if (!deep.includes('deep') || deep.length > 2000) failures.push(`  deep nesting -> ${deep.slice(0, 120)}…`);

    await page.waitForTimeout(300); // any handler that got through would have run by now
    const xss = await page.evaluate(() => window.__xss);
    check(xss === undefined, `a payload ran while sanitising: window.__xss = ${xss}`);
    check(errors.length === 0, `errors in the page: ${errors.join('; ')}`);
    check(failures.length === 0, `sanitiser output differs from the allow-list:\n${failures.join('\n')}`);
    step(`sanitiser: ${CASES.length + 1} cases passed`);
  } finally {
    await browser.close();
  }
}

run(main, 60000);
