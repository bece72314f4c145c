import type { RankWork } from '../engine/engine.js';

// The ranks of a multi-rank run, step by step: each one's tokens/s, the slowest, and when the
// slowest lags the rest enough to name it (a straggler holds every other rank at each collective).

/** A rank slower than this share of the other ranks' median is named a straggler. */
export const STRAGGLER_SHARE = 0.8;

/** What a step's metric line and the run's events get from the ranks' work. */
export interface RankReport {
  metrics: { rank_tokens_per_s: number[]; slowest_rank: number };
  /** Said when a straggler appears, moves to another rank, or is still there every `every` steps. */
  straggler?: string;
}

/** Collects the ranks' work between metric lines. */
export class RankMonitor {
  private work = new Map<number, RankWork>();
  private named?: { rank: number; step: number };

  constructor(private readonly every = 100) {}

  /** Adds one optimizer step's work. */
  record(ranks: readonly RankWork[]): void {
    for (const r of ranks) {
      const w = this.work.get(r.rank);
      if (w) {
        w.tokens += r.tokens;
        w.seconds += r.seconds;
      } else this.work.set(r.rank, { ...r });
    }
  }

  /** The work since the last call, as metrics and a straggler line; undefined with nothing recorded. */
  take(step: number): RankReport | undefined {
    if (!this.work.size) return undefined;
    const ranks = [...this.work.values()].sort((a, b) => a.rank - b.rank);
    this.work.clear();
    const rates = ranks.map((r) => (r.seconds > 0 ? r.tokens / r.seconds : 0));
    let slow = 0;
    rates.forEach((x, i) => (x < rates[slow]! ? (slow = i) : 0));
    // The median of the other ranks: with two ranks, the slowest is compared with the faster one.
    const others = [...rates].sort((a, b) => a - b).slice(1);
    const median = others[Math.floor((others.length - 1) / 2)] ?? 0;
    const out: RankReport = {
      metrics: { rank_tokens_per_s: rates.map((x) => Math.round(x)), slowest_rank: ranks[slow]!.rank },
    };
    const lagging = ranks.length > 1 && rates[slow]! < STRAGGLER_SHARE * median;
    if (!lagging) {
      this.named = undefined;
      return out;
    }
    const r = ranks[slow]!;
    if (this.named?.rank !== r.rank || step - this.named.step >= this.every) {
      this.named = { rank: r.rank, step };
      out.straggler = `straggler: rank ${r.rank} on ${r.host} at ${Math.round(rates[slow]!)} tokens/s, ${(rates[slow]! / median).toFixed(2)} of the other ranks' median ${Math.round(median)} (${ranks.length} ranks)`;
    }
    return out;
  }
}
