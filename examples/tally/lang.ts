/**
 * Tally: a tiny, line-based, made-up quant-finance scripting language.
 *
 * Grammar (one statement per line; blank lines and leading spaces are ignored):
 *   program := stmt+                      -- the last top-level statement must be `emit`
 *   stmt    := "let" NAME "=" expr         -- define a new variable (not inside repeat)
 *            | "set" NAME "=" expr         -- update an existing variable
 *            | "emit" expr                 -- append the value as one output line
 *            | "if" cond "then" simple "else" simple
 *            | "repeat" INT "{" NL stmt+ "}"   -- `}` on its own line
 *   simple  := "set" NAME "=" expr | "emit" expr
 *   cond    := conj ("or" conj)* ;  conj := cmp ("and" cmp)* ;  cmp := expr (< <= > >= == !=) expr
 *   expr    := term (("+" | "-") term)* ;  term := unary (("*" | "/") unary)*
 *   unary   := "-" unary | NUMBER | NAME | BUILTIN "(" expr ("," expr)* ")" | "(" expr ")"
 * NAME is [a-z][a-z0-9_]*, NUMBER is 0 | [1-9][0-9]* with an optional ".digits" part.
 * Built-ins: round(x, n), min(a, b, ...), max(a, b, ...), abs(x), bps(x) = x / 10000.
 * Numbers print with at most 4 decimals, trailing zeros trimmed, so output compares exactly.
 */

/** Reserved words; none of them can name a variable. */
export const KEYWORDS = ['let', 'set', 'emit', 'if', 'then', 'else', 'repeat', 'and', 'or'] as const;

/** Built-in functions and how many arguments each takes. */
export const BUILTINS: Readonly<Record<string, { min: number; max: number }>> = {
  round: { min: 2, max: 2 },
  min: { min: 2, max: 8 },
  max: { min: 2, max: 8 },
  abs: { min: 1, max: 1 },
  bps: { min: 1, max: 1 },
};

/** Default execution budget: statements executed plus loop iterations. */
export const DEFAULT_MAX_STEPS = 10_000;

/** Largest magnitude a value may reach; keeps printing free of exponent notation. */
export const MAX_MAGNITUDE = 1e12;

/** Source position, 1-based. */
export interface Pos {
  line: number;
  col: number;
}

/** Arithmetic operator. */
export type BinOp = '+' | '-' | '*' | '/';
/** Comparison operator (only valid inside `if` conditions). */
export type CmpOp = '<' | '<=' | '>' | '>=' | '==' | '!=';

/** Expression node. */
export type Expr =
  | (Pos & { kind: 'num'; value: number })
  | (Pos & { kind: 'var'; name: string })
  | (Pos & { kind: 'neg'; arg: Expr })
  | (Pos & { kind: 'bin'; op: BinOp; left: Expr; right: Expr })
  | (Pos & { kind: 'call'; fn: string; args: Expr[] });

/** Condition node of an `if`. */
export type Cond =
  (Pos & { kind: 'cmp'; op: CmpOp; left: Expr; right: Expr }) | (Pos & { kind: 'and' | 'or'; left: Cond; right: Cond });

/** Statement allowed in `if` branches. */
export type SimpleStmt = (Pos & { kind: 'set'; name: string; value: Expr }) | (Pos & { kind: 'emit'; value: Expr });

/** Statement node. */
export type Stmt =
  | SimpleStmt
  | (Pos & { kind: 'let'; name: string; value: Expr })
  | (Pos & { kind: 'if'; cond: Cond; then: SimpleStmt; else: SimpleStmt })
  | (Pos & { kind: 'repeat'; count: number; body: Stmt[] });

/** A parsed program. */
export interface Program {
  body: Stmt[];
}

/** Result of `parse`. */
export type ParseResult = { ok: true; program: Program } | { ok: false; error: string; line: number; col: number };

