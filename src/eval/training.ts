import type { Engine } from '../engine/engine.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { parseSuiteConfig, type SuiteInput } from '../recipe/eval-schema.js';
import { loadSuite, runSuite, type Suite, type SuiteResult } from './suite.js';

/**
 * A recipe's suites during training: loaded once before the first step (bad suite files and
 * scorer modules stop the run before it trains), run when due, their metrics merged into that
 * step's metrics line. Custom scorers' workers run only while their suite runs, so a loop that
 * never calls close() leaks nothing.
 */
export class TrainingEvals {
  private constructor(
    private readonly suites: Suite[],
    private readonly every: number[],
  ) {}

  /** Loads `eval.suites` (paths relative to baseDir, the lock's); `eval.every` is each suite's default interval. */
  static async load(
    evalConfig: { every: number; suites?: readonly SuiteInput[] },
    baseDir: string,
  ): Promise<TrainingEvals> {
    const suites: Suite[] = [];
    try {
      for (const [i, s] of (evalConfig.suites ?? []).entries())
        suites.push(await loadSuite(parseSuiteConfig(s, `eval.suites[${i}]`), baseDir));
    } catch (e) {
      await Promise.all(suites.map((s) => s.close()));
      throw e;
    }
    for (const s of suites) s.scorer?.release?.();
    return new TrainingEvals(
      suites,
      suites.map((s) => s.config.every ?? evalConfig.every),
    );
  }

  /** Number of suites. */
  get size(): number {
    return this.suites.length;
  }

  /** True when some suite runs at this step (every N steps; all of them at the last step). */
  due(step: number, last: boolean): boolean {
    return this.every.some((n) => last || (n > 0 && step % n === 0));
  }

  /** Runs the suites due at this step; `metrics` goes into the step's metrics.jsonl line. */
  async run(
    engine: Engine,
    tokenizer: Tokenizer,
    step: number,
    last: boolean,
  ): Promise<{ metrics: Record<string, number>; results: SuiteResult[] }> {
    const metrics: Record<string, number> = {};
    const results: SuiteResult[] = [];
    for (const [i, s] of this.suites.entries()) {
      const n = this.every[i]!;
      if (!(last || (n > 0 && step % n === 0))) continue;
      const r = await runSuite(engine, tokenizer, s).finally(() => s.scorer?.release?.());
      results.push(r);
      Object.assign(metrics, r.metrics);
    }
    return { metrics, results };
  }

  /** Frees custom scorers' workers. */
  async close(): Promise<void> {
    await Promise.all(this.suites.map((s) => s.close()));
  }
}
