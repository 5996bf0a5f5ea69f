// A dependency-free SVG chart of the bench: one panel per (bdev, rw), IOPS against queue depth,
// one line per (target, queue count).

export interface ChartPoint {
  target: string;
  bdev: string;
  rw: string;
  qd: number;
  queues: number;
  iops: number;
}

const COLORS: Record<string, string> = { vhostd: '#1f6fb4', qsd: '#e8710a', spdk: '#2ca02c', 'vhostd+bdevperf': '#6baed6', 'qsd+bdevperf': '#fdae6b', 'spdk+bdevperf': '#98df8a' };
const DASHES: Record<number, string> = { 1: '', 2: '7 4', 4: '2 3' };
const PANEL_W = 380;
const PANEL_H = 250;
const M = { left: 62, right: 14, top: 30, bottom: 40 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A round tick step (1, 2 or 5 x 10^k) giving about `ticks` intervals up to v. */
export function niceStep(v: number, ticks = 4): number {
  if (v <= 0) return 1;
  const raw = v / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function fmtIops(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v % 1e6 === 0 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v % 1e3 === 0 ? 0 : 1)}k`;
  return String(Math.round(v));
}

export function renderChart(points: ChartPoint[], opts: { title: string; subtitle?: string; bdevs: string[]; rws: string[]; qds: number[] }): string {
  const bdevs = opts.bdevs.filter((b) => points.some((p) => p.bdev === b));
  const rws = opts.rws.filter((r) => points.some((p) => p.rw === r));
  const qds = [...opts.qds].sort((a, b) => a - b);
  const cols = Math.max(1, rws.length);
  const rows = Math.max(1, bdevs.length);
  const header = 64;
  const width = Math.max(cols * PANEL_W + 20, 860);
  const height = header + rows * PANEL_H + 10;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(opts.title)}</text>`,
  ];
  if (opts.subtitle) out.push(`<text x="10" y="37" fill="#555">${esc(opts.subtitle)}</text>`);
  // Legend.
  const series = [...new Set(points.map((p) => `${p.target}|${p.queues}`))].sort();
  series.forEach((s, i) => {
    const [t, q] = s.split('|');
    const x = 10 + i * 150;
    const color = COLORS[t] ?? '#444';
    out.push(`<line x1="${x}" y1="52" x2="${x + 28}" y2="52" stroke="${color}" stroke-width="2.5" stroke-dasharray="${DASHES[Number(q)] ?? '1 2'}"/>`);
    out.push(`<text x="${x + 34}" y="56">${esc(`${t}, ${q} queue${q === '1' ? '' : 's'}`)}</text>`);
  });
  bdevs.forEach((bdev, r) => {
    rws.forEach((rw, c) => {
      const ox = 10 + c * PANEL_W;
      const oy = header + r * PANEL_H;
      const pw = PANEL_W - M.left - M.right;
      const ph = PANEL_H - M.top - M.bottom;
      const panel = points.filter((p) => p.bdev === bdev && p.rw === rw);
      const step = niceStep(Math.max(0, ...panel.map((p) => p.iops)));
      const ymax = Math.max(step, Math.ceil(Math.max(0, ...panel.map((p) => p.iops)) / step) * step);
      const x = (qd: number) => {
        const i = qds.indexOf(qd);
        return ox + M.left + (qds.length === 1 ? pw / 2 : (i / (qds.length - 1)) * pw);
      };
      const y = (v: number) => oy + M.top + ph - (v / ymax) * ph;
      out.push(`<text x="${ox + M.left}" y="${oy + 18}" font-size="12" font-weight="bold">${esc(`${bdev} — ${rw}`)}</text>`);
      out.push(`<rect x="${ox + M.left}" y="${oy + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#bbb"/>`);
      for (let v = 0; v <= ymax + step / 2; v += step) {
        const yy = y(v);
        out.push(`<line x1="${ox + M.left}" y1="${yy}" x2="${ox + M.left + pw}" y2="${yy}" stroke="#eee"/>`);
        out.push(`<text x="${ox + M.left - 6}" y="${yy + 4}" text-anchor="end">${fmtIops(v)}</text>`);
      }
      for (const qd of qds) {
        out.push(`<text x="${x(qd)}" y="${oy + M.top + ph + 15}" text-anchor="middle">${qd}</text>`);
      }
      out.push(`<text x="${ox + M.left + pw / 2}" y="${oy + M.top + ph + 30}" text-anchor="middle" fill="#555">queue depth (per queue)</text>`);
      out.push(`<text transform="translate(${ox + 14} ${oy + M.top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#555">IOPS</text>`);
      for (const s of series) {
        const [t, q] = s.split('|');
        const pts = panel.filter((p) => p.target === t && p.queues === Number(q)).sort((a, b) => a.qd - b.qd);
        if (pts.length === 0) continue;
        const color = COLORS[t] ?? '#444';
        if (pts.length > 1) {
          const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.qd).toFixed(1)},${y(p.iops).toFixed(1)}`).join(' ');
          out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2" stroke-dasharray="${DASHES[Number(q)] ?? '1 2'}"/>`);
        }
        for (const p of pts) {
          out.push(`<circle cx="${x(p.qd).toFixed(1)}" cy="${y(p.iops).toFixed(1)}" r="3" fill="${color}"><title>${esc(`${t} ${bdev} ${rw} QD${p.qd} x${p.queues}: ${Math.round(p.iops)} IOPS`)}</title></circle>`);
        }
      }
      if (panel.length === 0) out.push(`<text x="${ox + M.left + pw / 2}" y="${oy + M.top + ph / 2}" text-anchor="middle" fill="#999">no data</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
