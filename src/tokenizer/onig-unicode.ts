/**
 * Where HF `tokenizers` 0.22.1 sees Unicode differently from this JavaScript engine, measured
 * against the library over every code point (see hf-pipeline.test.ts):
 *
 * - Its regexes run on Oniguruma with Unicode 16 tables; Node's ICU has Unicode 17. The characters
 *   new in 17 are unassigned (`\p{Cn}`, script Unknown) there, and U+0295 is still `Ll` (not `Lo`).
 * - Its NFC/NFD/NFKC/NFKD come from the `unicode-normalization-alignments` crate, whose tables are
 *   older still: characters added since are left alone (starters that neither decompose nor compose).
 */

type Ranges = ReadonlyArray<number | readonly [number, number]>;

/** Code points assigned in Unicode 17 that HF's Oniguruma does not know. */
export const NEW_IN_UNICODE_17: Ranges = [
  0x088f,
  0x0c5c,
  0x0cdc,
  [0x1acf, 0x1add],
  [0x1ae0, 0x1aeb],
  0x20c1,
  0x2b96,
  [0xa7ce, 0xa7cf],
  0xa7d2,
  0xa7d4,
  0xa7f1,
  [0xfbc3, 0xfbd2],
  [0xfd90, 0xfd91],
  [0xfdc8, 0xfdce],
  [0x10940, 0x10959],
  [0x10ec5, 0x10ec7],
  [0x10ed0, 0x10ed8],
  [0x10efa, 0x10efb],
  [0x11b60, 0x11b67],
  [0x11db0, 0x11ddb],
  [0x11de0, 0x11de9],
  [0x16ea0, 0x16eb8],
  [0x16ebb, 0x16ed3],
  [0x16ff2, 0x16ff6],
  [0x187f8, 0x187ff],
  [0x18d09, 0x18d1e],
  [0x18d80, 0x18df2],
  [0x1ccfa, 0x1ccfc],
  [0x1ceba, 0x1ced0],
  [0x1cee0, 0x1cef0],
  [0x1e6c0, 0x1e6de],
  [0x1e6e0, 0x1e6f5],
  [0x1e6fe, 0x1e6ff],
  0x1f6d8,
  [0x1f777, 0x1f77a],
  [0x1f8d0, 0x1f8d8],
  [0x1fa54, 0x1fa57],
  0x1fa8a,
  0x1fa8e,
  0x1fac8,
  0x1facd,
  0x1faea,
  0x1faef,
  0x1fbfa,
  [0x2b73a, 0x2b73f],
  [0x2cea2, 0x2cead],
  [0x323b0, 0x33479],
];

/** U+0295: `Ll` in Unicode 16 (HF), `Lo` in 17 (JavaScript). */
export const LL_IN_HF_LO_IN_JS = 0x295;

/**
 * Characters HF's normalizers leave alone: newer than their tables, and so neither decomposed,
 * reordered nor composed there (found by comparing every code point, in context, and every
 * canonical composition pair with HF).
 */
export const NORMALIZATION_INERT: Ranges = [
  [0x897, 0x898],
  [0x89c, 0x89f],
  [0x8ca, 0x8ce],
  0x9fe,
  [0x1ac1, 0x1ac2],
  [0x1ac5, 0x1ac9],
  [0x1acb, 0x1adc],
  [0x1ae0, 0x1ae5],
  [0x1ae7, 0x1aeb],
  [0x1df6, 0x1df8],
  0x32ff,
  [0xa7f1, 0xa7f4],
  0xab69,
  0x105c9,
  0x105d2,
  0x105da,
  0x105e4,
  [0x10781, 0x10785],
  [0x10787, 0x107b0],
  [0x107b2, 0x107ba],
  [0x10d24, 0x10d27],
  [0x10d69, 0x10d6d],
  [0x10eab, 0x10eac],
  [0x10f48, 0x10f4a],
  0x10f4c,
  0x10f82,
  0x10f84,
  [0x11382, 0x11385],
  0x1138b,
  0x1138e,
  [0x11390, 0x11391],
  0x113b8,
  0x113bb,
  0x113c2,
  0x113c5,
  [0x113c7, 0x113c9],
  0x1145e,
  0x11930,
  0x11935,
  0x11938,
  [0x1611e, 0x16129],
  0x16d63,
  [0x16d67, 0x16d6a],
  [0x1ccd6, 0x1ccf9],
  [0x1e030, 0x1e06d],
  0x1e08f,
  [0x1e130, 0x1e136],
  0x1e2ae,
  [0x1e2ec, 0x1e2ef],
  [0x1e4ec, 0x1e4ed],
  0x1e4ef,
  0x1e5ee,
  0x1e6e3,
  0x1e6e6,
  [0x1e6ee, 0x1e6ef],
  0x1e6f5,
  0x1f16c,
  [0x1fbf0, 0x1fbf9],
];

const hex = (cp: number): string => `\\u{${cp.toString(16)}}`;

/** The ranges as the inside of a RegExp character class (`v` or `u` flag). */
export function classBody(ranges: Ranges): string {
  return ranges.map((r) => (typeof r === 'number' ? hex(r) : `${hex(r[0])}-${hex(r[1])}`)).join('');
}

/** Whether `cp` lies in `ranges`. */
export function inRanges(ranges: Ranges, cp: number): boolean {
  for (const r of ranges) {
    if (typeof r === 'number' ? cp === r : cp >= r[0] && cp <= r[1]) return true;
  }
  return false;
}
