import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

// The extension value-imports a few library modules from its build (the lathe.runs comm types, the
// starter presets); webpack bundles them for the browser. They must bring nothing else along.
const repo = resolve(__dirname, '..', '..');
const libraryImport = /^import (?!type\b)[^;]*?from '\.\.\/\.\.\/dist\/(src\/[\w/.-]+)\.js'/gm;

function bundledLibraryModules(): string[] {
  const found = new Set<string>();
  for (const f of readdirSync(__dirname).filter((n) => n.endsWith('.ts') && !n.endsWith('.test.ts')))
    for (const m of readFileSync(join(__dirname, f), 'utf8').matchAll(libraryImport)) found.add(`${m[1]}.ts`);
  return [...found].sort();
}

describe('library modules in the browser bundle', () => {
  it('are the comm types and the presets, and import nothing at run time', () => {
    const modules = bundledLibraryModules();
    expect(modules).toEqual(['src/recipe/starters.ts', 'src/rooms/runs-comm.ts']);
    for (const m of modules) {
      const source = readFileSync(join(repo, m), 'utf8');
      const imports = [...source.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+'[^']+'/gm)].map((i) => i[0]);
      expect(imports.length, m).toBeGreaterThan(0);
      for (const i of imports)
        expect(i, `${m}: only type imports, or Node code follows it into the browser`).toMatch(
          /^(import|export) type\b/,
        );
      expect(source, m).not.toMatch(/\bimport\(|\brequire\(|\bprocess\.|\bBuffer\b/);
    }
  });
});
