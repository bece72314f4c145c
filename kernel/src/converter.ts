// TypeScript cells: type-checked against the declarations of earlier cells, then emitted as a
// script whose top-level bindings live on globalThis, so later cells see them.
//
// The design follows tslab's converter (declarations of earlier cells carried as a d.ts prefix),
// rebuilt on the public TypeScript API with NodeNext resolution and ESM output, where tslab pins
// TypeScript 5.0, resolves like Node 10 and emits CommonJS `require` (tslab#72).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { LineMap } from './sourcemap.js';

/** A type or syntax error, located in the cell (1-based line and column). */
export interface CellDiagnostic {
  line: number;
  column: number;
  code: number;
  message: string;
  category: 'error' | 'warning';
}

/** A cell ready to run: a script body plus what is needed to map errors back to the cell. */
export interface CompiledCell {
  /** The cell's source as the user wrote it. */
  source: string;
  /** Errors that stop the cell from running (empty when it may run). */
  diagnostics: CellDiagnostic[];
  /** The script to run: an async function expression called at once; it resolves to the last expression's value. */
  script: string;
  /** Script line (1-based) to cell line (1-based). */
  cellLine(scriptLine: number): number | undefined;
}

/** Completion candidates in Jupyter's terms. */
export interface Completion {
  matches: string[];
  cursorStart: number;
  cursorEnd: number;
  types: { text: string; type: string; start: number; end: number }[];
}

/** Options of the compiler. */
export interface CellCompilerOptions {
  /** The notebook's folder: modules resolve from here. */
  cwd: string;
  /** Ambient declarations of the kernel's cell globals (display, clearOutput). */
  globals: string;
  /** Bare specifiers to redirect at type level and at run time, e.g. lathe → its d.ts and URL. */
  aliases?: Record<string, { types: string; url: string }>;
  /** Folder whose node_modules/@types supplies @types/node when the notebook's tree has none. */
  typeRootsFrom?: string;
}

// One declaration carried to later cells, keyed by the name it declares.
interface Carried {
  name: string;
  text: string;
}

const CHECK_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ['lib.es2023.d.ts'],
  types: ['node'],
  strict: true,
  // Notebooks lean on inference; an untyped parameter should not stop a cell.
  noImplicitAny: false,
  esModuleInterop: true,
  skipLibCheck: true,
  resolveJsonModule: true,
  declaration: true,
  noEmit: false,
  allowJs: false,
};

const EMIT_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  // Keep every value import: a later cell may use a binding this cell does not.
  verbatimModuleSyntax: true,
  sourceMap: true,
  removeComments: false,
};

/** Type-checks, completes and emits notebook cells, carrying declarations from cell to cell. */
export class CellCompiler {
  readonly cellPath: string;
  private readonly globalsPath: string;
  private readonly service: ts.LanguageService;
  private readonly aliases: Record<string, { types: string; url: string }>;
  private carried: Carried[] = [];
  private readonly snapshots = new Map<string, ts.IScriptSnapshot>();
  private readonly files = new Map<string, string>();
  private text = '';
  private version = 0;

