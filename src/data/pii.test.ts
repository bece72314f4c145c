import { describe, expect, it } from 'vitest';
import { PiiSchema } from '../recipe/schema.js';
import { emptyPiiCounts, ibanValid, ipv6Valid, luhnValid, scrubPii, type PiiCounts } from './pii.js';

const ALL = PiiSchema.parse({});

function scrub(text: string, cfg = ALL): { out: string; counts: PiiCounts } {
  const counts = emptyPiiCounts();
  return { out: scrubPii(text, cfg, counts), counts };
}

/** Asserts each input is scrubbed to the expected output with `n` matches of `kind`. */
function positives(kind: keyof PiiCounts, cases: [string, string, number?][]): void {
  for (const [input, want, n = 1] of cases) {
    it(`scrubs ${JSON.stringify(input)}`, () => {
      const { out, counts } = scrub(input);
      expect(out).toBe(want);
      expect(counts[kind]).toBe(n);
      const others = Object.entries(counts).filter(([k]) => k !== kind);
      expect(Object.fromEntries(others)).toEqual(Object.fromEntries(others.map(([k]) => [k, 0])));
    });
  }
}

function negatives(cases: string[]): void {
  for (const input of cases) {
    it(`leaves ${JSON.stringify(input)} alone`, () => {
      const { out, counts } = scrub(input);
      expect(out).toBe(input);
      expect(counts).toEqual(emptyPiiCounts());
    });
  }
}

describe('email', () => {
  positives('email', [
    ['write to jane.doe@example.com today', 'write to <EMAIL> today'],
    ['<a.b+tag@mail.example.co.uk>', '<<EMAIL>>'],
    ['x_y-z@sub-domain.example.org.', '<EMAIL>.'],
    ['a@b.io, c@d.io', '<EMAIL>, <EMAIL>', 2],
  ]);
  negatives(['@decorator', 'user@localhost', 'price @ 5.00', 'foo@bar', 'a@b.c', 'name@-bad.com']);
});

describe('phone', () => {
  positives('phone', [
    ['call +1 (555) 123-4567 now', 'call <PHONE> now'],
    ['+44 20 7946 0958', '<PHONE>'],
    ['+49 (0)30 1234567.', '<PHONE>.'],
    ['+33 6 12 34 56 78', '<PHONE>'],
    ['+447946095800', '<PHONE>'],
    ['(555) 123-4567', '<PHONE>'],
    ['555-123-4567', '<PHONE>'],
    ['555.123.4567', '<PHONE>'],
    ['toll free 1-800-555-0199.', 'toll free <PHONE>.'],
    ['1 (800) 555-0199', '<PHONE>'],
    ['tel: 020 7946 0958', 'tel: <PHONE>'],
    ['+44 20 7946 0958 2024', '<PHONE> 2024'],
  ]);
  negatives([
    'qty = 2000000',
    'px = 101.25',
    'id 1234567',
    '2024-01-15',
    '2024-01-15T10:30:00+01:00',
    'at 12:30:45',
    'x = a +1234567',
    '+12.5 10.25 3.75',
    'change +100 -200 +300',
    '+1 234',
    '10-20-30',
    '1234-567-8901',
    'v5.12.2023',
    'tz +0100',
    'ISBN 978-3-16-148410-0',
    'x-555-123-4567-2',
  ]);
});

describe('iban', () => {
  positives('iban', [
    ['IBAN DE89 3704 0044 0532 0130 00 paid', 'IBAN <IBAN> paid'],
    ['DE89370400440532013000', '<IBAN>'],
    ['GB82 WEST 1234 5698 7654 32', '<IBAN>'],
    ['to NL91ABNA0417164300.', 'to <IBAN>.'],
    ['FR14 2004 1010 0505 0001 3M02 606 THEN', '<IBAN> THEN'],
  ]);
  negatives(['DE89 3704 0044 0532 0130 01', 'GB82 WEST 1234 5698 7654 33', 'AB12 CDEF GHIJ KLMN', 'ISO8601 2024 0115']);
  it('checks mod 97 and country length', () => {
    expect(ibanValid('DE89 3704 0044 0532 0130 00')).toBe(true);
    expect(ibanValid('DE89 3704 0044 0532 0130 0')).toBe(false);
    expect(ibanValid('de89370400440532013000')).toBe(true);
  });
});

