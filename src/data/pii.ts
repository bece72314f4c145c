import type { PiiConfig } from '../recipe/schema.js';

/** Matches replaced per PII kind. */
export interface PiiCounts {
  email: number;
  phone: number;
  iban: number;
  card: number;
  ip: number;
}

/** A zeroed PiiCounts. */
export function emptyPiiCounts(): PiiCounts {
  return { email: 0, phone: 0, iban: 0, card: 0, ip: 0 };
}

/** The placeholder each PII kind is replaced with. */
export const PII_PLACEHOLDERS: Readonly<Record<keyof PiiCounts, string>> = {
  email: '<EMAIL>',
  phone: '<PHONE>',
  iban: '<IBAN>',
  card: '<CARD>',
  ip: '<IP>',
};

/** Luhn checksum over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

// IBAN length per country (ISO 13616 registry); unknown countries fall back to the 15–34 range.
const IBAN_LENGTHS: Record<string, number> = {
  AD: 24,
  AE: 23,
  AL: 28,
  AT: 20,
  AZ: 28,
  BA: 20,
  BE: 16,
  BG: 22,
  BH: 22,
  BR: 29,
  BY: 28,
  CH: 21,
  CR: 22,
  CY: 28,
  CZ: 24,
  DE: 22,
  DK: 18,
  DO: 28,
  EE: 20,
  EG: 29,
  ES: 24,
  FI: 18,
  FO: 18,
  FR: 27,
  GB: 22,
  GE: 22,
  GI: 23,
  GL: 18,
  GR: 27,
  GT: 28,
  HR: 21,
  HU: 28,
  IE: 22,
  IL: 23,
  IQ: 23,
  IS: 26,
  IT: 27,
  JO: 30,
  KW: 30,
  KZ: 20,
  LB: 28,
  LC: 32,
  LI: 21,
  LT: 20,
  LU: 20,
  LV: 21,
  MC: 27,
  MD: 24,
  ME: 22,
  MK: 19,
  MR: 27,
  MT: 31,
  MU: 30,
  NL: 18,
  NO: 15,
  PK: 24,
  PL: 28,
  PS: 29,
  PT: 25,
  QA: 29,
  RO: 24,
  RS: 22,
  SA: 24,
  SC: 31,
  SE: 24,
  SI: 19,
  SK: 24,
  SM: 27,
  ST: 25,
  SV: 28,
  TL: 23,
  TN: 24,
  TR: 26,
  UA: 29,
  VA: 22,
  VG: 24,
  XK: 20,
};

/** True for an IBAN (spaces allowed) whose length fits its country and whose mod-97 checksum is 1. */
export function ibanValid(s: string): boolean {
  const iban = s.replace(/ /g, '').toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(iban)) return false;
  const want = IBAN_LENGTHS[iban.slice(0, 2)];
  if (want !== undefined ? iban.length !== want : iban.length < 15 || iban.length > 34) return false;
  const moved = iban.slice(4) + iban.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < moved.length; i++) {
    const c = moved.charCodeAt(i);
    const v = c <= 57 ? c - 48 : c - 55; // A=10 … Z=35
    rem = v < 10 ? (rem * 10 + v) % 97 : (rem * 100 + v) % 97;
  }
  return rem === 1;
}

/** True for an IPv6 address in full, `::`-compressed or IPv4-suffixed form (no zone). */
export function ipv6Valid(s: string): boolean {
  const halves = s.split('::');
  if (halves.length > 2) return false;
  const groups = (h: string): string[] | undefined => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return false;
  const all = [...head, ...tail];
  let n = 0;
  for (let i = 0; i < all.length; i++) {
    const g = all[i]!;
    if (i === all.length - 1 && g.includes('.')) {
      if (!IPV4_EXACT.test(g)) return false;
      n += 2;
    } else if (/^[0-9A-Fa-f]{1,4}$/.test(g)) n++;
    else return false;
  }
  return halves.length === 2 ? n <= 7 : n === 8;
}

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4_EXACT = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);

// Each scrubber finds candidates with a regex, then a check function may veto (checksums, digit counts).
// Boundaries keep matches off the middle of longer numbers, identifiers and version strings.
const EMAIL_RE =
  /(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])/g;