  /** Creates the language service; the first check loads the libraries' types (about a second). */
  constructor(private readonly opts: CellCompilerOptions) {
    this.cellPath = join(opts.cwd, '__lathe_cell__.mts');
    this.globalsPath = join(opts.cwd, '__lathe_globals__.d.ts');
    this.aliases = opts.aliases ?? {};
    const options: ts.CompilerOptions = { ...CHECK_OPTIONS };
    const paths: ts.MapLike<string[]> = {};
    for (const [name, a] of Object.entries(this.aliases)) paths[name] = [a.types];
    if (Object.keys(paths).length) options.paths = paths;
    if (opts.typeRootsFrom && !hasNodeTypes(opts.cwd))
      options.typeRoots = [join(opts.typeRootsFrom, 'node_modules', '@types')];
    const host: ts.LanguageServiceHost = {
      // Only the cell changes: one project version per cell text spares TypeScript re-checking ~900 file versions per query.
      getProjectVersion: () => String(this.version),
      getScriptFileNames: () => [this.globalsPath, this.cellPath],
      getScriptVersion: (f) => (f === this.cellPath ? String(this.version) : '0'),
      getScriptSnapshot: (f) => {
        if (f === this.cellPath) return ts.ScriptSnapshot.fromString(this.text);
        if (f === this.globalsPath) return ts.ScriptSnapshot.fromString(opts.globals);
        // Library declarations (~900 files with lathe's tfjs types) are read once, not once per cell;
        // the notebook's own files are read again, as they may change between cells.
        const cached = this.snapshots.get(f);
        if (cached) return cached;
        const text = ts.sys.readFile(f);
        if (text === undefined) return undefined;
        const snap = ts.ScriptSnapshot.fromString(text);
        if (f.includes('/node_modules/') || !f.startsWith(opts.cwd)) this.snapshots.set(f, snap);
        return snap;
      },
      getCurrentDirectory: () => opts.cwd,
      getCompilationSettings: () => options,
      getDefaultLibFileName: (o) => ts.getDefaultLibFilePath(o),
      fileExists: (f) => f === this.cellPath || f === this.globalsPath || this.files.has(f) || ts.sys.fileExists(f),
      readFile: (f) => {
        if (f === this.cellPath) return this.text;
        if (f === this.globalsPath) return opts.globals;
        // package.json files are read for every program (module formats); those of packages are kept.
        let text = this.files.get(f);
        if (text === undefined) {
          text = ts.sys.readFile(f);
          if (text !== undefined && f.includes('/node_modules/')) this.files.set(f, text);
        }
        return text;
      },
      readDirectory: ts.sys.readDirectory,
      directoryExists: ts.sys.directoryExists,
      getDirectories: ts.sys.getDirectories,
      realpath: ts.sys.realpath,
      useCaseSensitiveFileNames: () => true,
    };
    this.service = ts.createLanguageService(host, ts.createDocumentRegistry());
  }

  /** Checks and emits a cell; on success its declarations are carried to later cells. */
  compile(source: string, cellName: string): CompiledCell {
    const declared = declaredNames(source);
    const { prefixLength } = this.load(source, declared);
    const diagnostics = this.diagnostics(prefixLength, source.length);
    const errors = diagnostics.filter((d) => d.category === 'error');
    if (errors.length) return { source, diagnostics: errors, script: '', cellLine: () => undefined };
    if (declared.size) this.carry(declared);
    return { source, diagnostics: [], ...emitCell(source, cellName, this.aliases) };
  }

  /** Completions at a cursor (a UTF-16 offset into the cell). */
  complete(source: string, cursor: number): Completion {
    const { prefixLength } = this.load(source, declaredNames(source), false);
    let start = cursor;
    while (start > 0 && /[\w$]/.test(source[start - 1]!)) start--;
    const word = source.slice(start, cursor);
    const info = this.service.getCompletionsAtPosition(this.cellPath, prefixLength + cursor, {
      includeCompletionsWithInsertText: true,
      includeCompletionsForModuleExports: false,
    });
    const entries = (info?.entries ?? []).filter((e) => e.kind !== ts.ScriptElementKind.warning);
    const rank = (name: string) =>
      name.startsWith(word) ? 0 : name.toLowerCase().startsWith(word.toLowerCase()) ? 1 : 2;
    const chosen = entries
      .filter((e) => rank(e.name) < 2)
      .sort(
        (a, b) => rank(a.name) - rank(b.name) || a.sortText.localeCompare(b.sortText) || a.name.localeCompare(b.name),
      );
    const seen = new Set<string>();
    const unique = chosen.filter((e) => !seen.has(e.name) && seen.add(e.name));
    return {
      matches: unique.map((e) => e.name),
      cursorStart: start,
      cursorEnd: cursor,
      types: unique.map((e) => ({ text: e.name, type: e.kind, start, end: cursor })),
    };
  }

  /** Hover text (signature and doc comment) for the symbol at a cursor, or undefined. */
  inspect(source: string, cursor: number): { signature: string; doc: string } | undefined {
    const { prefixLength } = this.load(source, declaredNames(source), false);
    const at = cursor > 0 && /[\w$]/.test(source[cursor - 1] ?? '') ? cursor - 1 : cursor;
    const info = this.service.getQuickInfoAtPosition(this.cellPath, prefixLength + at);
    if (!info) return undefined;
    const signature = ts.displayPartsToString(info.displayParts);
    const tags = (info.tags ?? []).map((t) => `@${t.name} ${ts.displayPartsToString(t.text)}`.trim());
    const doc = [ts.displayPartsToString(info.documentation), ...tags].filter(Boolean).join('\n');
    return { signature, doc };
  }