describe('card', () => {
  positives('card', [
    ['card 4111 1111 1111 1111 exp', 'card <CARD> exp'],
    ['4111-1111-1111-1111', '<CARD>'],
    ['5555555555554444', '<CARD>'],
    ['amex 3782 822463 10005', 'amex <CARD>'],
    ['378282246310005', '<CARD>'],
    ['6011 1111 1111 1117.', '<CARD>.'],
  ]);
  negatives([
    '4111 1111 1111 1112',
    '4111111111111112',
    '1234567812345678',
    'amount 1234567890123.45',
    '411111111111111111111',
  ]);
  it('checks Luhn', () => {
    expect(luhnValid('4111111111111111')).toBe(true);
    expect(luhnValid('4111111111111112')).toBe(false);
    expect(luhnValid('79927398713')).toBe(true);
  });
});

describe('ip', () => {
  positives('ip', [
    ['host 192.168.1.10 up', 'host <IP> up'],
    ['from 10.0.0.1:8080', 'from <IP>:8080'],
    ['255.255.255.255.', '<IP>.'],
    ['net 10.0.0.0/8', 'net <IP>/8'],
    ['v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 ok', 'v6 <IP> ok'],
    ['2001:db8::8a2e:370:7334', '<IP>'],
    ['loopback ::1', 'loopback <IP>'],
    ['fe80::1%eth0', '<IP>%eth0'],
    ['::ffff:192.0.2.128', '<IP>'],
    ['[2001:db8::1]:443', '[<IP>]:443'],
  ]);
  negatives([
    'version 1.2.3',
    '999.1.1.1',
    '1.2.3.4.5',
    'v1.2.3.4',
    '256.1.1.1',
    'at 12:30:45',
    'mac 00:1A:2B:3C:4D:5E',
    'std::vector<int>',
    'a::b',
    'Foo::bar()',
    '01.02.03.04',
    '1:2:3:4:5:6:7:8:9',
  ]);
  it('validates IPv6 forms', () => {
    expect(ipv6Valid('1:2:3:4:5:6:7:8')).toBe(true);
    expect(ipv6Valid('1::8')).toBe(true);
    expect(ipv6Valid('1:2:3:4:5:6:7::')).toBe(true);
    expect(ipv6Valid('1:2:3:4:5:6::7:8')).toBe(false);
    expect(ipv6Valid('1::2::3')).toBe(false);
    expect(ipv6Valid('12345::1')).toBe(false);
    expect(ipv6Valid('::ffff:1.2.3.4')).toBe(true);
    expect(ipv6Valid('::ffff:1.2.3.256')).toBe(false);
  });
});

describe('config and mixed text', () => {
  it('scrubs only enabled kinds', () => {
    const text = 'mail a@b.io, ip 10.1.2.3, call 555-123-4567';
    const { out, counts } = scrub(text, { ...ALL, ip: false, phone: false });
    expect(out).toBe('mail <EMAIL>, ip 10.1.2.3, call 555-123-4567');
    expect(counts).toEqual({ email: 1, phone: 0, iban: 0, card: 0, ip: 0 });
  });

  it('handles a realistic paragraph', () => {
    const text =
      'Customer jane@corp.example (tel +1 415-555-0100) paid with 4111 1111 1111 1111 from 203.0.113.7; refund to DE89 3704 0044 0532 0130 00. Order 1234567, qty = 2000000, px = 101.25 on 2024-01-15 at 09:30.';
    const { out, counts } = scrub(text);
    expect(out).toBe(
      'Customer <EMAIL> (tel <PHONE>) paid with <CARD> from <IP>; refund to <IBAN>. Order 1234567, qty = 2000000, px = 101.25 on 2024-01-15 at 09:30.',
    );
    expect(counts).toEqual({ email: 1, phone: 1, iban: 1, card: 1, ip: 1 });
  });

  it('is linear on long adversarial inputs', () => {
    const inputs = [
      '+1' + ' 1'.repeat(20000),
      '1'.repeat(50000),
      'a.'.repeat(30000) + '@',
      'a@' + 'b-'.repeat(30000),
      '1:'.repeat(30000),
      '1.'.repeat(30000),
      'AB12' + ' ABCD'.repeat(20000),
    ];
    for (const s of inputs) {
      const t0 = performance.now();
      scrub(s);
      expect(performance.now() - t0).toBeLessThan(500);
    }
  });
});
