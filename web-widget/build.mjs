// Builds dist/switchboard-widget.min.js from switchboard-widget.js (the source).
//
//   node build.mjs           write the bundle
//   node build.mjs --check   fail if the committed bundle differs from a fresh build
//
// esbuild only minifies: no bundling, no polyfills, no runtime of its own. The output is a
// pure function of the source and esbuild's pinned version (package-lock.json), so the
// committed bundle can be checked byte for byte, and the file Switchboard serves is never stale.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { transform, version } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, 'switchboard-widget.js');
const target = join(here, 'dist', 'switchboard-widget.min.js');

const banner =
  '/* Switchboard web widget. Built by scripts/widget.sh from web-widget/switchboard-widget.js ' +
  `(esbuild ${version}); do not edit. */`;

const { code } = await transform(readFileSync(source, 'utf8'), {
  loader: 'js',
  minify: true,
  target: 'es2020',
  charset: 'ascii',
  legalComments: 'none',
  banner,
});


if (process.argv.includes('--check')) {
  let committed = null;
  try {
    committed = readFileSync(target, 'utf8');
  } catch {
    // missing: reported below
  }
  if (committed !== code) {
    console.error(
      `error: ${target} is ${committed === null ? 'missing' : 'stale'}: ` +
        'run `scripts/widget.sh build` and commit the result',
    );
    process.exit(1);
  }
  console.log(`widget bundle up to date: ${code.length} bytes`);
} else {
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, code);
  console.log(`wrote ${target}: ${code.length} bytes`);
}
