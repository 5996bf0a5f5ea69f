// Summaries of V8 .cpuprofile files (node --cpu-prof): self time per function and per source
// file, idle and GC time, and time per request when the number of requests is known.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  selfMs: number;
  /** Share of the non-idle time. */
  pct: number;
  /** Self time per request (ns), when the request count is known. */
  nsPerRequest?: number;
}

export interface ProfileSummary {
  file: string;
  /** What the thread is, guessed from its code: reactor, control (main), module loader, other. */
  role: 'reactor' | 'control' | 'loader' | 'other';
  totalMs: number;
  idleMs: number;
  gcMs: number;
  busyMs: number;
  topFunctions: ProfileEntry[];
  topFiles: ProfileEntry[];
}

function shortUrl(url: string): string {
  if (!url) return '(native)';
  const m = /\/(src|node_modules)\/(.*)$/.exec(url);
  if (m) return m[1] === 'src' ? m[2] : `node_modules/${m[2].split('/')[0]}`;
  if (url.startsWith('node:')) return url;
  return basename(url);
}

export function summarizeProfile(path: string, requests?: number, top = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i] is the time since the previous sample: charge it to the sample it ends.
    const dt = p.timeDeltas[i] ?? 0;
    selfUs.set(p.samples[i], (selfUs.get(p.samples[i]) ?? 0) + dt);
  }
  let idle = 0;
  let gc = 0;
  let total = 0;
  const fn = new Map<string, number>();
  const files = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    total += us;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') {
      idle += us;
      continue;
    }
    if (name === '(garbage collector)') gc += us;
    const file = name.startsWith('(') ? name : shortUrl(n.callFrame.url);
    // Sources run through tsx report line 0; keep real line numbers only.
    const key = name.startsWith('(') ? name : `${name} ${file}${n.callFrame.lineNumber > 0 ? `:${n.callFrame.lineNumber + 1}` : ''}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    files.set(file, (files.get(file) ?? 0) + us);
  }
  const busy = total - idle;
  const share = (re: RegExp) => [...files].filter(([f]) => re.test(f)).reduce((a, [, us]) => a + us, 0) / Math.max(1, busy);
  const has = (re: RegExp) => [...files.keys()].some((f) => re.test(f));
  const role: ProfileSummary['role'] = has(/^(virtio\/queue-runner|reactor\/reactor)\.[jt]s$/)
    ? 'reactor'
    : share(/^node:internal\/modules\/esm\/worker/) > 0.05
      ? 'loader'
      : has(/^(app\.[jt]s|rpc\/|services\/|vhost-user\/)/)
        ? 'control'
        : 'other';
  const entries = (m: Map<string, number>): ProfileEntry[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({
        name,
        selfMs: us / 1000,
        pct: busy > 0 ? (us / busy) * 100 : 0,
        nsPerRequest: requests ? (us * 1000) / requests : undefined,
      }));
  return {
    file: path,
    role,
    totalMs: total / 1000,
    idleMs: idle / 1000,
    gcMs: gc / 1000,
    busyMs: busy / 1000,
    topFunctions: entries(fn),
    topFiles: entries(files),
  };
}

export function formatProfile(s: ProfileSummary, title: string): string {
  const lines = [
    `${title} [${s.role} thread] ${basename(s.file)}: ${s.totalMs.toFixed(0)} ms sampled, ${s.busyMs.toFixed(0)} ms busy, ${s.idleMs.toFixed(0)} ms idle, GC ${s.gcMs.toFixed(1)} ms`,
    '  self time by source file:',
  ];
  const row = (e: ProfileEntry) =>
    `    ${e.pct.toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(1).padStart(8)} ms${e.nsPerRequest !== undefined ? `  ${e.nsPerRequest.toFixed(0).padStart(6)} ns/req` : ''}  ${e.name}`;
  for (const e of s.topFiles) lines.push(row(e));
  lines.push('  self time by function:');
  for (const e of s.topFunctions) lines.push(row(e));
  return lines.join('\n');
}