  /** Names that later cells can see (for tests and the comm's introspection). */
  carriedNames(): string[] {
    return [...new Set(this.carried.map((c) => c.name))];
  }

  /** Forgets every carried declaration. */
  reset(): void {
    this.carried = [];
  }

  // Sets the checked file to carried declarations (less those the cell redeclares) + the cell.
  private load(source: string, declared: Set<string>, exportAll = true): { prefixLength: number } {
    const prefix = this.carried
      .filter((c) => !declared.has(c.name))
      .map((c) => c.text)
      .join('\n');
    const head = `export {};\n${prefix}\n`;
    const names = [...declared];
    this.text = head + source + (exportAll && names.length ? `\n;export { ${names.join(', ')} };\n` : '\n');
    this.version++;
    return { prefixLength: head.length };
  }

  private diagnostics(prefixLength: number, length: number): CellDiagnostic[] {
    const all = [
      ...this.service.getSyntacticDiagnostics(this.cellPath),
      ...this.service.getSemanticDiagnostics(this.cellPath),
    ];
    const out: CellDiagnostic[] = [];
    const cellText = this.text.slice(prefixLength, prefixLength + length);
    for (const d of all) {
      if (d.start === undefined) continue;
      const pos = d.start - prefixLength;
      if (pos < 0 || pos > length) continue;
      const { line, column } = lineColumn(cellText, pos);
      out.push({
        line,
        column,
        code: d.code,
        message: ts.flattenDiagnosticMessageText(d.messageText, '\n'),
        category: d.category === ts.DiagnosticCategory.Error ? 'error' : 'warning',
      });
    }
    return out;
  }

  // Emits the checked file's declarations and keeps those of the names the cell declared.
  private carry(declared: Set<string>): void {
    const out = this.service.getEmitOutput(this.cellPath, true).outputFiles.find((f) => f.name.endsWith('.d.mts'));
    const found: Carried[] = [];
    if (out) {
      const sf = ts.createSourceFile('decl.d.mts', out.text, ts.ScriptTarget.ES2022, true);
      for (const stmt of sf.statements)
        for (const c of splitDeclaration(stmt, sf)) if (declared.has(c.name)) found.push(c);
    }
    // A name the emitter could not describe still exists at run time.
    for (const name of declared)
      if (!found.some((c) => c.name === name)) found.push({ name, text: `declare let ${name}: any;` });
    this.carried = [...this.carried.filter((c) => !declared.has(c.name)), ...found];
  }
}

/** Whether Jupyter should run the code now, wait for more lines, or reject it. */
export function isComplete(code: string): { status: 'complete' | 'incomplete' | 'invalid'; indent?: string } {
  if (!code.trim()) return { status: 'complete' };
  const { diagnostics = [] } = ts.transpileModule(code, {
    reportDiagnostics: true,
    fileName: 'cell.mts',
    compilerOptions: EMIT_OPTIONS,
  });
  if (!diagnostics.length) return { status: 'complete' };
  const atEnd = diagnostics.some((d) => {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    return (
      (d.start ?? 0) >= code.trimEnd().length &&
      (/expected\.$/.test(msg) || /^Unterminated (template|regular)/.test(msg))
    );
  });
  if (!atEnd) return { status: 'invalid' };
  let depth = 0;
  for (const ch of code) depth += '([{'.includes(ch) ? 1 : ')]}'.includes(ch) ? -1 : 0;
  return { status: 'incomplete', indent: '  '.repeat(Math.max(0, depth)) };
}

/** Top-level names a cell declares: variables (through patterns), functions, classes, types, imports. */
export function declaredNames(source: string): Set<string> {
  const sf = ts.createSourceFile('cell.mts', source, ts.ScriptTarget.ES2022, true);
  const names = new Set<string>();
  const bind = (n: ts.BindingName) => {
    if (ts.isIdentifier(n)) names.add(n.text);
    else for (const el of n.elements) if (!ts.isOmittedExpression(el)) bind(el.name);
  };
  for (const s of sf.statements) {
    if (ts.isVariableStatement(s)) s.declarationList.declarations.forEach((d) => bind(d.name));
    else if ((ts.isFunctionDeclaration(s) || ts.isClassDeclaration(s)) && s.name) names.add(s.name.text);
    else if (ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s) || ts.isEnumDeclaration(s))
      names.add(s.name.text);
    else if (ts.isModuleDeclaration(s) && ts.isIdentifier(s.name)) names.add(s.name.text);
    else if (ts.isImportEqualsDeclaration(s)) names.add(s.name.text);
    else if (ts.isImportDeclaration(s) && s.importClause) {
      const c = s.importClause;
      if (c.name) names.add(c.name.text);
      if (c.namedBindings && ts.isNamespaceImport(c.namedBindings)) names.add(c.namedBindings.name.text);
      if (c.namedBindings && ts.isNamedImports(c.namedBindings))
        c.namedBindings.elements.forEach((e) => names.add(e.name.text));
    }
  }
  return names;
}

