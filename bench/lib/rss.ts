// The memory section (`--only rss`): what each target holds resident while idle with one blk
// controller (a null bdev; QSD: one vhost-user-blk export of a null-co node), and what each
// further controller adds (the target started again with 1 + EXTRA controllers; no front-end
// connected). VmRSS from /proc/<pid>/status, and hugetlb pages next to it: SPDK's memory lives
// in hugepages, outside VmRSS. VmRSS is split into the process's own memory (RssAnon + RssShmem)
// and file pages (RssFile): most of vhostd's file pages are the node binary's, shared by every
// Node process and dropped by the kernel under pressure. vhostd's floor is two V8 isolates
// (control thread, one reactor).
import Table from 'cli-table3';
import { readFileSync } from 'node:fs';
import { startTarget } from './manyctrl.js';
import { spdkMissing } from './spdk.js';
import type { Target, TargetKind } from './targets.js';

/** Controllers added to the second start, for the per-controller cost. */
export const RSS_EXTRA = 16;
/** Idle time before reading: start-up garbage collected, lazy allocations made. */
const SETTLE_MS = 2000;

export interface RssParams {
  spdkDir?: string;
  targets: TargetKind[];
  core: number;
  sizeBytes: number;
  dist?: boolean | string;
}

export interface RssRow {
  target: TargetKind;
  status: 'ok' | 'unavailable' | 'error';
  reason?: string;
  /** With one controller. */
  rssBytes: number;
  /** Of rssBytes: the process's own pages (RssAnon + RssShmem); the rest are file pages (RssFile). */
  privateBytes: number;
  hugetlbBytes: number;
  /** With 1 + RSS_EXTRA controllers. */
  rssBytesMany: number;
  hugetlbBytesMany: number;
  /** (many - one) / RSS_EXTRA, VmRSS plus hugetlb. */
  perControllerBytes: number;
}

export interface RssReport {
  params: RssParams;
  rows: RssRow[];
}

interface Resident {
  rss: number;
  private: number;
  hugetlb: number;
}

function residentOf(pid: number): Resident {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), private: kb('RssAnon') + kb('RssShmem'), hugetlb: kb('HugetlbPages') };
}

async function measure(kind: TargetKind, n: number, p: RssParams, live: { targets: Set<Target> }): Promise<Resident> {
  const { t } = await startTarget(kind, n, p);
  live.targets.add(t);
  try {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    return residentOf(t.pid);
  } finally {
    await t.stop().catch(() => undefined);
    live.targets.delete(t);
  }
}

export async function runRss(p: RssParams, log: (m: string) => void, live: { targets: Set<Target> }): Promise<RssReport> {
  const report: RssReport = { params: p, rows: [] };
  for (const kind of p.targets) {
    const row: RssRow = { target: kind, status: 'ok', rssBytes: 0, privateBytes: 0, hugetlbBytes: 0, rssBytesMany: 0, hugetlbBytesMany: 0, perControllerBytes: 0 };
    report.rows.push(row);
    const missing = kind === 'spdk' ? spdkMissing(p.spdkDir) : undefined;
    if (missing) {
      Object.assign(row, { status: 'unavailable', reason: missing });
      continue;
    }
    try {
      const one = await measure(kind, 1, p, live);
      const many = await measure(kind, 1 + RSS_EXTRA, p, live);
      Object.assign(row, {
        rssBytes: one.rss,
        privateBytes: one.private,
        hugetlbBytes: one.hugetlb,
        rssBytesMany: many.rss,
        hugetlbBytesMany: many.hugetlb,
        perControllerBytes: (many.rss + many.hugetlb - one.rss - one.hugetlb) / RSS_EXTRA,
      });
      log(`rss: ${kind}: ${mib(one.rss)} MiB (${mib(one.private)} private, +${mib(one.hugetlb)} hugetlb) with 1 controller, ${kib(row.perControllerBytes)} KiB per further one`);
    } catch (e) {
      const msg = (e as Error).message.split('\n')[0] ?? '';
      Object.assign(row, /not installed|not available|ENOENT/.test(msg) ? { status: 'unavailable', reason: msg } : { status: 'error', reason: msg });
      log(`rss: ${kind}: ${msg}`);
    }
  }
  return report;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const kib = (b: number) => Math.round(b / 1024).toLocaleString('en-US');

export function formatRss(r: RssReport): string {
  const title = `Memory of an idle target on core ${r.params.core}: 1 blk controller (null bdev; QSD: 1 export of a null-co node), then 1 + ${RSS_EXTRA}; no front-end connected`;
  const t = new Table({ head: ['target', 'RSS MiB', 'of which private MiB', 'hugetlb MiB', `RSS MiB, ${1 + RSS_EXTRA} ctrl`, 'per further controller KiB', 'notes'], style: { head: [], border: [], compact: true } });
  for (const row of r.rows) {
    if (row.status !== 'ok') {
      t.push([row.target, '—', '—', '—', '—', '—', `${row.status === 'error' ? 'ERROR: ' : ''}${row.reason ?? ''}`]);
      continue;
    }
    t.push([row.target, mib(row.rssBytes), mib(row.privateBytes), mib(row.hugetlbBytes), mib(row.rssBytesMany), kib(row.perControllerBytes), row.target === 'spdk' ? 'started with -s 256 (MiB of hugepage memory)' : '']);
  }
  const loader = r.params.dist ? '' : ' vhostd runs from its sources through tsx, whose TypeScript loader adds about 50 MiB (--dist: the built JavaScript, as installed).';
  return `${title}\n${t.toString()}\nprivate: the process's own pages (RssAnon + RssShmem); the rest of RSS is file pages (RssFile), for vhostd mostly the node binary's, shared by every Node process. per further controller: (RSS + hugetlb with ${1 + RSS_EXTRA} controllers - with 1) / ${RSS_EXTRA}; vhostd and SPDK add a null bdev per controller, QSD an export.${loader}`;
}