/** Result of `run`. */
export type RunResult = { ok: true; output: string } | { ok: false; error: string; line?: number; col?: number };

class TallyError extends Error {
  constructor(
    readonly detail: string,
    readonly line: number,
    readonly col: number,
  ) {
    super(`${line}:${col}: ${detail}`);
  }
}

// ---------------------------------------------------------------- lexer

type TokKind = 'num' | 'name' | 'kw' | 'op' | 'nl' | 'eof';

interface Token extends Pos {
  kind: TokKind;
  text: string;
  value: number;
}

const KEYWORD_SET: ReadonlySet<string> = new Set(KEYWORDS);
const TWO_CHAR_OPS = new Set(['<=', '>=', '==', '!=']);
const ONE_CHAR_OPS = new Set(['=', '+', '-', '*', '/', '(', ')', ',', '{', '}', '<', '>']);

const isDigit = (c: string): boolean => c >= '0' && c <= '9';
const isLower = (c: string): boolean => c >= 'a' && c <= 'z';

function lex(src: string): Token[] {
  const toks: Token[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const push = (kind: TokKind, text: string, start: number, value = 0): void => {
    toks.push({ kind, text, value, line, col: start - lineStart + 1 });
  };
  while (i < src.length) {
    const c = src[i]!;
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
    } else if (c === '\n') {
      push('nl', '\n', i);
      i++;
      line++;
      lineStart = i;
    } else if (isDigit(c)) {
      const start = i;
      while (i < src.length && isDigit(src[i]!)) i++;
      if (src[start] === '0' && i - start > 1) {
        throw new TallyError('leading zeros are not allowed', line, start - lineStart + 1);
      }
      if (src[i] === '.') {
        i++;
        if (!isDigit(src[i] ?? '')) {
          throw new TallyError('expected digit after "."', line, i - lineStart + 1);
        }
        while (i < src.length && isDigit(src[i]!)) i++;
      }
      const text = src.slice(start, i);
      push('num', text, start, Number(text));
    } else if (isLower(c)) {
      const start = i;
      while (i < src.length && (isLower(src[i]!) || isDigit(src[i]!) || src[i] === '_')) i++;
      const text = src.slice(start, i);
      push(KEYWORD_SET.has(text) ? 'kw' : 'name', text, start);
    } else if (TWO_CHAR_OPS.has(src.slice(i, i + 2))) {
      push('op', src.slice(i, i + 2), i);
      i += 2;
    } else if (ONE_CHAR_OPS.has(c)) {
      push('op', c, i);
      i++;
    } else {
      const shown = c >= ' ' && c <= '~' ? c : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
      throw new TallyError(`unexpected character "${shown}"`, line, i - lineStart + 1);
    }
  }
  push('eof', '', i);
  return toks;
}

// ---------------------------------------------------------------- parser

const CMP_OPS: ReadonlySet<string> = new Set(['<', '<=', '>', '>=', '==', '!=']);

class Parser {
  private pos = 0;

  constructor(private readonly toks: Token[]) {}

  private peek(): Token {
    return this.toks[this.pos]!;
  }

  private next(): Token {
    const t = this.toks[this.pos]!;
    if (t.kind !== 'eof') this.pos++;
    return t;
  }

  private fail(msg: string, at: Pos = this.peek()): never {
    throw new TallyError(msg, at.line, at.col);
  }

  private isOp(text: string): boolean {
    const t = this.peek();
    return t.kind === 'op' && t.text === text;
  }

  private isKw(text: string): boolean {
    const t = this.peek();
    return t.kind === 'kw' && t.text === text;
  }

  private expectOp(text: string): Token {
    if (!this.isOp(text)) this.fail(`expected "${text}"`);
    return this.next();
  }

  private expectKw(text: string): Token {
    if (!this.isKw(text)) this.fail(`expected "${text}"`);
    return this.next();
  }