// One carried declaration per name: variable lists and import lists are split.
function splitDeclaration(stmt: ts.Statement, sf: ts.SourceFile): Carried[] {
  if (ts.isExportDeclaration(stmt) || ts.isExportAssignment(stmt)) return [];
  if (ts.isVariableStatement(stmt)) {
    const flags = stmt.declarationList.flags;
    const kw = flags & ts.NodeFlags.Const ? 'const' : flags & ts.NodeFlags.Let ? 'let' : 'var';
    return stmt.declarationList.declarations.flatMap((d) =>
      ts.isIdentifier(d.name) ? [{ name: d.name.text, text: `declare ${kw} ${d.getText(sf)};` }] : [],
    );
  }
  if (ts.isImportDeclaration(stmt)) {
    const c = stmt.importClause;
    if (!c) return [];
    const from = stmt.moduleSpecifier.getText(sf);
    const type = c.isTypeOnly ? 'type ' : '';
    const out: Carried[] = [];
    if (c.name) out.push({ name: c.name.text, text: `import ${type}${c.name.text} from ${from};` });
    const nb = c.namedBindings;
    if (nb && ts.isNamespaceImport(nb))
      out.push({ name: nb.name.text, text: `import ${type}* as ${nb.name.text} from ${from};` });
    if (nb && ts.isNamedImports(nb))
      for (const e of nb.elements)
        out.push({ name: e.name.text, text: `import ${type}{ ${e.getText(sf)} } from ${from};` });
    return out;
  }
  const named = stmt as ts.Statement & { name?: ts.Node };
  if (named.name && ts.isIdentifier(named.name)) {
    const text = stmt.getText(sf);
    return [
      {
        name: named.name.text,
        text: /^(declare|interface|type|import|export)\b/.test(text) ? text : `declare ${text}`,
      },
    ];
  }
  return [];
}

function lineColumn(text: string, pos: number): { line: number; column: number } {
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  return { line, column: pos - before.lastIndexOf('\n') };
}

function hasNodeTypes(dir: string): boolean {
  for (let d = dir; ;) {
    if (existsSync(join(d, 'node_modules', '@types', 'node', 'package.json'))) return true;
    const up = join(d, '..');
    if (up === d) return false;
    d = up;
  }
}

// Text edits that keep every line where it was, so the emit's source map stays valid.
class Edits {
  private list: { start: number; end: number; text: string }[] = [];
  constructor(private readonly src: string) {}
  replace(start: number, end: number, text: string): void {
    const lost = countLines(this.src.slice(start, end)) - countLines(text);
    this.list.push({ start, end, text: text + '\n'.repeat(Math.max(0, lost)) });
  }
  apply(): string {
    let out = this.src;
    // Back to front; at one offset, a replacement goes before an insertion.
    for (const e of [...this.list].sort((a, b) => b.start - a.start || b.end - a.end))
      out = out.slice(0, e.start) + e.text + out.slice(e.end);
    return out;
  }
}

const countLines = (s: string) => s.split('\n').length - 1;

