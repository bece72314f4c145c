/**
 * HF `tokenizers` post-processors (the `post_processor` of `tokenizer.json`) for one sequence:
 * the special tokens `encode(text, add_special_tokens=True)` puts around the ids.
 */
import { describe, fail, isObject, requireList, typeOf, unsupported, type Json } from './hf-components.js';

/** Ids to put before and after a single sequence's ids. */
export interface Wrap {
  before: number[];
  after: number[];
}

const SUPPORTED = ['TemplateProcessing', 'ByteLevel', 'RobertaProcessing', 'BertProcessing', 'Sequence'];

function tokenPair(obj: Json, key: string, field: string): number {
  const v = obj[key];
  if (
    !Array.isArray(v) ||
    v.length !== 2 ||
    typeof v[0] !== 'string' ||
    !Number.isInteger(v[1]) ||
    (v[1] as number) < 0
  )
    fail(`${field}.${key} must be ["token", id] (got ${describe(v)})`);
  return v[1] as number;
}

function template(obj: Json, field: string): Wrap {
  const specials = obj['special_tokens'];
  if (!isObject(specials)) fail(`${field}.special_tokens must be an object (got ${describe(specials)})`);
  const idsOf = (name: string, where: string): number[] => {
    const t = specials[name];
    if (!isObject(t))
      fail(`${where} names special token ${JSON.stringify(name)}, which is not in ${field}.special_tokens`);
    const ids = t['ids'];
    if (!Array.isArray(ids) || !ids.every((x) => Number.isInteger(x) && (x as number) >= 0))
      fail(`${field}.special_tokens[${JSON.stringify(name)}].ids must be an array of ids (got ${describe(ids)})`);
    return ids as number[];
  };
  const pieces = requireList(obj, 'single', field);
  const wrap: Wrap = { before: [], after: [] };
  let seenSequence = false;
  pieces.forEach((p, i) => {
    const where = `${field}.single[${i}]`;
    if (isObject(p['SpecialToken'])) {
      const id = p['SpecialToken']['id'];
      if (typeof id !== 'string') fail(`${where}.SpecialToken.id must be a string (got ${describe(id)})`);
      (seenSequence ? wrap.after : wrap.before).push(...idsOf(id, where));
    } else if (isObject(p['Sequence'])) {
      if (p['Sequence']['id'] !== 'A') fail(`${where}.Sequence.id must be "A" in a single-sequence template`);
      if (seenSequence) fail(`${where}: the sequence appears twice`);
      seenSequence = true;
    } else {
      fail(`${where} must be {"SpecialToken": ...} or {"Sequence": ...} (got ${JSON.stringify(p)})`);
    }
  });
  if (!seenSequence) fail(`${field}.single has no {"Sequence": {"id": "A"}}`);
  return wrap;
}

/** Reads a post-processor (`field` names it in errors, e.g. `post_processor.processors[1]`). */
export function readPostProcessor(obj: Json, field: string): Wrap {
  const type = typeOf(obj, field);
  switch (type) {
    case 'ByteLevel':
      return { before: [], after: [] }; // it only trims offsets
    case 'TemplateProcessing':
      return template(obj, field);
    case 'RobertaProcessing':
    case 'BertProcessing':
      return { before: [tokenPair(obj, 'cls', field)], after: [tokenPair(obj, 'sep', field)] };
    case 'Sequence': {
      const wrap: Wrap = { before: [], after: [] };
      requireList(obj, 'processors', field).forEach((p, i) => {
        const w = readPostProcessor(p, `${field}.processors[${i}]`);
        // Each processor wraps what the previous ones produced.
        wrap.before = [...w.before, ...wrap.before];
        wrap.after = [...wrap.after, ...w.after];
      });
      return wrap;
    }
    default:
      return unsupported(field, type, SUPPORTED);
  }
}