  private expectName(): Token {
    const t = this.peek();
    if (t.kind === 'kw') this.fail(`"${t.text}" is a keyword, expected a variable name`);
    if (t.kind !== 'name') this.fail('expected a variable name');
    if (Object.hasOwn(BUILTINS, t.text)) this.fail(`"${t.text}" is a built-in function, not a variable`);
    return this.next();
  }

  private endLine(): void {
    const t = this.peek();
    if (t.kind === 'nl') this.next();
    else if (t.kind !== 'eof') this.fail('expected end of line');
  }

  parseProgram(): Program {
    const body = this.parseBlock(0);
    const last = body[body.length - 1];
    if (last === undefined) this.fail('program must end with emit');
    if (last.kind !== 'emit') this.fail('program must end with emit', last);
    return { body };
  }

  private parseBlock(depth: number): Stmt[] {
    const out: Stmt[] = [];
    for (;;) {
      while (this.peek().kind === 'nl') this.next();
      const t = this.peek();
      if (t.kind === 'eof') {
        if (depth > 0) this.fail('expected "}"');
        return out;
      }
      if (t.kind === 'op' && t.text === '}') {
        if (depth === 0) this.fail('unexpected "}"');
        return out;
      }
      out.push(this.parseStatement(depth));
    }
  }

  private parseStatement(depth: number): Stmt {
    const t = this.peek();
    if (t.kind === 'kw') {
      switch (t.text) {
        case 'let': {
          // A single flat scope: loops may only update, so `let` never runs twice.
          if (depth > 0) this.fail('"let" is not allowed inside repeat, use "set"');
          this.next();
          const name = this.expectName().text;
          this.expectOp('=');
          const value = this.parseExpr();
          this.endLine();
          return { kind: 'let', name, value, line: t.line, col: t.col };
        }
        case 'set':
        case 'emit': {
          const s = this.parseSimple();
          this.endLine();
          return s;
        }
        case 'if': {
          this.next();
          const cond = this.parseCond();
          this.expectKw('then');
          const thenS = this.parseSimple();
          this.expectKw('else');
          const elseS = this.parseSimple();
          this.endLine();
          return { kind: 'if', cond, then: thenS, else: elseS, line: t.line, col: t.col };
        }
        case 'repeat': {
          this.next();
          const n = this.peek();
          if (n.kind !== 'num' || !Number.isInteger(n.value) || n.text.includes('.') || n.value < 1) {
            this.fail('expected a positive whole repeat count');
          }
          this.next();
          this.expectOp('{');
          if (this.peek().kind !== 'nl') this.fail('expected end of line after "{"');
          const body = this.parseBlock(depth + 1);
          if (body.length === 0) this.fail('repeat body is empty');
          this.expectOp('}');
          this.endLine();
          return { kind: 'repeat', count: n.value, body, line: t.line, col: t.col };
        }
        default:
          break;
      }
    }
    return this.fail('expected "let", "set", "emit", "if" or "repeat"');
  }

  private parseSimple(): SimpleStmt {
    const t = this.peek();
    if (t.kind === 'kw' && t.text === 'set') {
      this.next();
      const name = this.expectName().text;
      this.expectOp('=');
      return { kind: 'set', name, value: this.parseExpr(), line: t.line, col: t.col };
    }
    if (t.kind === 'kw' && t.text === 'emit') {
      this.next();
      return { kind: 'emit', value: this.parseExpr(), line: t.line, col: t.col };
    }
    return this.fail('expected "set" or "emit"');
  }

  private parseCond(): Cond {
    let left = this.parseConj();
    while (this.isKw('or')) {
      const t = this.next();
      left = { kind: 'or', left, right: this.parseConj(), line: t.line, col: t.col };
    }
    return left;
  }

  private parseConj(): Cond {
    let left = this.parseCmp();
    while (this.isKw('and')) {
      const t = this.next();
      left = { kind: 'and', left, right: this.parseCmp(), line: t.line, col: t.col };
    }
    return left;
  }