/** Emits a cell as an async function body whose top-level bindings are assignments to globals. */
export function emitCell(
  source: string,
  cellName: string,
  aliases: Record<string, { url: string }> = {},
): Pick<CompiledCell, 'script' | 'cellLine'> {
  const out = ts.transpileModule(source, { fileName: `${cellName}.mts`, compilerOptions: EMIT_OPTIONS });
  const js = out.outputText.replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n');
  const map = new LineMap((JSON.parse(out.sourceMapText ?? '{"mappings":""}') as { mappings: string }).mappings);
  const sf = ts.createSourceFile('cell.mjs', js, ts.ScriptTarget.ES2022, true, ts.ScriptKind.JS);
  const edits = new Edits(js);
  const hoisted: string[] = [];
  const spec = (node: ts.Expression) => {
    const name = (node as ts.StringLiteral).text;
    return JSON.stringify(aliases[name]?.url ?? name);
  };
  const stripExport = (node: ts.Node) => {
    for (const m of ts.canHaveModifiers(node) ? (ts.getModifiers(node) ?? []) : []) {
      if (m.kind === ts.SyntaxKind.ExportKeyword || m.kind === ts.SyntaxKind.DefaultKeyword)
        edits.replace(m.getStart(sf), m.getEnd(), '');
    }
  };
  const stmts = sf.statements;
  let last = stmts.length - 1;
  while (last >= 0 && (ts.isExportDeclaration(stmts[last]!) || ts.isEmptyStatement(stmts[last]!))) last--;
  stmts.forEach((s, i) => {
    const start = s.getStart(sf);
    if (ts.isImportDeclaration(s)) {
      const attrs = s.attributes ? `, { with: ${s.attributes.getText(sf).replace(/^(with|assert)\s*/, '')} }` : '';
      const load = `await import(${spec(s.moduleSpecifier)}${attrs})`;
      const c = s.importClause;
      if (!c) return edits.replace(start, s.getEnd(), `${load};`);
      const parts: string[] = [];
      const nb = c.namedBindings;
      if (nb && ts.isNamespaceImport(nb)) {
        parts.push(`${nb.name.text} = ${load}`);
        if (c.name) parts.push(`${c.name.text} = ${nb.name.text}.default`);
      } else {
        const props: string[] = c.name ? [`default: ${c.name.text}`] : [];
        if (nb && ts.isNamedImports(nb))
          for (const e of nb.elements)
            props.push(`${JSON.stringify(e.propertyName?.getText(sf) ?? e.name.text)}: ${e.name.text}`);
        parts.push(`({ ${props.join(', ')} } = ${load})`);
      }
      return edits.replace(start, s.getEnd(), `(${parts.join(', ')});`);
    }
    if (ts.isExportDeclaration(s)) return edits.replace(start, s.getEnd(), '');
    if (ts.isVariableStatement(s)) {
      const list = s.declarationList;
      // `using` and `await using` (both carry the Using bit) stay local to the cell.
      if (list.flags & ts.NodeFlags.Using) return;
      const isVar = !(list.flags & (ts.NodeFlags.Const | ts.NodeFlags.Let));
      const first = list.declarations[0];
      if (!first) return;
      // `const a = 1, {b} = o;` becomes `(a = 1, {b} = o);`
      edits.replace(start, first.getStart(sf), '(');
      for (const d of list.declarations) {
        if (d.initializer) continue;
        const name = d.name.getText(sf);
        edits.replace(
          d.name.getEnd(),
          d.name.getEnd(),
          isVar ? ` = globalThis[${JSON.stringify(name)}]` : ' = undefined',
        );
      }
      const end = s.getEnd();
      if (js[end - 1] === ';') edits.replace(end - 1, end, ');');
      else edits.replace(end, end, ');');
      return;
    }
    if (ts.isFunctionDeclaration(s) && s.name && s.body) {
      stripExport(s);
      hoisted.push(`globalThis.${s.name.text} = ${s.name.text};`);
      return;
    }
    if (ts.isClassDeclaration(s) && s.name) {
      stripExport(s);
      const mods = ts.getModifiers(s) ?? [];
      const at = mods.length ? mods[mods.length - 1]!.getEnd() : start;
      edits.replace(start, start, `${s.name.text} = `);
      if (at !== start) edits.replace(at, at, '');
      edits.replace(s.getEnd(), s.getEnd(), ';');
      return;
    }
    if (ts.isExportAssignment(s)) {
      const expr = s.expression.getText(sf);
      return edits.replace(start, s.getEnd(), i === last ? `return (${expr});` : `${expr};`);
    }
    if (i === last && ts.isExpressionStatement(s))
      edits.replace(start, s.getEnd(), `return (${s.expression.getText(sf)});`);
  });
  const body = edits.apply();
  // Line 1 of the script is the wrapper; cell emit starts on line 2.
  const script = `(async () => {${hoisted.join(' ')}\n${body}\n})()`;
  return {
    script,
    cellLine: (scriptLine: number) => {
      const pos = map.original(scriptLine - 2, 0);
      return pos ? pos.line + 1 : undefined;
    },
  };
}
