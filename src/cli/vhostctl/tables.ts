// --table renderings (cli-table3) for the list-returning methods.
import Table from 'cli-table3';

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

export function bdevTable(bdevs: Row[]): string {
  return render(
    ['Name', 'Product', 'Block size', 'Blocks', 'Size (MiB)', 'UUID', 'Claimed'],
    bdevs.map((b) => {
      const bytes = Number(b.block_size) * Number(b.num_blocks);
      return [
        str(b.name),
        str(b.product_name),
        str(b.block_size),
        str(b.num_blocks),
        Number.isFinite(bytes) ? String(Math.round((bytes / 2 ** 20) * 100) / 100) : '',
        str(b.uuid),
        b.claimed ? 'yes' : 'no',
      ];
    }),
  );
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
