/**
 * Seeded generator of Tally programs (training corpus) and completion tasks (RL).
 * Programs mix finance-flavoured templates (readable, learnable patterns) with random
 * expressions (syntax coverage); every emitted program is run and kept only if it succeeds.
 */
import { formatNumber, run } from './lang.js';

/** Deterministic random source; never touches Math.random. */
export interface Rng {
  /** Uniform float in [0, 1). */
  next(): number;
  /** Uniform integer in [lo, hi], both inclusive. */
  int(lo: number, hi: number): number;
  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T;
  /** True with probability p. */
  chance(p: number): boolean;
}

/** Creates a mulberry32 generator; the seed is hashed first so nearby seeds give unrelated streams. */
export function createRng(seed: number): Rng {
  let h = Math.imul((seed | 0) ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  let a = (h ^ (h >>> 16)) >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (items) => {
      if (items.length === 0) throw new Error('pick from empty list');
      return items[Math.floor(next() * items.length)]!;
    },
    chance: (p) => next() < p,
  };
}

/** A generated program together with what it prints. */
export interface GeneratedProgram {
  source: string;
  output: string;
}

/** An RL task: complete the final `emit` line so the program prints `expected`. */
export interface GeneratedTask {
  /** Program lines up to and including the final line prefix "emit ". */
  prompt: string;
  /** Output of the full reference program (lines joined by "\n"). */
  expected: string;
  /** Reference completion: the expression of the final emit line. */
  answer: string;
  /** The full reference program (prompt + answer). */
  source: string;
}

/** Size limits the generator respects (the model sees 128-token windows). */
export const PROGRAM_LIMITS = { minLines: 3, maxLines: 8, minChars: 60, maxChars: 250, maxOutputLines: 10 };

// ---------------------------------------------------------------- vocabulary

type Kind = 'price' | 'qty' | 'rate' | 'money' | 'ratio' | 'count';

interface Var {
  name: string;
  kind: Kind;
}

const INPUT_NAMES: Record<Kind, readonly string[]> = {
  price: ['px', 'bid', 'ask', 'entry', 'exit', 'strike', 'close', 'open', 'last', 'fair', 'ref_px'],
  qty: ['qty', 'size', 'lots', 'shares', 'units', 'clip'],
  rate: ['rate', 'fee_rate', 'tax_rate', 'haircut', 'carry', 'slip_rate'],
  money: ['cash', 'capital', 'limit', 'budget', 'margin', 'nav', 'cap'],
  ratio: ['vol', 'beta', 'delta', 'weight', 'lev', 'hedge_ratio'],
  count: ['days', 'n', 'periods', 'legs', 'steps'],
};

// Input kinds weighted toward the price * qty core most programs are about.
const INPUT_KINDS: readonly Kind[] = [
  'price',
  'price',
  'price',
  'qty',
  'qty',
  'qty',
  'rate',
  'rate',
  'money',
  'money',
  'ratio',
  'count',
];

const GENERIC_NAMES = ['adj', 'val', 'res', 'tmp', 'acc', 'sig', 'score', 'level', 'target', 'base', 'amt', 'x1', 'y2'];

interface Template {
  needs: readonly Kind[];
  out: Kind;
  names: readonly string[];
  build: (args: readonly string[], rng: Rng) => string;
}