  private parseCmp(): Cond {
    const left = this.parseExpr();
    const t = this.peek();
    if (t.kind !== 'op' || !CMP_OPS.has(t.text)) this.fail('expected a comparison operator');
    this.next();
    const right = this.parseExpr();
    return { kind: 'cmp', op: t.text as CmpOp, left, right, line: t.line, col: t.col };
  }

  private parseExpr(): Expr {
    let left = this.parseTerm();
    while (this.isOp('+') || this.isOp('-')) {
      const t = this.next();
      left = { kind: 'bin', op: t.text as BinOp, left, right: this.parseTerm(), line: t.line, col: t.col };
    }
    return left;
  }

  private parseTerm(): Expr {
    let left = this.parseUnary();
    while (this.isOp('*') || this.isOp('/')) {
      const t = this.next();
      left = { kind: 'bin', op: t.text as BinOp, left, right: this.parseUnary(), line: t.line, col: t.col };
    }
    return left;
  }

  private parseUnary(): Expr {
    const t = this.peek();
    if (t.kind === 'op' && t.text === '-') {
      this.next();
      return { kind: 'neg', arg: this.parseUnary(), line: t.line, col: t.col };
    }
    if (t.kind === 'num') {
      this.next();
      return { kind: 'num', value: t.value, line: t.line, col: t.col };
    }
    if (t.kind === 'name') {
      const spec = Object.hasOwn(BUILTINS, t.text) ? BUILTINS[t.text] : undefined;
      this.next();
      if (spec === undefined) {
        if (this.isOp('(')) this.fail(`unknown function "${t.text}"`, t);
        return { kind: 'var', name: t.text, line: t.line, col: t.col };
      }
      this.expectOp('(');
      const args: Expr[] = [this.parseExpr()];
      while (this.isOp(',')) {
        this.next();
        args.push(this.parseExpr());
      }
      this.expectOp(')');
      if (args.length < spec.min || args.length > spec.max) {
        const want = spec.min === spec.max ? `${spec.min}` : `${spec.min} to ${spec.max}`;
        this.fail(`${t.text} takes ${want} argument${spec.max === 1 ? '' : 's'}`, t);
      }
      return { kind: 'call', fn: t.text, args, line: t.line, col: t.col };
    }
    if (t.kind === 'op' && t.text === '(') {
      this.next();
      const inner = this.parseExpr();
      this.expectOp(')');
      return inner;
    }
    return this.fail('expected an expression');
  }
}

/** Parses Tally source; errors carry a 1-based line and column and read "line:col: message". */
export function parse(source: string): ParseResult {
  try {
    return { ok: true, program: new Parser(lex(source)).parseProgram() };
  } catch (e) {
    if (e instanceof TallyError) return { ok: false, error: e.message, line: e.line, col: e.col };
    throw e;
  }
}

// ---------------------------------------------------------------- interpreter

/** Rounds half away from zero to `digits` decimals; the epsilon nudge makes 1.005 -> 1.01 as a person expects. */
export function roundTo(x: number, digits: number): number {
  const f = 10 ** digits;
  const r = (Math.sign(x) * Math.round(Math.abs(x) * f * (1 + Number.EPSILON))) / f;
  return r === 0 ? 0 : r; // no "-0"
}

/** Canonical number text: at most 4 decimals, trailing zeros and "-0" removed. */
export function formatNumber(x: number): string {
  let s = roundTo(x, 4).toFixed(4);
  s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s === '-0' ? '0' : s;
}

class Machine {
  private readonly vars = new Map<string, number>();
  readonly out: string[] = [];
  private steps = 0;

  constructor(private readonly maxSteps: number) {}

  private tick(at: Pos): void {
    this.steps++;
    if (this.steps > this.maxSteps) {
      throw new TallyError(`step limit exceeded (${this.maxSteps} steps)`, at.line, at.col);
    }
  }

