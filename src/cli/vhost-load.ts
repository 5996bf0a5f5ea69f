// vhost-load: drives a vhost-user-blk target (vhostd, qemu-storage-daemon, SPDK vhost, ...) with
// fixed-size random or sequential I/O from a userspace initiator and reports IOPS, latency
// percentiles and CPU time of both sides.
//   node dist/src/cli/vhost-load.js -s /var/tmp/vhost.0 -q 2 -d 32 --rw randread -t 5 --cpu 1
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { type LoadResult, LoadGenerator, RW_MODES, type RwMode } from '../initiator/load.js';
import { pinProcess } from '../initiator/pin.js';

function int(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

function num(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative number`);
    return n;
  };
}

/** "4096", "4k", "1m", "1g" -> bytes. */
export function parseSize(v: string): number {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`invalid size ${v}`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * mult;
}

interface CliOptions {
  socket: string;
  queues: number;
  iodepth: number;
  bs: number;
  rw: RwMode;
  rwmixread: number;
  time?: number;
  requests?: number;
  warmup: number;
  verify?: boolean;
  ring: 'split' | 'packed';
  queueSize?: number;
  indirect?: boolean;
  eventIdx: boolean;
  spinUs: number;
  rescueMs: number;
  cpu?: number;
  hugetlbfs?: string;
  range?: number;
  targetPid?: number;
  seed?: number;
  json?: boolean;
  histogram?: boolean;
  progress?: boolean;
}

export function formatResult(r: LoadResult): string {
  const l = r.latency;
  const c = r.config;
  const lines = [
    `${c.rw}: ${c.queues} queue(s) x depth ${c.iodepth}, ${c.ioBytes} B, ${c.ring} ring of ${c.queueSize}${c.indirect ? ' (indirect)' : ''}, event_idx ${r.target.eventIdx ? 'on' : 'off'}`,
    `  ios=${r.ios} (read ${r.reads}, write ${r.writes}) in ${r.seconds.toFixed(3)} s: ${Math.round(r.iops)} IOPS, ${r.mibps.toFixed(1)} MiB/s`,
    `  lat (us): min=${l.minUs} mean=${l.meanUs} p50=${l.p50Us} p90=${l.p90Us} p99=${l.p99Us} p99.9=${l.p999Us} max=${l.maxUs}`,
    `  initiator: cpu ${r.initiator.cpuPct.toFixed(1)}% (user ${r.initiator.userSec.toFixed(2)} s, sys ${r.initiator.sysSec.toFixed(2)} s), busy ${r.initiator.busyPct.toFixed(1)}%, gc ${r.initiator.gcCount} (${r.initiator.gcMs.toFixed(1)} ms), not running ${r.initiator.hiccupMs.toFixed(0)} ms, kicks ${r.initiator.kicks}, sleeps ${r.initiator.sleeps}${r.initiator.rescueKicks ? `, target stalls re-kicked ${r.initiator.rescueKicks}` : ''}`,
  ];
  if (r.targetProc) {
    lines.push(
      `  target pid ${r.targetProc.pid}: cpu ${r.targetProc.cpuPct.toFixed(1)}% (${r.targetProc.cpuSec.toFixed(2)} s), ${Math.round(r.targetProc.iopsPerCpuSec)} IOPS per CPU-second`,
    );
  }
  if (r.errors || r.verifyErrors) lines.push(`  ERRORS: ${r.errors} I/O error(s), ${r.verifyErrors} verify failure(s): ${r.firstError ?? ''}`);
  else if (c.verify) lines.push('  verify: ok');
  return `${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command()
    .name('vhost-load')
    .description(
      'Load generator for vhost-user-blk targets: N queues x queue depth D of fixed-size I/O from a userspace initiator\n' +
        '(split virtqueues, polled completions). Works against vhostd, qemu-storage-daemon or any vhost-user-blk back-end.',
    )
    .requiredOption('-s, --socket <path>', 'vhost-user-blk socket of the target')
    .option('-q, --queues <n>', 'request queues', int('queues', 1), 1)
    .option('-d, --iodepth <n>', 'requests in flight per queue', int('iodepth', 1), 32)
    .option('-b, --bs <size>', 'bytes per request (4k, 64k, ...)', parseSize, 4096)
    .addOption(new Option('--rw <mode>', 'I/O pattern').choices(RW_MODES as string[]).default('randread'))
    .option('--rwmixread <pct>', 'percentage of reads for randrw/rw', int('rwmixread'), 50)
    .option('-t, --time <seconds>', 'measure for this long (default 5 unless --requests)', num('time'))
    .option('-n, --requests <n>', 'measure exactly this many requests', int('requests', 1))
    .option('-w, --warmup <seconds>', 'run this long before measuring', num('warmup'), 0)
    .option('--verify', 'write an LBA+generation pattern, check it on reads (one request per block in flight)')
    .addOption(new Option('--ring <kind>', 'virtqueue layout').choices(['split', 'packed']).default('split'))
    .option('--queue-size <n>', 'ring size (default: smallest power of two >= 3*iodepth, at least 64)', int('queue-size', 2))
    .option('--indirect', 'one indirect descriptor table per request')
    .option('--no-event-idx', 'do not negotiate VIRTIO_RING_F_EVENT_IDX')
    .option('--spin-us <us>', 'busy-poll this long without progress before sleeping on the call eventfd', num('spin-us'), 50)
    .option('--rescue-ms <ms>', 'asleep this long with requests in flight and no call: kick again (0: never)', num('rescue-ms'), 2)
    .option('--hugetlbfs <dir>', 'back the driver memory with a file on this hugetlbfs mount (e.g. /dev/hugepages) instead of a memfd: SPDK\'s vhost target maps only hugepage memory')
    .option('--cpu <n>', 'pin the initiator (all its threads) to this CPU', int('cpu'))
    .option('--range <size>', 'only use the first <size> bytes of the device', parseSize)
    .option('--target-pid <pid>', 'report CPU time of this process (the target) from /proc', int('target-pid', 1))
    .option('--seed <n>', 'PRNG seed for the LBA sequence', int('seed'))
    .option('--json', 'print the result as JSON')
    .option('--histogram', 'include the latency histogram buckets in --json output')
    .option('--progress', 'print IOPS once a second on stderr')
    .addHelpText(
      'after',
      `
Run as: node dist/src/cli/vhost-load.js ... (after npm run build), or node --import tsx src/cli/vhost-load.ts ...

Examples:
  vhost-load -s /var/tmp/vhost.0 -q 2 -d 32 --rw randread -t 5 --cpu 1
  vhost-load -s /tmp/qsd.sock --rw randrw --rwmixread 70 -n 1000000 --target-pid $(pgrep -o qemu-storage)
  vhost-load -s /var/tmp/vhost.0 --rw randrw --verify --range 64m -t 10
  vhost-load -s /var/tmp/spdk/vhost.0 --hugetlbfs /dev/hugepages -d 32 -t 5   (SPDK's vhost target)

Latency is measured from submission to the reap of the used ring entry (both taken from one
monotonic clock reading per polling pass). The initiator polls with calls suppressed and sleeps on
the call eventfd after --spin-us without progress; "busy" is the share of wall time spent in polling
passes that made progress, so busy near 100% means the initiator, not the target, set the pace.`,
    );
  program.parse(argv);
  const o = program.opts<CliOptions>();
  if (o.cpu !== undefined) {
    const pin = pinProcess(o.cpu);
    if (!pin.thread) process.stderr.write(`vhost-load: could not pin to CPU ${o.cpu}: ${pin.error}\n`);
  }
  let gen: LoadGenerator;
  try {
    gen = await LoadGenerator.connect({
      socketPath: o.socket,
      queues: o.queues,
      iodepth: o.iodepth,
      ioBytes: o.bs,
      ring: o.ring,
      queueSize: o.queueSize,
      indirect: o.indirect,
      eventIdx: o.eventIdx,
      spinUs: o.spinUs,
      rescueMs: o.rescueMs,
      rangeBytes: o.range,
      seed: o.seed,
      hugetlbfs: o.hugetlbfs,
    });
  } catch (e) {
    process.stderr.write(`vhost-load: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  const stop = () => {
    gen.close();
    process.exit(130);
  };
  process.once('SIGINT', stop);
  try {
    const r = await gen.run({
      rw: o.rw,
      rwMixRead: o.rwmixread,
      durationMs: o.time !== undefined ? o.time * 1000 : undefined,
      requests: o.requests,
      warmupMs: o.warmup * 1000,
      verify: o.verify,
      targetPid: o.targetPid,
      keepHistogram: o.histogram,
      onProgress: o.progress ? (p) => process.stderr.write(`[${p.phase}] ${(p.elapsedMs / 1000).toFixed(1)} s: ${Math.round(p.iops)} IOPS\n`) : undefined,
    });
    process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatResult(r));
    return r.errors || r.verifyErrors ? 2 : 0;
  } catch (e) {
    process.stderr.write(`vhost-load: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', stop);
    gen.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main(process.argv).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`vhost-load: ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}
