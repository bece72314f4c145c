import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/kernel.js';
import { jupyterEnv, python, requireSetup, tempRuns } from './jupyter.js';

const NOTEBOOKS = join(REPO_ROOT, 'notebooks');
const books = readdirSync(NOTEBOOKS)
  .filter((f) => f.endsWith('.ipynb'))
  .sort();

interface Notebook {
  metadata: { kernelspec?: { name?: string; display_name?: string } };
  cells: { cell_type: string; outputs?: unknown[]; execution_count?: number | null; source: string | string[] }[];
}
const read = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Notebook;

const RUN_MIME = 'application/vnd.lathe.run+json';
const RECIPE_MIME = 'application/vnd.lathe.recipe+json';
type Output = { output_type: string; data?: Record<string, unknown> };
/** Every output of an executed notebook, in order (live displays as nbclient left them: their final update). */
const outputsOf = (path: string) => read(path).cells.flatMap((c) => (c.outputs ?? []) as Output[]);
const text = (o: Output) => [o.data?.['text/plain'] ?? ''].flat().join('');

describe('notebook gallery', () => {
  it('holds the gallery: pre-training (with the quickstart npm start opens), post-training and export', () => {
    expect(books).toEqual(
      expect.arrayContaining([
        'quickstart.ipynb',
        'data.ipynb',
        'pretrain-fim.ipynb',
        'dense-vs-moe.ipynb',
        'sft-dpo.ipynb',
        'online-dpo.ipynb',
        'grpo.ipynb',
        'export-hf.ipynb',
        'open-model.ipynb',
      ]),
    );
  });

  it.each(books)('%s is committed without outputs, on the lathe kernel', (name) => {
    const nb = read(join(NOTEBOOKS, name));
    expect(nb.metadata.kernelspec).toMatchObject({ name: 'lathe', display_name: 'Lathe (TypeScript)' });
    for (const c of nb.cells.filter((c) => c.cell_type === 'code')) {
      expect(c.outputs, `${name}: ${String(c.source).slice(0, 60)}`).toEqual([]);
      expect(c.execution_count).toBeNull();
    }
  });

  describe('headless runs (nbclient, LATHE_STEPS=4)', () => {
    const out = tempRuns('notebooks');
    const runs = tempRuns('notebook-runs');
    beforeAll(requireSetup);

    it.each(books)(
      '%s runs every cell without error',
      async (name) => {
        const { code, out: log } = await python(
          ['run_notebooks.py', NOTEBOOKS, out, name],
          jupyterEnv({ LATHE_STEPS: '4', LATHE_RUNS_DIR: runs }),
          280_000,
        );
        expect(code, log).toBe(0);
        const executed = read(join(out, name));
        const codeCells = executed.cells.filter((c) => c.cell_type === 'code');
        expect(
          codeCells.every((c) => typeof c.execution_count === 'number'),
          log,
        ).toBe(true);
        const errors = codeCells.flatMap((c) =>
          (c.outputs ?? []).filter((o) => (o as { output_type: string }).output_type === 'error'),
        );
        expect(errors, log).toEqual([]);
      },
      300_000,
    );

    it('shows the live run chart in the executed quickstart, final state complete', () => {
      const nb = read(join(out, 'quickstart.ipynb'));
      const shown = nb.cells
        .flatMap((c) => c.outputs ?? [])
        .find((o) => (o as { data?: Record<string, unknown> }).data?.['application/vnd.lathe.run+json']) as
        { data: Record<string, { step: number; steps: number; status: string }> } | undefined;
      expect(shown?.data['application/vnd.lathe.run+json']).toMatchObject({ step: 4, steps: 4, status: 'completed' });
      expect(shown?.data).toHaveProperty(['application/vnd.plotly.v1+json']);
    });

    // Each post-training notebook trains its own tiny base, then its stages, every run to its (LATHE_STEPS) end.
    it.each([
      [
        'sft-dpo.ipynb',
        [
          ['pretrain', 4],
          ['sft', 4],
          ['dpo', 4],
        ],
      ],
      [
        'online-dpo.ipynb',
        [
          ['pipeline', 8],
          ['online-dpo', 4],
        ],
      ],
      [
        'grpo.ipynb',
        [
          ['pipeline', 8],
          ['grpo', 4],
        ],
      ],
      ['export-hf.ipynb', [['pretrain', 4]]],
    ] as const)('%s shows each run live, completed at its planned step', (name, want) => {
      const shown = outputsOf(join(out, name)).flatMap((o) =>
        o.data?.[RUN_MIME] ? [o.data[RUN_MIME] as { stage: string; step: number; steps: number; status: string }] : [],
      );
      expect(shown.map((r) => [r.stage, r.step, r.steps, r.status])).toEqual(
        want.map(([stage, steps]) => [stage, steps, steps, 'completed']),
      );
    });

    it('sft-dpo: DPO is evaluated before and after on held-out pairs; a pipeline renders as a card listing its stages', () => {
      const outs = outputsOf(join(out, 'sft-dpo.ipynb'));
      const evals = text(outs.find((o) => text(o).includes('preferred chosen'))!)
        .split('\n')
        .slice(2);
      expect(evals.map((l) => Number(l.trim().split(/\s+/)[0]))).toEqual([0, 4]);
      const card = outs.find((o) => (o.data?.[RECIPE_MIME] as { stage?: string } | undefined)?.stage === 'pipeline')!;
      expect((card.data![RECIPE_MIME] as { stages: { stage: string; steps: number }[] }).stages).toEqual([
        { index: 0, stage: 'pretrain', steps: 300, from: 'a fresh model' },
        { index: 1, stage: 'sft', steps: 100, from: "stage 1's final checkpoint" },
        { index: 2, stage: 'dpo', steps: 60, from: "stage 2's final checkpoint" },
        { index: 3, stage: 'grpo', steps: 30, from: "stage 3's final checkpoint" },
      ]);
      expect(text(card)).toMatch(/stages\s+pretrain → sft → dpo → grpo/);
      expect([card.data!['text/html']].flat().join('')).toContain('<th style="text-align:left">starts from</th>');
    });

    it.each(['online-dpo.ipynb', 'grpo.ipynb'])(
      '%s: the interpreter rewards a right answer 1, a wrong output 0.5, broken code 0',
      (name) => {
        const judged = text(outputsOf(join(out, name)).find((o) => /^completion\s+reward/.test(text(o)))!);
        expect(
          judged
            .split('\n')
            .slice(2)
            .map((l) => Number(l.trim().split(/\s+/).at(-1))),
        ).toEqual([1, 0.5, 0]);
      },
    );

    it("open-model: continued pre-training reports both held-out losses; the LoRA checkpoint is a fraction of the full one; PEFT and the merged folder give Lathe's logits", () => {
      const outs = outputsOf(join(out, 'open-model.ipynb'));
      const imported = text(outs.find((o) => text(o).includes('architecture'))!);
      expect(imported).toMatch(/architecture\s+Qwen3ForCausalLM/);
      const losses = text(outs.find((o) => text(o).includes('eval_loss_new'))!)
        .split('\n')
        .slice(2)
        .map((l) => l.trim().split(/\s+/).map(Number));
      expect(losses.map((r) => r[0])).toEqual([0, 4]);
      expect(losses.every((r) => r.length === 3 && r.slice(1).every((x) => x > 0 && x < 10))).toBe(true);
      const sizes = Object.fromEntries(
        text(outs.find((o) => text(o).includes('checkpoint bytes'))!)
          .split('\n')
          .slice(2)
          .map((l) => [l.split(/\s+/)[0], Number(l.trim().split(/\s+/).at(-1)!.replaceAll(',', ''))]),
      );
      expect(sizes['sft-lora']).toBeLessThan(sizes['sft-full']! / 5);
      const parity = text(outs.find((o) => text(o).includes('within 1e-4'))!)
        .split('\n')
        .slice(2);
      expect(parity).toHaveLength(2);
      for (const row of parity) expect(row.trimEnd()).toMatch(/\btrue$/);
    });

    it('export-hf: the export is a LlamaForCausalLM folder that Lathe and transformers load, decoding the same tokens', () => {
      const outs = outputsOf(join(out, 'export-hf.ipynb'));
      const files = text(outs.find((o) => text(o).startsWith('file'))!);
      for (const f of [
        'config.json',
        'generation_config.json',
        'model.safetensors',
        'tokenizer.json',
        'tokenizer_config.json',
        'special_tokens_map.json',
      ])
        expect(files).toContain(f);
      const config = outs.find((o) => o.data?.['application/json'])!.data!['application/json'] as {
        architectures: string[];
        vocab_size: number;
        num_hidden_layers: number;
      };
      expect(config).toMatchObject({ architectures: ['LlamaForCausalLM'], vocab_size: 512, num_hidden_layers: 2 });
      const reloaded = text(outs.find((o) => text(o).includes('same tokens'))!);
      expect(reloaded.split('\n').at(-1)!.trimEnd()).toMatch(/\btrue$/);
      const hf = text(outs.find((o) => text(o).includes('matches Lathe'))!)
        .split('\n')
        .at(-1)!
        .trim()
        .split(/\s+/);
      expect([hf[0], hf[2], hf.at(-1)]).toEqual(['LlamaForCausalLM', 'true', 'true']);
    });
  });
});
