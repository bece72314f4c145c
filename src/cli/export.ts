import type { Command } from 'commander';
import { LatheError } from '../errors.js';
import { exportHf } from '../export/hf.js';
import { exportPeft } from '../export/peft.js';
import { positiveInt } from './options.js';

const FORMATS = ['hf', 'peft'];
const QUANTIZATIONS = ['int8'];

export function register(program: Command): void {
  program
    .command('export')
    .description(
      "Write a run's checkpoint as a Hugging Face model folder (LlamaForCausalLM or MixtralForCausalLM: config.json, model.safetensors, " +
        'tokenizer.json, tokenizer_config.json with the chat template, generation_config.json) that transformers loads with AutoModelForCausalLM; ' +
        "a LoRA run's as a PEFT adapter (--format peft: adapter_config.json, adapter_model.safetensors for PeftModel.from_pretrained on its base), " +
        'or merged into its base (--format peft --merge, or --format hf).',
    )
    .argument('<run-dir>', 'run directory')
    .requiredOption('--format <format>', `export format (${FORMATS.join(', ')})`)
    .requiredOption('--out <dir>', 'output directory (must not exist, or be empty)')
    .option('--step <n>', 'checkpoint step to export (default: the latest)', positiveInt('--step'))
    .option(
      '--quantize <scheme>',
      `quantize the Linear weights (${QUANTIZATIONS.join(', ')}); reports the held-out perplexity change`,
    )
    .option(
      '--eval-batches <n>',
      'held-out batches for the --quantize perplexity measurement',
      positiveInt('--eval-batches'),
    )
    .option('--merge', 'with --format peft: write the base with the adapters merged in, as an HF folder')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        dir: string,
        o: {
          format: string;
          out: string;
          step?: number;
          quantize?: string;
          evalBatches?: number;
          merge?: boolean;
          json?: boolean;
        },
      ) => {
        if (!FORMATS.includes(o.format))
          throw new LatheError(`--format: "${o.format}" is not supported; use ${FORMATS.join(', ')}`);
        if (o.merge && o.format !== 'peft')
          throw new LatheError('--merge: only with --format peft (an hf export of a LoRA run is merged already)');
        if (o.format === 'peft') {
          if (o.quantize !== undefined) throw new LatheError('--quantize: only with --format hf');
          const p = await exportPeft(dir, o.out, { step: o.step, merge: o.merge });
          for (const k of p.skipped) console.error(`checkpoint ${k.step} is corrupt, skipped: ${k.reason}`);
          console.error(`checkpoint: ${p.checkpoint}`);
          if (o.json) {
            process.stdout.write(JSON.stringify({ ...p, hf: undefined }) + '\n');
            return;
          }
          if (p.merged) process.stdout.write(`exported step ${p.step} with the adapters merged in to ${p.dir}\n`);
          else {
            process.stdout.write(`exported the LoRA adapter of step ${p.step} (PEFT) to ${p.dir}\n`);
            process.stdout.write(`base: ${p.base.hint}\n`);
          }
          return;
        }
        if (o.quantize !== undefined && !QUANTIZATIONS.includes(o.quantize))
          throw new LatheError(`--quantize: "${o.quantize}" is not supported; use ${QUANTIZATIONS.join(', ')}`);
        const r = await exportHf(dir, o.out, {
          step: o.step,
          quantize: o.quantize as 'int8' | undefined,
          evalBatches: o.evalBatches,
        });
        for (const k of r.skipped) console.error(`checkpoint ${k.step} is corrupt, skipped: ${k.reason}`);
        console.error(`checkpoint: ${r.checkpoint}`);
        if (o.json) {
          const { quantization, ...rest } = r;
          const q = quantization && {
            ...quantization,
            quantized: quantization.quantized.length,
            kept: quantization.kept.length,
          };
          process.stdout.write(JSON.stringify({ ...rest, quantization: q }) + '\n');
          return;
        }
        const q = r.quantization;
        if (q) {
          const pct = `${((100 * q.quantizedParams) / q.totalParams).toFixed(1)}%`;
          process.stdout.write(
            `int8: ${q.quantized.length} Linear weights (${pct} of parameters), max |error| ${q.maxAbsError.toExponential(2)}, relative RMS error ${q.relativeRmsError.toExponential(2)}\n`,
          );
          if (q.heldOut) {
            const h = q.heldOut;
            const sign = h.perplexityChangePct >= 0 ? '+' : '';
            process.stdout.write(
              `int8: held-out perplexity ${h.perplexity.toFixed(4)} -> ${h.quantizedPerplexity.toFixed(4)} (${sign}${h.perplexityChangePct.toFixed(3)}%), ` +
                `loss ${h.loss.toFixed(5)} -> ${h.quantizedLoss.toFixed(5)} over ${h.tokens} tokens\n`,
            );
          } else process.stdout.write(`int8: perplexity not measured: ${q.heldOutUnavailable}\n`);
        }
        process.stdout.write(`exported step ${r.step} as ${r.architecture} to ${r.dir}\n`);
      },
    );
}
