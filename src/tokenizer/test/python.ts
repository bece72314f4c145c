/** Running the project's Python (.venv, with HF `tokenizers` and `transformers`) from tokenizer tests. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const pythonPath = join(repoRoot, '.venv', 'bin', 'python');
const SETUP_HINT = 'run `npm run setup` to create .venv with tokenizers==0.22.1';

/** Python source that reads the JSON request from stdin into `req`. */
export const READ_INPUT = "import json, sys\nreq = json.loads(sys.stdin.buffer.read().decode('utf-8'))\n";

/** Runs a Python script (source, or a file with `file: true`) with `input` as JSON on stdin; returns its JSON stdout. */
export function runPython(script: string, input: unknown, opts: { file?: boolean } = {}): unknown {
  if (!existsSync(pythonPath)) throw new Error(`Python venv not found at ${pythonPath}; ${SETUP_HINT}`);
  const args = opts.file ? [script] : ['-c', script];
  const r = spawnSync(pythonPath, args, {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    env: { ...process.env, TOKENIZERS_PARALLELISM: 'false', TRANSFORMERS_VERBOSITY: 'error', HF_HUB_OFFLINE: '1' },
  });
  if (r.error) throw new Error(`could not run ${pythonPath} (${r.error.message}); ${SETUP_HINT}`);
  if (r.status !== 0) {
    const hint = r.stderr.includes('No module named') ? `; ${SETUP_HINT}` : '';
    throw new Error(`python exited with ${r.status}${hint}:\n${r.stderr}`);
  }
  return JSON.parse(r.stdout);
}

/** One pipeline component of `tokenizer.json` and the inputs to run it on (texts, or token lists for decoders). */
export interface ComponentCase {
  kind: 'normalizer' | 'pre_tokenizer' | 'decoder';
  component: Record<string, unknown>;
  inputs: Array<string | string[]>;
}

const HF_COMPONENTS = `${READ_INPUT}
from tokenizers import Tokenizer
out = []
for c in req['cases']:
    j = {'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': [], 'normalizer': None,
         'pre_tokenizer': None, 'post_processor': None, 'decoder': None,
         'model': {'type': 'BPE', 'vocab': {}, 'merges': []}}
    j[c['kind']] = c['component']
    try:
        tok = Tokenizer.from_str(json.dumps(j))
    except Exception as e:
        out.append({'error': str(e)})
        continue
    def one(t):
        try:
            if c['kind'] == 'normalizer':
                return tok.normalizer.normalize_str(t)
            if c['kind'] == 'pre_tokenizer':
                return [s for s, _ in tok.pre_tokenizer.pre_tokenize_str(t)]
            return tok.decoder.decode(t)
        except BaseException:  # a Rust panic inside tokenizers (e.g. its Strip decoder on a short token)
            return None
    out.append({'results': [one(t) for t in c['inputs']]})
json.dump(out, sys.stdout)
`;

/**
 * What HF `tokenizers` makes of each case: normalized text, pre-token strings, or decoded text;
 * null where HF panics on an input, and `error` where it refuses the component.
 */
export function hfComponents(cases: readonly ComponentCase[]): Array<{ results?: unknown[]; error?: string }> {
  return runPython(HF_COMPONENTS, { cases }) as Array<{ results?: unknown[]; error?: string }>;
}
