// SPDK cpumasks ("0x3", "[0,1]"), parsed for reactor placement and the rbd module's core_mask.

/** SPDK's cpuset holds 1024 cores (SPDK_CPUSET_SIZE); no mask may name a core beyond it. */
export const MAX_CORES = 1024;

/**
 * Parses an SPDK cpumask ("0x3", "3", "[0,1]", "[0-1,4]") into sorted core numbers, each below
 * MAX_CORES. The work and memory are bounded by MAX_CORES, whatever numbers the text holds: a
 * range is checked before it is walked, and a hex mask longer than MAX_CORES bits is refused.
 */
export function parseCpumask(mask: string): number[] {
  const s = mask.trim();
  const invalid = (why: string) => new Error(`invalid cpumask ${JSON.stringify(mask.length > 64 ? `${mask.slice(0, 64)}...` : mask)}: ${why}`);
  const selected = new Uint8Array(MAX_CORES);
  if (s.startsWith('[') && s.endsWith(']')) {
    const core = (text: string): number => {
      const t = text.trim();
      if (/^\d{5,}$/.test(t)) throw invalid(`core ${t.slice(0, 24)} is beyond the last possible core ${MAX_CORES - 1}`);
      if (!/^\d{1,4}$/.test(t)) throw invalid(`${JSON.stringify(t.slice(0, 16))} is not a core number`);
      const c = Number(t);
      if (c >= MAX_CORES) throw invalid(`core ${c} is beyond the last possible core ${MAX_CORES - 1}`);
      return c;
    };
    for (const part of s.slice(1, -1).split(',')) {
      const dash = part.indexOf('-');
      const first = core(dash < 0 ? part : part.slice(0, dash));
      const last = dash < 0 ? first : core(part.slice(dash + 1));
      if (last < first) throw invalid(`range ${first}-${last} runs backwards`);
      selected.fill(1, first, last + 1);
    }
  } else {
    const hex = s.toLowerCase().startsWith('0x') ? s.slice(2) : s;
    if (!/^[0-9a-f]+$/i.test(hex)) throw invalid('expected a hex mask such as 0x3 or a list such as [0,1]');
    const digits = hex.replace(/^0+/, '');
    if (digits.length > MAX_CORES / 4) throw invalid(`it names cores beyond the last possible core ${MAX_CORES - 1}`);
    for (let i = 0; i < digits.length; i++) {
      const nibble = Number.parseInt(digits[digits.length - 1 - i], 16);
      for (let b = 0; b < 4; b++) if (nibble & (1 << b)) selected[i * 4 + b] = 1;
    }
  }
  const cores: number[] = [];
  for (let c = 0; c < MAX_CORES; c++) if (selected[c]) cores.push(c);
  if (cores.length === 0) throw new Error(`cpumask ${mask} selects no core`);
  return cores;
}