const TEMPLATES: readonly Template[] = [
  {
    needs: ['price', 'qty'],
    out: 'money',
    names: ['notional', 'value', 'cost', 'gross'],
    build: ([p, q]) => `${p} * ${q}`,
  },
  {
    needs: ['money', 'rate'],
    out: 'money',
    names: ['fee', 'tax', 'accrued', 'charge'],
    build: ([m, r]) => `${m} * ${r}`,
  },
  {
    needs: ['money'],
    out: 'money',
    names: ['fee', 'commission', 'tax', 'rebate'],
    build: ([m], g) => `${m} * bps(${bpsLit(g)})`,
  },
  {
    needs: ['money', 'money'],
    out: 'money',
    names: ['net', 'pnl', 'diff', 'residual'],
    build: ([a, b]) => `${a} - ${b}`,
  },
  { needs: ['money', 'money'], out: 'money', names: ['total', 'gross', 'sum'], build: ([a, b]) => `${a} + ${b}` },
  {
    needs: ['price', 'price'],
    out: 'price',
    names: ['mid', 'avg_px', 'center'],
    build: ([a, b]) => `(${a} + ${b}) / 2`,
  },
  {
    needs: ['price', 'price'],
    out: 'price',
    names: ['spread', 'edge', 'move', 'gap'],
    build: ([a, b]) => `${a} - ${b}`,
  },
  {
    needs: ['price', 'price', 'qty'],
    out: 'money',
    names: ['pnl', 'gain', 'upl'],
    build: ([a, b, q]) => `(${a} - ${b}) * ${q}`,
  },
  {
    needs: ['price', 'price'],
    out: 'ratio',
    names: ['ret', 'chg', 'drift'],
    build: ([a, b]) => `(${a} - ${b}) / ${b}`,
  },
  {
    needs: ['price', 'price'],
    out: 'price',
    names: ['payoff', 'intrinsic', 'itm'],
    build: ([a, b]) => `max(${a} - ${b}, 0)`,
  },
  {
    needs: ['money', 'ratio'],
    out: 'money',
    names: ['exposure', 'risk', 'hedge', 'var_amt'],
    build: ([m, r]) => `${m} * ${r}`,
  },
  {
    needs: ['money', 'money'],
    out: 'money',
    names: ['alloc', 'capped', 'usable'],
    build: ([a, b]) => `min(${a}, ${b})`,
  },
  { needs: ['money'], out: 'money', names: ['loss', 'abs_pnl', 'drawdown'], build: ([m]) => `abs(${m})` },
  {
    needs: ['price', 'ratio'],
    out: 'price',
    names: ['shock_px', 'stress_px', 'down_px'],
    build: ([p, r]) => `${p} * (1 - ${r})`,
  },
  {
    needs: ['price', 'rate'],
    out: 'price',
    names: ['net_px', 'exec_px', 'all_in'],
    build: ([p, r]) => `${p} * (1 + ${r})`,
  },
  { needs: ['money', 'count'], out: 'money', names: ['per_day', 'daily', 'slice'], build: ([m, c]) => `${m} / ${c}` },
  {
    needs: ['qty', 'count'],
    out: 'qty',
    names: ['total_qty', 'fill', 'child'],
    build: ([q, c], g) => (g.chance(0.5) ? `${q} * ${c}` : `round(${q} / ${c}, 0)`),
  },
  {
    needs: ['price'],
    out: 'price',
    names: ['tick_px', 'rounded', 'quote'],
    build: ([p], g) => `round(${p} * ${ratioLit(g, 0.9, 1.1)}, 2)`,
  },
  {
    needs: ['money', 'price'],
    out: 'qty',
    names: ['max_qty', 'can_buy', 'fill_qty'],
    build: ([m, p]) => `round(${m} / ${p}, 0)`,
  },
];

function bpsLit(rng: Rng): string {
  return String(rng.pick([1, 2, 2.5, 3, 5, 7.5, 10, 15, 20, 25, 50, rng.int(1, 99)]));
}

function ratioLit(rng: Rng, lo: number, hi: number): string {
  return formatNumber(lo + Math.round(rng.next() * (hi - lo) * 100) / 100);
}

/** Literal source text for a fresh input of a kind. */
function inputLiteral(rng: Rng, kind: Kind): string {
  switch (kind) {
    case 'price': {
      const d = rng.pick([0, 1, 2, 2, 2]);
      const f = 10 ** d;
      return formatNumber(rng.int(5 * f, 500 * f) / f);
    }
    case 'qty':
      return String(rng.pick([rng.int(1, 50), rng.int(1, 100) * 10, rng.int(1, 50) * 100]));
    case 'rate':
      return rng.chance(0.6) ? `bps(${bpsLit(rng)})` : formatNumber(rng.int(1, 300) / 10_000);
    case 'money':
      return String(rng.pick([rng.int(1, 100) * 100, rng.int(1, 500) * 1000, rng.int(10, 99) * 10_000]));
    case 'ratio':
      return ratioLit(rng, 0.05, 2.5);
    case 'count':
      return String(rng.int(2, 30));
  }
}

// ---------------------------------------------------------------- random expressions

interface Node {
  text: string;
  prec: number; // 1: + -, 2: * /, 3: atom / call / negation
}

function atom(rng: Rng, vars: readonly Var[]): Node {
  if (vars.length > 0 && rng.chance(0.75)) return { text: rng.pick(vars).name, prec: 3 };
  const lit = rng.chance(0.5) ? String(rng.int(1, 100)) : formatNumber(rng.int(1, 9999) / 100);
  return { text: lit, prec: 3 };
}

function binary(op: string, l: Node, r: Node): Node {
  const prec = op === '+' || op === '-' ? 1 : 2;
  const lt = l.prec < prec ? `(${l.text})` : l.text;
  // Same-precedence right operands keep their parentheses: a - (b - c) differs from a - b - c.
  const rt = r.prec <= prec ? `(${r.text})` : r.text;
  return { text: `${lt} ${op} ${rt}`, prec };
}

