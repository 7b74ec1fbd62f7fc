import { describe, expect, it } from 'vitest';
import {
  type RetentionCandidate,
  type RetentionRules,
  type SetStatus,
  formatSetId,
  isoWeekKey,
  selectRetention,
  utcDayKey,
  utcMonthKey,
} from '../../../src/store/index.js';

const NOW = new Date('2026-11-26T12:00:00Z'); // a Thursday, ISO week 2026-W48

/** A candidate at an ISO time ('2026-11-26T03:15' → seconds and Z added). */
function set(time: string, status: SetStatus = 'complete', domain = 'web01', seq = 0): RetentionCandidate {
  const t = new Date(`${time.length === 10 ? `${time}T03:15` : time}:00Z`);
  return { domain, path: `/b/${domain}/${formatSetId(t, seq)}`, time: t, seq, status };
}

/** Complete sets at 03:15 UTC on every day from `from` to `to` (inclusive). */
function daily(from: string, to: string, domain = 'web01'): RetentionCandidate[] {
  const out: RetentionCandidate[] = [];
  for (let t = Date.parse(`${from}T03:15:00Z`); t <= Date.parse(`${to}T03:15:00Z`); t += 86_400_000) {
    out.push(set(new Date(t).toISOString().slice(0, 16), 'complete', domain));
  }
  return out;
}

const label = (s: RetentionCandidate): string =>
  `${s.domain === 'web01' ? '' : `${s.domain}:`}${s.time.toISOString().slice(0, 16)}${s.seq ? `-${s.seq}` : ''}`;

