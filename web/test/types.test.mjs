// The package's types: the client's JSDoc type-checks (tsc --checkJs), the
// declarations in types/ are the ones tsc generates from it today, and an
// application in TypeScript can use the package (test/types/usage.ts).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(web, 'node_modules', '.bin', 'tsc');

function run(args) {
  const r = spawnSync(tsc, args, { cwd: web, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `tsc ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
}

test('the client and the device store type-check from their JSDoc (tsc --noEmit --checkJs)', () => {
  run(['-p', 'tsconfig.json', '--noEmit', '--checkJs']);
});

test('types/ holds the declarations generated from the JSDoc (npm run types)', () => {
  const out = mkdtempSync(path.join(tmpdir(), 'graphq-types-'));
  try {
    run(['-p', 'tsconfig.json', '--noEmit', 'false', '--declaration', '--emitDeclarationOnly', '--outDir', out]);
    const files = readdirSync(out).sort();
    assert.deepEqual(readdirSync(path.join(web, 'types')).sort(), files);
    for (const file of files) {
      assert.equal(readFileSync(path.join(web, 'types', file), 'utf8'), readFileSync(path.join(out, file), 'utf8'),
        `types/${file} is out of date: run npm run types`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('an application in TypeScript uses the package through its exports, React hook included', () => {
  run(['-p', 'test/types/tsconfig.json']);
});
