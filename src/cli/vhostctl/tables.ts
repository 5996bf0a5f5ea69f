// --table renderings (cli-table3) for the list-returning methods.
import Table from 'cli-table3';
import { HISTOGRAM_BUCKET_SHIFT, bucketEnd, decodeHistogram, percentiles } from '../../bdev/histogram.js';

type Row = Record<string, unknown>;

function str(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
}

function render(head: string[], rows: string[][]): string {
  // No separator lines between rows; colours off so output is the same on a tty and in a pipe.
  const table = new Table({
    head,
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  table.push(...rows);
  return table.toString();
}

const mib = (bytes: number) => (Number.isFinite(bytes) ? String(Math.round((bytes / 2 ** 20) * 100) / 100) : '');

/**
 * One row per bdev; a qcow2 bdev is followed by its image files as a tree (the image, then its
 * backing chain, each with its format and the bytes allocated in the file).
 */
export function bdevTable(bdevs: Row[]): string {
  const rows: string[][] = [];
  for (const b of bdevs) {
    const bytes = Number(b.block_size) * Number(b.num_blocks);
    rows.push([str(b.name), str(b.product_name), str(b.block_size), str(b.num_blocks), mib(bytes), '', str(b.uuid), b.claimed ? 'yes' : 'no']);
    const q = ((b.driver_specific ?? {}) as { qcow2?: Row }).qcow2;
    if (q === undefined) continue;
    const files: Row[] = [{ filename: q.filename, format: q.readonly ? 'qcow2, read-only' : 'qcow2', virtual_size: q.virtual_size, allocated_bytes: q.allocated_bytes }];
    if (Array.isArray(q.backing_chain)) files.push(...(q.backing_chain as Row[]).map((f) => ({ ...f, format: `${str(f.format)}, backing` })));
    files.forEach((f, depth) => {
      rows.push([`${'   '.repeat(depth)}└─ ${str(f.filename)} (${str(f.format)})`, '', '', '', mib(Number(f.virtual_size)), mib(Number(f.allocated_bytes)), '', '']);
    });
  }
  return render(['Name', 'Product', 'Block size', 'Blocks', 'Size (MiB)', 'Allocated (MiB)', 'UUID', 'Claimed'], rows);
}

/** "blk: Malloc0 (ro)" or "scsi: 0:Malloc0 1:Malloc1" from SPDK's backend_specific object. */
function describeBackend(backend: unknown): string {
  const b = (backend ?? {}) as { block?: Row; scsi?: Row[] };
  if (b.block) return `blk: ${str(b.block.bdev)}${b.block.readonly ? ' (ro)' : ''}`;
  if (Array.isArray(b.scsi)) {
    const targets = b.scsi.map((t) => {
      const luns = Array.isArray(t.luns) ? (t.luns as Row[]).map((l) => str(l.bdev_name)).join(',') : '';
      return `${str(t.scsi_dev_num)}:${luns}`;
    });
    return `scsi: ${targets.join(' ') || '(no targets)'}`;
  }
  return '';
}

export function controllerTable(ctrlrs: Row[]): string {
  return render(
    ['Controller', 'Backend', 'CPU mask', 'Socket', 'Sessions', 'Migration', 'Delay (us)', 'IOPS threshold'],
    ctrlrs.map((c) => [
      str(c.ctrlr),
      describeBackend(c.backend_specific),
      str(c.cpumask),
      str(c.socket),
      String(Array.isArray(c.sessions) ? c.sessions.length : 0),
      c.dirty_logging === true ? 'logging dirty pages' : '',
      str(c.delay_base_us),
      str(c.iops_threshold),
    ]),
  );
}

export function methodTable(methods: unknown[]): string {
  return render(
    ['Method'],
    methods.map((m) => [str(m)]),
  );
}

/**
 * framework_get_reactors: one row per reactor, with its queues, busy/idle time and completions.
 * Given an earlier sample, Busy % and IOPS are over the interval between the two (as spdk_top);
 * otherwise Busy % is since start and IOPS is left empty.
 */
export function reactorTable(result: unknown, previous?: unknown): string {
  type Reactors = { tick_rate?: number; reactors?: Row[] };
  const r = (result ?? {}) as Reactors;
  const rate = Number(r.tick_rate) || 1;
  const before = new Map(((previous ?? {}) as Reactors).reactors?.map((x) => [x.lcore, x]) ?? []);
  const queuesOf = (x: Row | undefined) => (x && Array.isArray(x.queues) ? (x.queues as Row[]) : []);
  return render(
    ['Core', 'TID', 'Mode', 'Busy (s)', 'Idle (s)', 'Busy %', 'Queues', 'IOPS', 'Completed I/O'],
    (r.reactors ?? []).map((x) => {
      const busy = Number(x.busy);
      const idle = Number(x.idle);
      const queues = queuesOf(x);
      const prev = before.get(x.lcore);
      let dBusy = busy;
      let dIdle = idle;
      let iops = '';
      if (prev) {
        dBusy = busy - Number(prev.busy);
        dIdle = idle - Number(prev.idle);
        const done = new Map(queuesOf(prev).map((q) => [`${str(q.device)}/${str(q.queue)}`, Number(q.completed)]));
        // A queue that restarted (a new session) counts from zero.
        const delta = queues.reduce((n, q) => {
          const c = Number(q.completed);
          const p = done.get(`${str(q.device)}/${str(q.queue)}`) ?? 0;
          return n + (c >= p ? c - p : c);
        }, 0);
        const seconds = (dBusy + dIdle) / rate;
        iops = seconds > 0 ? String(Math.round(delta / seconds)) : '';
      }
      return [
        str(x.lcore),
        str(x.tid),
        x.in_interrupt ? 'interrupt' : 'poll',
        (busy / rate).toFixed(3),
        (idle / rate).toFixed(3),
        dBusy + dIdle > 0 ? ((100 * dBusy) / (dBusy + dIdle)).toFixed(1) : '0.0',
        queues.map((q) => `${str(q.device)}/${str(q.queue)}`).join(' '),
        iops,
        String(queues.reduce((n, q) => n + Number(q.completed), 0)),
      ];
    }),
  );
}

/** bdev_get_iostat: one row per bdev (or per channel with -c), average latencies in µs. */
export function iostatTable(result: unknown): string {
  const r = (result ?? {}) as { tick_rate?: number; name?: string; bdevs?: Row[]; channels?: Row[] };
  const rate = Number(r.tick_rate) || 1;
  const mib = (v: unknown) => (Number(v) / 2 ** 20).toFixed(2);
  const avgUs = (ticks: unknown, ops: unknown) => (Number(ops) > 0 ? ((Number(ticks) / Number(ops) / rate) * 1e6).toFixed(1) : '');
  const perChannel = Array.isArray(r.channels);
  const rows = (perChannel ? r.channels : r.bdevs) ?? [];
  return render(
    [perChannel ? 'Thread' : 'Name', 'Read ops', 'Read MiB', 'Write ops', 'Written MiB', 'Unmap ops', 'Flush ops', 'Read lat (us)', 'Write lat (us)', 'Errors'],
    rows.map((b) => {
      const errors = b.io_error && typeof b.io_error === 'object' ? Object.values(b.io_error as Row).reduce<number>((n, v) => n + Number(v), 0) : 0;
      return [
        perChannel ? `${str(r.name)} @ ${str(b.thread_id)}` : str(b.name),
        str(b.num_read_ops),
        mib(b.bytes_read),
        str(b.num_write_ops),
        mib(b.bytes_written),
        str(b.num_unmap_ops),
        str(b.num_flush_ops ?? ''),
        avgUs(b.read_latency_ticks, b.num_read_ops),
        avgUs(b.write_latency_ticks, b.num_write_ops),
        String(errors),
      ];
    }),
  );
}

/**
 * bdev_get_iostat --table --interval: per bdev, the IO/s and MiB/s measured between two samples
 * next to its QoS limits (bdev_get_bdevs' assigned_rate_limits; '-' = unlimited), and how many
 * I/Os QoS held back meanwhile (qos_held_ops; empty when the daemon does not report it).
 */
export function iostatRateTable(result: unknown, previous: unknown, bdevs: Row[]): string {
  type Iostat = { tick_rate?: number; ticks?: number; bdevs?: Row[] };
  const r = (result ?? {}) as Iostat;
  const p = (previous ?? {}) as Iostat;
  const rate = Number(r.tick_rate) || 1;
  const seconds = (Number(r.ticks) - Number(p.ticks)) / rate;
  const before = new Map((p.bdevs ?? []).map((b) => [b.name, b]));
  const limitsOf = new Map(bdevs.map((b) => [b.name, (b.assigned_rate_limits ?? {}) as Row]));
  // A counter reset between the samples (reset_mode, bdev_reset_iostat) counts from zero.
  const delta = (now: Row, prev: Row | undefined, key: string) => {
    const c = Number(now[key]);
    const q = Number(prev?.[key] ?? 0);
    return c >= q ? c - q : c;
  };
  const perSec = (n: number) => (seconds > 0 ? n / seconds : NaN);
  const iops = (n: number) => (Number.isFinite(perSec(n)) ? String(Math.round(perSec(n))) : '');
  const mibps = (n: number) => (Number.isFinite(perSec(n)) ? (perSec(n) / 2 ** 20).toFixed(2) : '');
  const limit = (v: unknown) => (Number(v) > 0 ? String(v) : '-');
  return render(
    ['Name', 'Read IO/s', 'Write IO/s', 'Read MiB/s', 'Write MiB/s', 'Limit RW IO/s', 'Limit RW MiB/s', 'Limit R MiB/s', 'Limit W MiB/s', 'QoS held'],
    (r.bdevs ?? []).map((b) => {
      const prev = before.get(b.name);
      const l = limitsOf.get(b.name) ?? {};
      return [
        str(b.name),
        iops(delta(b, prev, 'num_read_ops')),
        iops(delta(b, prev, 'num_write_ops')),
        mibps(delta(b, prev, 'bytes_read')),
        mibps(delta(b, prev, 'bytes_written')),
        limit(l.rw_ios_per_sec),
        limit(l.rw_mbytes_per_sec),
        limit(l.r_mbytes_per_sec),
        limit(l.w_mbytes_per_sec),
        b.qos_held_ops === undefined ? '' : String(delta(b, prev, 'qos_held_ops')),
      ];
    }),
  );
}

/**
 * bdev_get_histogram --table: per bdev, the I/O count, the lowest and highest non-empty bucket
 * (its start and its end) and p50/p90/p99/p99.9 (the end of the bucket where the cumulative
 * count reaches each, as SPDK's tools report them), in µs. Reads SPDK v25.09's reply
 * (granularity, min_range) and v24.01's (bucket_shift, every range).
 */
export function histogramTable(rows: Array<{ name: string; reply: unknown }>): string {
  const PS = [50, 90, 99, 99.9];
  return render(
    ['Name', 'I/Os', 'Min (us)', ...PS.map((p) => `p${p} (us)`), 'Max (us)'],
    rows.map(({ name, reply }) => {
      const h = (reply ?? {}) as Row;
      const granularity = Number(h.granularity ?? h.bucket_shift);
      // The bucket helpers of src/bdev/histogram.ts know vhostd's (and SPDK's default) granularity only.
      if (granularity !== HISTOGRAM_BUCKET_SHIFT) {
        throw new Error(`bdev_get_histogram ${name}: granularity ${String(h.granularity ?? h.bucket_shift)} is not supported by --table (only ${HISTOGRAM_BUCKET_SHIFT}); leave out --table for the JSON`);
      }
      const minRange = Number(h.min_range ?? 0);
      const offset = minRange * 2 ** granularity;
      const counts = decodeHistogram(String(h.histogram ?? ''));
      const us = (ticks: number) => ((ticks / (Number(h.tsc_rate) || 1)) * 1e6).toFixed(1);
      let total = 0;
      let first = -1;
      let last = -1;
      counts.forEach((c, i) => {
        if (c === 0) return;
        total += c;
        if (first < 0) first = i;
        last = i;
      });
      if (total === 0) return [name, '0', '-', ...PS.map(() => '-'), '-'];
      // A bucket starts where the one before it ends; the first one (values below min_range folded in) at 0.
      const start = first === 0 ? 0 : bucketEnd(offset + first - 1);
      return [name, String(total), us(start), ...percentiles(counts, PS, minRange).map(us), us(bucketEnd(offset + last))];
    }),
  );
}