function randomExpr(rng: Rng, vars: readonly Var[], depth: number): Node {
  if (depth <= 0 || rng.chance(0.3)) return atom(rng, vars);
  const roll = rng.next();
  if (roll < 0.65) {
    return binary(
      rng.pick(['+', '-', '*', '/', '*', '+']),
      randomExpr(rng, vars, depth - 1),
      randomExpr(rng, vars, depth - 1),
    );
  }
  if (roll < 0.92) {
    const fn = rng.pick(['round', 'min', 'max', 'abs', 'bps']);
    const a = randomExpr(rng, vars, depth - 1).text;
    if (fn === 'round') return { text: `round(${a}, ${rng.int(0, 4)})`, prec: 3 };
    if (fn === 'min' || fn === 'max') return { text: `${fn}(${a}, ${randomExpr(rng, vars, depth - 1).text})`, prec: 3 };
    return { text: `${fn}(${a})`, prec: 3 };
  }
  const inner = atom(rng, vars);
  return { text: `-${inner.text}`, prec: 3 };
}

// ---------------------------------------------------------------- program builder

class Builder {
  readonly lines: string[] = [];
  readonly vars: Var[] = [];
  private readonly used = new Set<string>();

  constructor(
    private readonly rng: Rng,
    readonly budget: number, // total lines including the final emit
  ) {}

  get left(): number {
    return this.budget - 1 - this.lines.length;
  }

  freshName(pool: readonly string[]): string {
    const free = pool.filter((n) => !this.used.has(n));
    if (free.length > 0) return this.rng.pick(free);
    const generic = GENERIC_NAMES.filter((n) => !this.used.has(n));
    if (generic.length > 0) return this.rng.pick(generic);
    for (let i = 1; ; i++) if (!this.used.has(`v${i}`)) return `v${i}`;
  }

  define(name: string, kind: Kind, expr: string): void {
    this.used.add(name);
    this.vars.push({ name, kind });
    this.lines.push(`let ${name} = ${expr}`);
  }

  ofKind(kind: Kind): Var[] {
    return this.vars.filter((v) => v.kind === kind);
  }

  /** Distinct variables matching the kinds, or undefined when the program lacks them. */
  bind(needs: readonly Kind[]): string[] | undefined {
    const taken = new Set<string>();
    const out: string[] = [];
    for (const k of needs) {
      const options = this.ofKind(k).filter((v) => !taken.has(v.name));
      if (options.length === 0) return undefined;
      const v = this.rng.pick(options);
      taken.add(v.name);
      out.push(v.name);
    }
    return out;
  }

  addInput(kind: Kind): void {
    this.define(this.freshName(INPUT_NAMES[kind]), kind, inputLiteral(this.rng, kind));
  }

  addDerived(): void {
    const rng = this.rng;
    const usable = TEMPLATES.filter((t) => this.bind(t.needs) !== undefined);
    if (usable.length > 0 && rng.chance(0.8)) {
      const t = rng.pick(usable);
      const args = this.bind(t.needs)!;
      this.define(this.freshName(t.names), t.out, t.build(args, rng));
      return;
    }
    const kind = rng.pick<Kind>(['money', 'price', 'ratio']);
    this.define(this.freshName(GENERIC_NAMES), kind, randomExpr(rng, this.vars, rng.int(1, 3)).text);
  }

  /** One `set` line that updates an existing variable from itself and others. */
  updateLine(target: Var): string {
    const rng = this.rng;
    const others = this.vars.filter((v) => v.name !== target.name);
    const other = others.length > 0 ? rng.pick(others).name : String(rng.int(1, 50));
    const rate = this.ofKind('rate')[0]?.name ?? `bps(${bpsLit(rng)})`;
    const t = target.name;
    const forms = [
      `${t} * (1 + ${rate})`,
      `${t} + ${other}`,
      `${t} - ${other}`,
      `round(${t} * ${ratioLit(rng, 0.5, 1.5)}, 2)`,
      `${t} * 2`,
      `max(${t} - ${other}, 0)`,
      `${t} + ${String(rng.int(1, 100))}`,
      randomExpr(rng, this.vars, 2).text,
    ];
    return `set ${t} = ${rng.pick(forms)}`;
  }

  condition(): string {
    const rng = this.rng;
    const cmp = (): string => {
      const a = rng.pick(this.vars);
      const sameKind = this.ofKind(a.kind).filter((v) => v.name !== a.name);
      // Compare like with like (price vs price, or a plausible literal of the same kind).
      const rhs =
        sameKind.length > 0 && rng.chance(0.6)
          ? rng.pick(sameKind).name
          : rng.chance(0.25)
            ? '0'
            : inputLiteral(rng, a.kind);
      const op = rng.chance(0.06) ? rng.pick(['==', '!=']) : rng.pick(['>', '<', '>=', '<=']);
      return `${a.name} ${op} ${rhs}`;
    };
    const r = rng.next();
    if (r < 0.12) return `${cmp()} and ${cmp()}`;
    if (r < 0.2) return `${cmp()} or ${cmp()}`;
    return cmp();
  }