  private check(v: number, at: Pos): number {
    if (!Number.isFinite(v) || Math.abs(v) >= MAX_MAGNITUDE) {
      throw new TallyError('number out of range (limit 1e12)', at.line, at.col);
    }
    return v;
  }

  exec(stmts: readonly Stmt[]): void {
    for (const s of stmts) this.stmt(s);
  }

  private stmt(s: Stmt): void {
    this.tick(s);
    switch (s.kind) {
      case 'let':
        if (this.vars.has(s.name)) throw new TallyError(`"${s.name}" is already defined, use "set"`, s.line, s.col);
        this.vars.set(s.name, this.expr(s.value));
        return;
      case 'set':
        if (!this.vars.has(s.name)) throw new TallyError(`unknown variable "${s.name}"`, s.line, s.col);
        this.vars.set(s.name, this.expr(s.value));
        return;
      case 'emit':
        this.out.push(formatNumber(this.expr(s.value)));
        return;
      case 'if':
        this.stmt(this.cond(s.cond) ? s.then : s.else);
        return;
      case 'repeat':
        for (let i = 0; i < s.count; i++) {
          this.tick(s);
          this.exec(s.body);
        }
        return;
    }
  }

  private cond(c: Cond): boolean {
    switch (c.kind) {
      case 'and':
        return this.cond(c.left) && this.cond(c.right);
      case 'or':
        return this.cond(c.left) || this.cond(c.right);
      case 'cmp': {
        const a = this.expr(c.left);
        const b = this.expr(c.right);
        switch (c.op) {
          case '<':
            return a < b;
          case '<=':
            return a <= b;
          case '>':
            return a > b;
          case '>=':
            return a >= b;
          case '==':
            return a === b;
          case '!=':
            return a !== b;
        }
      }
    }
  }

  private expr(e: Expr): number {
    switch (e.kind) {
      case 'num':
        return this.check(e.value, e);
      case 'var': {
        const v = this.vars.get(e.name);
        if (v === undefined) throw new TallyError(`unknown variable "${e.name}"`, e.line, e.col);
        return v;
      }
      case 'neg':
        return -this.expr(e.arg);
      case 'bin': {
        const a = this.expr(e.left);
        const b = this.expr(e.right);
        switch (e.op) {
          case '+':
            return this.check(a + b, e);
          case '-':
            return this.check(a - b, e);
          case '*':
            return this.check(a * b, e);
          case '/':
            if (b === 0) throw new TallyError('division by zero', e.line, e.col);
            return this.check(a / b, e);
        }
        throw new TallyError(`unknown operator "${String(e.op)}"`, e.line, e.col);
      }
      case 'call': {
        const args = e.args.map((a) => this.expr(a));
        const x = args[0]!;
        switch (e.fn) {
          case 'round': {
            const n = args[1]!;
            if (!Number.isInteger(n) || n < 0 || n > 4) {
              throw new TallyError('round digits must be a whole number from 0 to 4', e.line, e.col);
            }
            return roundTo(x, n);
          }
          case 'min':
            return Math.min(...args);
          case 'max':
            return Math.max(...args);
          case 'abs':
            return Math.abs(x);
          case 'bps':
            return x / 10_000;
          default:
            throw new TallyError(`unknown function "${e.fn}"`, e.line, e.col);
        }
      }
    }
  }
}

/** Parses and runs Tally source deterministically; output is the emitted lines joined by "\n". */
export function run(source: string, opts: { maxSteps?: number } = {}): RunResult {
  const parsed = parse(source);
  if (!parsed.ok) return parsed;
  const m = new Machine(opts.maxSteps ?? DEFAULT_MAX_STEPS);
  try {
    m.exec(parsed.program.body);
  } catch (e) {
    if (e instanceof TallyError) return { ok: false, error: e.message, line: e.line, col: e.col };
    throw e;
  }
  return { ok: true, output: m.out.join('\n') };
}
