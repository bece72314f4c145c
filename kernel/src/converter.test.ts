import { join } from 'node:path';
import vm from 'node:vm';
import { beforeAll, describe, expect, it } from 'vitest';
import { CellCompiler, declaredNames, isComplete } from './converter.js';
import { CELL_GLOBALS } from './globals.js';
import { KERNEL_DIR, REPO_ROOT } from './kernel.js';

const cwd = join(REPO_ROOT, 'notebooks');
const lib = join(REPO_ROOT, 'dist', 'src', 'index.js');
let compiler: CellCompiler;

// Runs a cell as the kernel does: compile, then the script in this context.
async function run(source: string, n = 1): Promise<unknown> {
  const c = compiler.compile(source, `cell-${n}`);
  if (c.diagnostics.length) throw new Error(c.diagnostics.map((d) => `${d.line}:${d.column} ${d.message}`).join('\n'));
  const script = new vm.Script(c.script, {
    filename: join(cwd, `.t-${n}.mts`),
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  return script.runInThisContext();
}

describe('CellCompiler', () => {
  beforeAll(() => {
    compiler = new CellCompiler({
      cwd,
      globals: CELL_GLOBALS,
      aliases: { lathe: { types: lib.replace(/\.js$/, '.d.ts'), url: `file://${lib}` } },
      typeRootsFrom: KERNEL_DIR,
    });
  });

  it('carries declarations and values from cell to cell, with the last expression as the value', async () => {
    expect(
      await run('const kA = 2;\nfunction kDouble(n: number) { return n * kA; }\nclass KBox { v = 3 }\nkDouble(4)', 1),
    ).toBe(8);
    expect(await run('let kB = kDouble(new KBox().v);\nkB', 2)).toBe(6);
    // Redeclaring a name replaces it, with its new type.
    expect(await run("const kA = 'text';\nkA.toUpperCase()", 3)).toBe('TEXT');
    expect(compiler.compile('const n: number = kA;', 'cell-4').diagnostics[0]?.message).toMatch(
      /string.*not assignable.*number/,
    );
  });

  it('supports top-level await, destructuring, enums and interfaces', async () => {
    expect(
      await run(
        'const { kX, kY: [kZ] } = await Promise.resolve({ kX: 1, kY: [2] });\nenum KE { A, B }\ninterface KP { q: number }\nconst kp: KP = { q: 3 };\nkX + kZ + KE.B + kp.q',
      ),
    ).toBe(7);
    expect(await run('kp.q + kX')).toBe(4);
  });

  it('imports lathe and any ESM package by name (tslab#72), and keeps imports for later cells', async () => {
    // chai 5 is ESM-only ("type": "module", no require condition): require() of it is what tslab#72 hits.
    await run(
      "import { recipe } from 'lathe';\nimport { parse } from 'yaml';\nimport { expect as chaiExpect } from 'chai';",
    );
    expect(await run("typeof recipe.pretrain + ' ' + parse('a: 1').a + ' ' + typeof chaiExpect")).toBe(
      'function 1 function',
    );
  });

  it('reports type errors at the cell line and does not run the cell', () => {
    const c = compiler.compile('const ok = 1;\nconst bad: string = ok;\n', 'cell-9');
    expect(c.diagnostics).toHaveLength(1);
    expect(c.diagnostics[0]).toMatchObject({ line: 2, column: 7, code: 2322 });
  });

  it('maps runtime error lines back to the cell', () => {
    const c = compiler.compile('const q = 1;\n\ninterface Gone { a: string }\nthrow new Error("x")', 'cell-10');
    const line = c.script.split('\n').findIndex((l) => l.includes('throw')) + 1;
    expect(c.cellLine(line)).toBe(4);
  });

  it('completes and inspects the lathe API', () => {
    compiler.compile("import { recipe } from 'lathe';", 'cell-11');
    const c = compiler.complete('recipe.pre', 10);
    expect(c.matches).toContain('pretrain');
    expect(c.cursorStart).toBe(7);
    const info = compiler.inspect('recipe.pretrain', 15);
    expect(info?.signature).toMatch(/function pretrain/);
    expect(info?.doc).toMatch(/pre-training recipe/);
    expect(compiler.complete('display.ht', 10).matches).toEqual(['html']);
  });
});

describe('isComplete', () => {
  it.each([
    ['1 + 1', 'complete'],
    ['function f() {', 'incomplete'],
    ['const xs = [1, 2,', 'incomplete'],
    ['const s = `abc', 'incomplete'],
    ['const = 1;', 'invalid'],
    ['a b c', 'invalid'],
  ])('%j is %s', (code, status) => {
    expect(isComplete(code).status).toBe(status);
  });
});

describe('declaredNames', () => {
  it('finds variables through patterns, functions, classes, types and imports', () => {
    const names = declaredNames(
      "import d, { a as b } from 'x';\nimport * as ns from 'y';\nconst { p, q: [r] } = o;\nfunction f() {}\nclass C {}\ntype T = 1;\ninterface I {}\nenum E {}\nfor (const z of []) {}",
    );
    expect([...names].sort()).toEqual(['C', 'E', 'I', 'T', 'b', 'd', 'f', 'ns', 'p', 'r']);
  });
});