// Groups of 4 with optional single spaces; the tail group may be shorter. Trimmed in ibanScrub to a valid prefix.
const IBAN_RE = /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])/g;
// Plain 13–19 digits, 4-4-4-4(-3) / 4-4-4-1..3 groups, or Amex/Diners 4-6-4/5, with one separator kind.
const CARD_RE =
  /(?<![\d.,-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{4}\2\d{4}\2\d{1,3}|\d{4}([ -])\d{6}\3\d{4,5})(?![\d]|[.,]\d)/g;
const IPV4_RE = new RegExp(`(?<![\\w.])${OCTET}(?:\\.${OCTET}){3}(?![\\w]|\\.\\d)`, 'g');
const IPV6_RE = /(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,8}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:.]*\w)/g;
// International: + country code then digit groups split by single spaces/dashes or (area) parentheses (dots are
// left out: "+12.5 10.25" is finance, not a phone); NANP with (area) or dashes/dots; national with a leading 0.
// Each digit group must end at a non-digit, so a digit run splits only one way and matching stays linear.
const PHONE_RE =
  /(?<![\w+.])\+(?:\d{8,15}|\d{1,3}(?!\d)(?:[ -]?(?:\(\d{1,10}\)|\d{1,10}(?!\d))){1,6})(?![\w]|[.-]\d)|(?<![\w(.-])(?:(?:1[ .-])?(?:\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}([.-])\d{3}\1\d{4})|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4})(?![\w]|[.-]\d)/g;

function countDigits(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) n++;
  }
  return n;
}

function phoneScrub(m: string): string | undefined {
  if (!m.startsWith('+')) {
    const d = countDigits(m);
    return d >= 10 && d <= 11 ? PII_PLACEHOLDERS.phone : undefined;
  }
  // The group pattern may run on into a following number; drop trailing groups until E.164's 15 digits fit.
  let cut = m;
  while (countDigits(cut) > 15) {
    const at = Math.max(cut.lastIndexOf(' '), cut.lastIndexOf('-'));
    if (at <= 0) return undefined;
    cut = cut.slice(0, at);
  }
  const d = countDigits(cut);
  return d >= 8 ? PII_PLACEHOLDERS.phone + m.slice(cut.length) : undefined;
}

function ipv6Ok(m: string): boolean {
  if (!ipv6Valid(m)) return false;
  // Compressed forms need a digit so identifiers such as `a::b` or `dead::beef` in code are left alone.
  return m.includes('::') ? /\d/.test(m) : true;
}

/** Replaces the valid IBAN at the start of a candidate match, trimming trailing groups that broke the checksum. */
function ibanScrub(m: string): string | undefined {
  const groups = m.split(/(?<=\S)(?= )|(?<=^[A-Z]{2}\d{2})/);
  for (let k = groups.length; k >= 2; k--) {
    const cand = groups.slice(0, k).join('');
    if (ibanValid(cand)) return PII_PLACEHOLDERS.iban + m.slice(cand.length);
  }
  return ibanValid(m) ? PII_PLACEHOLDERS.iban : undefined;
}

type Rule = { kind: keyof PiiCounts; re: RegExp; probe: RegExp; replace: (m: string) => string | undefined };

const RULES: Rule[] = [
  { kind: 'email', re: EMAIL_RE, probe: /@/, replace: () => PII_PLACEHOLDERS.email },
  { kind: 'iban', re: IBAN_RE, probe: /[A-Z]{2}\d\d/, replace: ibanScrub },
  {
    kind: 'card',
    re: CARD_RE,
    probe: /\d{4}/,
    replace: (m) => (luhnValid(m.replace(/[ -]/g, '')) ? PII_PLACEHOLDERS.card : undefined),
  },
  { kind: 'ip', re: IPV6_RE, probe: /:[0-9A-Fa-f]*:/, replace: (m) => (ipv6Ok(m) ? PII_PLACEHOLDERS.ip : undefined) },
  { kind: 'ip', re: IPV4_RE, probe: /\d\.\d+\.\d+\.\d/, replace: () => PII_PLACEHOLDERS.ip },
  { kind: 'phone', re: PHONE_RE, probe: /\d/, replace: phoneScrub },
];

/** Replaces the PII kinds enabled in cfg with placeholders such as <EMAIL>, adding each replacement to counts. */
export function scrubPii(text: string, cfg: PiiConfig, counts: PiiCounts = emptyPiiCounts()): string {
  for (const rule of RULES) {
    if (!cfg[rule.kind] || !rule.probe.test(text)) continue;
    text = text.replace(rule.re, (m: string) => {
      const r = rule.replace(m);
      if (r === undefined) return m;
      counts[rule.kind]++;
      return r;
    });
  }
  return text;
}
