// Builds the chat page into dist/web: index.html and assets/ (the bundled script and style sheet,
// named by content hash so the gateway can let browsers cache them for good, and the icon).
// Run by `npm run build`; `node web/build.mjs` alone rebuilds only the page. No CDN: everything
// the page needs, markdown-it and the SDK included, is in the bundle.
import { build } from 'esbuild';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, '..', 'dist', 'web');
const assets = join(outdir, 'assets');

await rm(outdir, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const result = await build({
  entryPoints: { app: join(here, 'app.ts'), styles: join(here, 'styles.css') },
  outdir: assets,
  entryNames: '[name]-[hash]',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome109', 'firefox115', 'safari16'],
  minify: true,
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
});

const outputs = {};
for (const [file, output] of Object.entries(result.metafile.outputs)) {
  if (output.entryPoint === undefined) continue;
  const entry = basename(output.entryPoint).replace(/\.[a-z]+$/, '');
  outputs[entry] = basename(file);
}
if (!outputs.app || !outputs.styles) throw new Error(`web/build.mjs: esbuild did not produce the app and styles bundles (${JSON.stringify(outputs)})`);

const template = await readFile(join(here, 'index.html'), 'utf8');
const html = template.replace(/\{\{(app|styles)\}\}/g, (_, name) => outputs[name]);
await writeFile(join(outdir, 'index.html'), html);
await copyFile(join(here, 'favicon.svg'), join(assets, 'favicon.svg'));

// The licenses of the packages inside the bundle (markdown-it and its dependencies), beside it.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (match) packages.add(match[1]);
}
const notices = [];
for (const directory of [...packages].sort()) {
  const { name, version, license } = JSON.parse(await readFile(join(here, '..', directory, 'package.json'), 'utf8'));
  const file = ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license'].map((candidate) => join(here, '..', directory, candidate));
  let text = '';
  for (const candidate of file) {
    text = await readFile(candidate, 'utf8').catch(() => '');
    if (text) break;
  }
  notices.push(`${name}@${version} (${license})\n\n${text.trim() || `License: ${license}`}\n`);
}
await writeFile(join(assets, 'licenses.txt'), notices.join(`\n${'-'.repeat(72)}\n\n`));