describe('selectRetention', () => {
  it.each<[string, RetentionCandidate[], RetentionRules, string[]]>([
    ['keepLast 3', daily('2026-11-01', '2026-11-10'), { keepLast: 3 }, ['2026-11-08T03:15', '2026-11-09T03:15', '2026-11-10T03:15']],
    [
      'keepDaily 7 counts only days that have sets, newest of each day',
      [...daily('2026-11-01', '2026-11-19'), ...daily('2026-11-24', '2026-11-26'), set('2026-11-19T15:00'), set('2026-11-26T09:00')],
      { keepDaily: 7 },
      ['2026-11-16T03:15', '2026-11-17T03:15', '2026-11-18T03:15', '2026-11-19T15:00', '2026-11-24T03:15', '2026-11-25T03:15', '2026-11-26T09:00'],
    ],
    [
      'keepWeekly 4 keeps the newest set of each ISO week (Monday to Sunday)',
      daily('2026-10-01', '2026-11-26'),
      { keepWeekly: 4 },
      ['2026-11-08T03:15', '2026-11-15T03:15', '2026-11-22T03:15', '2026-11-26T03:15'],
    ],
    [
      'keepMonthly 3 keeps the newest set of each month',
      daily('2026-08-15', '2026-11-26'),
      { keepMonthly: 3 },
      ['2026-09-30T03:15', '2026-10-31T03:15', '2026-11-26T03:15'],
    ],
    [
      'keepMonthly 12 with only 4 months of sets keeps 4',
      daily('2026-08-15', '2026-11-26'),
      { keepMonthly: 12 },
      ['2026-08-31T03:15', '2026-09-30T03:15', '2026-10-31T03:15', '2026-11-26T03:15'],
    ],
    [
      'rules combine: a set kept by any rule survives',
      daily('2026-08-15', '2026-11-26'),
      { keepLast: 2, keepDaily: 3, keepWeekly: 2, keepMonthly: 3 },
      ['2026-09-30T03:15', '2026-10-31T03:15', '2026-11-22T03:15', '2026-11-24T03:15', '2026-11-25T03:15', '2026-11-26T03:15'],
    ],
    [
      'weeks across a year boundary follow ISO 8601 (2021-01-03 is in 2020-W53)',
      [set('2020-12-28'), set('2020-12-31'), set('2021-01-03'), set('2021-01-04')],
      { keepWeekly: 2 },
      ['2021-01-03T03:15', '2021-01-04T03:15'],
    ],
    [
      'days are UTC days: 23:30 and 00:30 UTC are different days',
      [set('2026-11-24T23:30'), set('2026-11-25T00:30'), set('2026-11-25T22:00')],
      { keepDaily: 2 },
      ['2026-11-24T23:30', '2026-11-25T22:00'],
    ],
    [
      'sets of the same second: the -1 set is the newer',
      [set('2026-11-26T03:15'), set('2026-11-26T03:15', 'complete', 'web01', 1)],
      { keepLast: 1 },
      ['2026-11-26T03:15-1'],
    ],
    [
      'incomplete sets: removed after a day, kept while younger; the newest complete set is kept',
      [
        ...daily('2026-11-01', '2026-11-10'),
        set('2026-11-20', 'incomplete'),
        set('2026-11-25T11:00', 'incomplete'),
        set('2026-11-26T02:00', 'incomplete'),
      ],
      { keepLast: 1 },
      ['2026-11-10T03:15', '2026-11-26T02:00'],
    ],
    [
      'unreadable sets (newer or damaged manifest) are never removed',
      [set('2020-01-01', 'unreadable'), ...daily('2026-11-20', '2026-11-26')],
      { keepLast: 1 },
      ['2020-01-01T03:15', '2026-11-26T03:15'],
    ],
    [
      'only incomplete sets: nothing complete to keep, old ones go',
      [set('2026-11-01', 'incomplete'), set('2026-11-26T08:00', 'incomplete')],
      { keepLast: 5 },
      ['2026-11-26T08:00'],
    ],
    [
      'per domain: each domain keeps its own sets',
      [...daily('2026-11-20', '2026-11-26'), set('2025-01-01', 'complete', 'db01'), set('2025-06-01', 'complete', 'db01')],
      { keepLast: 1 },
      ['2026-11-26T03:15', 'db01:2025-06-01T03:15'],
    ],
    [
      'per domain daily: an old domain keeps its last days with sets',
      [...daily('2026-11-20', '2026-11-26'), set('2025-01-01', 'complete', 'db01'), set('2025-06-01', 'complete', 'db01')],
      { keepDaily: 2 },
      ['2026-11-25T03:15', '2026-11-26T03:15', 'db01:2025-01-01T03:15', 'db01:2025-06-01T03:15'],
    ],
  ])('%s', (_name, sets, rules, kept) => {
    const shuffled = [...sets].reverse();
    const sel = selectRetention(shuffled, { ...rules, now: NOW });
    expect(sel.keep.map(label).sort()).toEqual([...kept].sort());
    expect(sel.keep.length + sel.remove.length).toBe(sets.length);
    // Whatever the rules, the newest complete set of every domain is kept.
    for (const domain of new Set(sets.map((s) => s.domain))) {
      const complete = sets.filter((s) => s.domain === domain && s.status === 'complete');
      if (complete.length === 0) continue;
      const newest = complete.reduce((a, b) => (b.time > a.time || (+b.time === +a.time && b.seq > a.seq) ? b : a));
      expect(sel.keep).toContain(newest);
    }
    for (const s of sets) expect(sel.reasons[s.path]?.length).toBeGreaterThan(0);
  });

  it('explains each decision', () => {
    const sets = [set('2026-11-01'), set('2026-11-24'), set('2026-11-25'), set('2026-11-26'), set('2026-11-02', 'incomplete')];
    const sel = selectRetention(sets, { keepLast: 2, keepDaily: 1, keepMonthly: 1, now: NOW });
    expect(sel.reasons).toEqual({
      '/b/web01/20261101T031500Z': ['matched no keep rule'],
      '/b/web01/20261102T031500Z': ['incomplete, more than a day old'],
      '/b/web01/20261124T031500Z': ['matched no keep rule'],
      '/b/web01/20261125T031500Z': ['last 2 of 2'],
      '/b/web01/20261126T031500Z': ['last 1 of 2', 'daily 2026-11-26', 'monthly 2026-11', 'newest complete set'],
    });
    expect(sel.remove.map(label)).toEqual(['2026-11-01T03:15', '2026-11-02T03:15', '2026-11-24T03:15']);
    expect(sel.keep.map(label)).toEqual(['2026-11-25T03:15', '2026-11-26T03:15']);
  });

  it.each<[RetentionRules, string]>([
    [{}, 'no retention rule: give at least one of keepLast, keepDaily, keepWeekly, keepMonthly (>= 1)'],
    [{ keepLast: 0 }, 'no retention rule'],
    [{ keepLast: -1 }, 'keepLast must be a whole number >= 0, got -1'],
    [{ keepDaily: 1.5 }, 'keepDaily must be a whole number >= 0, got 1.5'],
    [{ keepWeekly: Number.NaN }, 'keepWeekly must be a whole number >= 0, got NaN'],
  ])('rejects rules %j', (rules, message) => {
    expect(() => selectRetention([set('2026-11-26')], { ...rules, now: NOW })).toThrow(message);
  });
});

describe('calendar keys (UTC)', () => {
  it.each([
    ['2026-11-26T12:00:00Z', '2026-W48'],
    ['2026-01-01T00:00:00Z', '2026-W01'],
    ['2025-12-29T00:00:00Z', '2026-W01'],
    ['2024-12-30T00:00:00Z', '2025-W01'],
    ['2021-01-03T23:59:59Z', '2020-W53'],
    ['2021-01-04T00:00:00Z', '2021-W01'],
    ['2027-01-03T00:00:00Z', '2026-W53'],
  ])('ISO week of %s is %s', (iso, week) => {
    expect(isoWeekKey(new Date(iso))).toBe(week);
  });
  it('days and months', () => {
    expect(utcDayKey(new Date('2026-11-25T23:59:59Z'))).toBe('2026-11-25');
    expect(utcDayKey(new Date('2026-11-26T00:30:00+01:00'))).toBe('2026-11-25');
    expect(utcMonthKey(new Date('2026-12-01T00:30:00+01:00'))).toBe('2026-11');
  });
});