  ifLine(): string {
    const rng = this.rng;
    if (rng.chance(0.3)) {
      const a = rng.pick(this.vars).name;
      const b = rng.pick(this.vars).name;
      return `if ${this.condition()} then emit ${a} else emit ${b}`;
    }
    const target = rng.pick(this.vars);
    const alt = rng.chance(0.4) ? `set ${target.name} = 0` : this.updateLine(target);
    return `if ${this.condition()} then ${this.updateLine(target)} else ${alt}`;
  }

  /** A repeat block of 3-4 lines; may add a `let acc = 0` line before it. */
  addRepeat(): void {
    const rng = this.rng;
    let target: Var;
    if (rng.chance(0.35) && this.left >= 4) {
      const name = this.freshName(['total', 'acc', 'cum', 'running']);
      this.define(name, 'money', '0');
      target = { name, kind: 'money' };
    } else {
      target = rng.pick(this.vars);
    }
    const n = rng.pick([2, 3, 3, 4, 5, 6, rng.int(2, 12)]);
    const body: string[] = [this.updateLine(target)];
    if (this.left >= 4 && rng.chance(0.5)) {
      body.push(rng.chance(0.6) ? `emit round(${target.name}, ${rng.int(0, 2)})` : this.ifLine());
    }
    if (rng.chance(0.3)) body.reverse();
    this.lines.push(`repeat ${n} {`, ...body.map((l) => `  ${l}`), '}');
  }

  finalEmit(): string {
    const rng = this.rng;
    const last = this.vars[this.vars.length - 1]!;
    const r = rng.next();
    if (r < 0.45) return `emit ${last.name}`;
    if (r < 0.75) return `emit round(${last.name}, ${rng.pick([0, 2, 2, 2, 4])})`;
    if (r < 0.85) return `emit ${randomExpr(rng, this.vars, 2).text}`;
    const usable = TEMPLATES.filter((t) => this.bind(t.needs) !== undefined);
    if (usable.length === 0) return `emit ${last.name}`;
    const t = rng.pick(usable);
    return `emit ${t.build(this.bind(t.needs)!, rng)}`;
  }
}

function draftProgram(rng: Rng): string {
  const b = new Builder(rng, rng.int(PROGRAM_LIMITS.minLines, PROGRAM_LIMITS.maxLines));
  const inputs = rng.int(1, Math.min(3, b.budget - 2));
  const core: Kind[] = rng.chance(0.5) ? ['price', 'qty'] : [];
  for (let i = 0; i < inputs; i++) b.addInput(core[i] ?? rng.pick(INPUT_KINDS));
  while (b.left > 0) {
    const r = rng.next();
    if (r < 0.5) b.addDerived();
    else if (r < 0.62) b.addInput(rng.pick(INPUT_KINDS));
    else if (r < 0.72 && b.left >= 3) b.addRepeat();
    else if (r < 0.84) b.lines.push(b.ifLine());
    else if (r < 0.92) b.lines.push(b.updateLine(rng.pick(b.vars)));
    else b.lines.push(`emit ${rng.pick(b.vars).name}`);
  }
  b.lines.push(b.finalEmit());
  return b.lines.join('\n');
}

/** Generates one program that parses, runs without error and fits PROGRAM_LIMITS. */
export function generateProgram(rng: Rng): GeneratedProgram {
  for (;;) {
    const source = draftProgram(rng);
    const lines = source.split('\n').length;
    if (source.length < PROGRAM_LIMITS.minChars || source.length > PROGRAM_LIMITS.maxChars) continue;
    if (lines < PROGRAM_LIMITS.minLines || lines > PROGRAM_LIMITS.maxLines) continue;
    const res = run(source);
    if (!res.ok) continue;
    if (res.output.split('\n').length > PROGRAM_LIMITS.maxOutputLines) continue;
    return { source, output: res.output };
  }
}

const TASK_ANSWER = /^emit (?:[a-z][a-z0-9_]*|round\([a-z][a-z0-9_]*, [0-4]\))$/;

/** Generates a completion task: the prompt is a program cut right after its final "emit ". */
export function generateTask(rng: Rng, opts: { maxChars?: number } = {}): GeneratedTask {
  const maxChars = opts.maxChars ?? 200;
  for (;;) {
    const { source, output } = generateProgram(rng);
    if (source.length > maxChars) continue;
    const cut = source.lastIndexOf('\n') + 1;
    const lastLine = source.slice(cut);
    // Keep only endings a model can infer from the prompt and corpus conventions:
    // a variable, or a variable rounded; no fresh literals to guess.
    if (!TASK_ANSWER.test(lastLine)) continue;
    const prompt = source.slice(0, cut) + 'emit ';
    return { prompt, expected: output, answer: lastLine.slice('emit '.length), source };
  }
}
