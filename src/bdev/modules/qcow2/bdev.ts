// Qcow2Bdev: the control-thread side of a qcow2 image served as a bdev. It validates the image
// and its backing chain (chain.ts), holds one fd per file (O_DIRECT where the file allows it, as
// the uring module opens files), and describes them to the reactors in its ChannelSpec; the
// reactors run the format engine over io_uring (channel.ts).
//
// One engine per writable image: the engine keeps metadata in memory, so two engines writing
// one file would corrupt it. The spec carries a SharedArrayBuffer `ctl`: word OWNER holds the id
// of the reactor thread whose engine has the image open for writing (0: none), word ENGINES the
// number of engines (any thread, read-only ones included) not yet closed. A reactor takes OWNER
// with Atomics.compareExchange; a channel on a second thread fails its I/O while another thread
// owns the image. destroy() waits for ENGINES to reach 0 (their close flushes metadata through
// the fds) before it closes the fds.
//
// snapshot() (bdev_qcow2_snapshot) switches a bdev in use to a new overlay over its image: the
// overlay is written and opened here, the reactors switch their engines over (switch.ts), then
// the bdev describes, saves and serves the new chain. The engine that switched keeps reading the
// old image through its read-write fd (its engine frozen read-only, caches warm): that fd is kept
// until destroy(); engines opened later use the read-only fd of the new description.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bdev, ChannelSpec, ConfigCall } from '../../bdev.js';
import { IoType } from '../../io.js';
import { native } from '../../../native/index.js';
import { fileStat } from '../../../native/uring.js';
import { type OpenedFile, openBackingFile } from '../uring/file-info.js';
import { fileIoEnv, probeUring } from '../uring/uring.js';
import { type ChainFile, type ImageFormat, inspectChain, qcow2RpcError } from './chain.js';
import { CTL, type Qcow2FileShare, newDescBuffer, requestSwitch, switchBusy } from './switch.js';

export { CTL, type Qcow2FileShare } from './switch.js';

/** The guest block size of every qcow2 bdev. */
export const QCOW2_BLOCK_SIZE = 512;

export interface Qcow2ChannelSpec extends ChannelSpec {
  module: 'qcow2';
  name: string;
  /** Unique per bdev in this process: the reactors' engine map key. */
  id: string;
  readonly: boolean;
  image: Qcow2FileShare;
  /** The backing chain, nearest first. */
  chain: Qcow2FileShare[];
  /** CTL words (switch.ts). */
  ctl: SharedArrayBuffer;
  /** Chain descriptions of later generations (switch.ts). */
  desc: SharedArrayBuffer;
  /** The generation `image` and `chain` describe. */
  gen: number;
  depth: number;
  backlog: number;
  useUring: boolean;
  logLevel: string;
}

export interface Qcow2BdevParams {
  name: string;
  filename: string;
  readonly?: boolean;
  /** Replaces the backing file named in the image's header ('' = none). */
  backingFile?: string;
  uuid?: string;
}

interface OpenFile {
  file: ChainFile;
  opened: OpenedFile;
}

let nextId = 0;

/** How long destroy() waits for reactors to close their engines (flush included). */
const DESTROY_WAIT_MS = 30_000;

/** How long a snapshot's switch request may wait for the reactor serving the image to take it. */
const SWITCH_TAKE_MS = 5_000;

/** Opens one file for the reactors: O_DIRECT only where aligned reads can never cross EOF. */
function openForReactors(path: string, readonly: boolean, format: ImageFormat, log: Logger): OpenedFile {
  let f = openBackingFile(path, { readonly, log });
  try {
    if (f.blockDevice && format === 'qcow2') throw qcow2RpcError('EINVAL', `${path} is a block device: qcow2 images on block devices are not supported (the image grows)`);
    if (f.direct && (f.dioAlign !== QCOW2_BLOCK_SIZE || f.sizeBytes % f.dioAlign !== 0)) {
      // Guest sectors and the file end must be aligned for direct I/O; buffered I/O it is.
      native.close(f.fd);
      f = { ...f, fd: -1 };
      f = openBackingFile(path, { readonly, log, buffered: true });
    }
    return f;
  } catch (e) {
    if (f.fd >= 0) native.close(f.fd);
    throw e;
  }
}

export class Qcow2Bdev implements Bdev {
  readonly module = 'qcow2';
  readonly productName = 'QCOW2 disk';
  readonly blockSize = QCOW2_BLOCK_SIZE;
  readonly numBlocks: number;
  readonly id: string;
  private readonly ctl = new SharedArrayBuffer(4 * CTL.WORDS);
  private readonly desc = newDescBuffer();
  /** The generation of top + chain (CTL.GEN once the reactors switched). */
  private gen = 0;
  private closed = false;
  /** Read-write fds of images that became backing files (closed by destroy()). */
  private readonly retired: number[] = [];
  /** A snapshot under way (destroy waits for it). */
  private switching: Promise<unknown> | undefined;
  /** Called once the bdev is destroyed (the module forgets its files). */
  onDestroyed: (() => void) | undefined;

  private constructor(
    readonly name: string,
    readonly uuid: string,
    readonly params: Qcow2BdevParams,
    private top: OpenFile,
    private chain: OpenFile[],
    /** Real paths of the image (first) and its chain: what the module's in-use check compares. */
    public realpaths: string[],
    private readonly log: Logger,
    /** The image had the dirty bit: the vhostd that wrote it last was killed (image.ts). */
    readonly uncleanOpen: boolean,
  ) {
    this.numBlocks = Math.floor(top.file.virtualSize / QCOW2_BLOCK_SIZE);
    this.id = `${uuid}#${++nextId}`;
  }

  /** Validates the image and chain, opens their fds. Throws an RPC error (and holds no fd then). */
  static async create(p: Qcow2BdevParams, log: Logger, check?: (realpaths: string[]) => void): Promise<Qcow2Bdev> {
    const readonly = p.readonly ?? false;
    const inspected = await inspectChain(p.filename, { readonly, ...(p.backingFile !== undefined ? { backingFile: p.backingFile } : {}) });
    check?.(inspected.realpaths);
    if (inspected.top.virtualSize < QCOW2_BLOCK_SIZE) throw qcow2RpcError('EINVAL', `${p.filename}: virtual size ${inspected.top.virtualSize} is smaller than one block of ${QCOW2_BLOCK_SIZE} bytes`);
    const opened: OpenFile[] = [];
    try {
      opened.push({ file: inspected.top, opened: openForReactors(inspected.top.path, readonly, 'qcow2', log) });
      for (const f of inspected.chain) {
        const o = openForReactors(f.path, true, f.format, log);
        // A raw block device's size is its BLKGETSIZE64.
        opened.push({ file: f.format === 'raw' ? { ...f, virtualSize: o.sizeBytes } : f, opened: o });
      }
    } catch (e) {
      for (const o of opened) native.close(o.opened.fd);
      throw e;
    }
    const env = fileIoEnv();
    if (env.useUring && probeUring() < 0) log.warn({ bdev: p.name }, 'io_uring unavailable: qcow2 file I/O uses synchronous preadv/pwritev');
    const bdev = new Qcow2Bdev(p.name, p.uuid ?? randomUUID(), { ...p, readonly }, opened[0]!, opened.slice(1), inspected.realpaths, log, inspected.unclean);
    if (inspected.unclean) {
      log.warn(
        { bdev: p.name, filename: p.filename },
        `${p.filename} was not closed cleanly (the dirty bit is set: the process that wrote it was killed): writes it acknowledged without a FLUSH may be lost and clusters may have leaked (qemu-img check -r leaks reclaims them); a front-end that reconnects gets an error for every FLUSH (restart its guest)`,
      );
    }
    log.info(
      { bdev: p.name, filename: p.filename, readonly, virtualSize: inspected.top.virtualSize, clusterSize: inspected.top.clusterSize, chain: inspected.chain.map((c) => `${c.path} (${c.format})`) },
      `qcow2 bdev ${p.name} created on ${p.filename}${inspected.chain.length > 0 ? ` over a backing chain of ${inspected.chain.length}` : ''}`,
    );
    return bdev;
  }

  get readonly(): boolean {
    return this.params.readonly ?? false;
  }

  /** A writable image is served by one engine, on one reactor (channel.ts). */
  get threadAffinity(): string | undefined {
    return this.readonly ? undefined : this.id;
  }

  supportsIo(type: IoType): boolean {
    switch (type) {
      case IoType.READ:
      case IoType.FLUSH:
        return true;
      case IoType.WRITE:
      case IoType.UNMAP:
      case IoType.WRITE_ZEROES:
        return !this.readonly;
      default:
        return false;
    }
  }

  private share(o: OpenFile): Qcow2FileShare {
    return {
      filename: o.file.path,
      fd: o.opened.fd,
      format: o.file.format,
      direct: o.opened.direct,
      dioAlign: o.opened.direct ? o.opened.dioAlign : 0,
      inline: o.opened.inMemory,
      virtualSize: o.file.virtualSize,
    };
  }

  channelSpec(): Qcow2ChannelSpec {
    const env = fileIoEnv();
    return {
      module: 'qcow2',
      blockSize: this.blockSize,
      numBlocks: this.numBlocks,
      name: this.name,
      id: this.id,
      readonly: this.readonly,
      image: this.share(this.top),
      chain: this.chain.map((o) => this.share(o)),
      ctl: this.ctl,
      desc: this.desc,
      gen: this.gen,
      depth: env.depth,
      backlog: env.backlog,
      useUring: env.useUring,
      logLevel: this.log.level,
    };
  }

  /** st_blocks * 512 of an open file (read now), or null when fstat fails. */
  private static allocated(fd: number): number | null {
    const st = fileStat(fd);
    return typeof st === 'number' ? null : st.blocks * 512;
  }

  driverSpecific(): Record<string, unknown> {
    return {
      qcow2: {
        filename: this.params.filename,
        readonly: this.readonly,
        cluster_size: this.top.file.clusterSize,
        virtual_size: this.top.file.virtualSize,
        allocated_bytes: Qcow2Bdev.allocated(this.top.opened.fd),
        backing_chain: this.chain.map((o) => ({
          filename: o.file.path,
          format: o.file.format,
          virtual_size: o.file.virtualSize,
          allocated_bytes: Qcow2Bdev.allocated(o.opened.fd),
        })),
      },
    };
  }

  writeConfig(): ConfigCall {
    return {
      method: 'bdev_qcow2_create',
      params: {
        name: this.name,
        filename: this.params.filename,
        readonly: this.readonly,
        ...(this.params.backingFile !== undefined ? { backing_file: this.params.backingFile } : {}),
        uuid: this.uuid,
      },
    };
  }

  /** The file the bdev writes and its cluster size. */
  get image(): { path: string; virtualSize: number; clusterSize: number | undefined } {
    return { path: this.top.file.path, virtualSize: this.top.file.virtualSize, clusterSize: this.top.file.clusterSize };
  }

  get snapshotBusy(): boolean {
    return this.switching !== undefined || switchBusy(this.ctl);
  }

  /**
   * Switches the bdev to `overlay`, an image just written whose backing file is this bdev's image
   * (stored as `backingName`): opens it, has the reactors switch over (switch.ts), then serves,
   * describes and saves the new chain. Throws an RPC error with the old image still served.
   */
  async snapshot(overlay: ChainFile, overlayReal: string): Promise<void> {
    if (this.closed) throw qcow2RpcError('ENODEV', `bdev ${this.name} is being deleted`);
    if (this.snapshotBusy) throw qcow2RpcError('EBUSY', `a snapshot of bdev ${this.name} is under way`);
    const run = this.switchTo(overlay, overlayReal);
    this.switching = run;
    try {
      await run;
    } finally {
      this.switching = undefined;
    }
  }

  private async switchTo(overlay: ChainFile, overlayReal: string): Promise<void> {
    const opened: OpenFile[] = [];
    try {
      opened.push({ file: overlay, opened: openForReactors(overlay.path, false, 'qcow2', this.log) });
      // The old image from now on: read-only, on a fd of its own.
      opened.push({ file: this.top.file, opened: openForReactors(this.top.file.path, true, 'qcow2', this.log) });
    } catch (e) {
      for (const o of opened) native.close(o.opened.fd);
      throw e;
    }
    const [newTop, oldRo] = opened as [OpenFile, OpenFile];
    const chain = [oldRo, ...this.chain];
    const t0 = Date.now();
    try {
      await requestSwitch(
        this.ctl,
        this.desc,
        { image: this.share(newTop), chain: chain.map((o) => this.share(o)) },
        {
          takeTimeoutMs: SWITCH_TAKE_MS,
          onSlow: (ms) => this.log.warn({ bdev: this.name }, `qcow2 bdev ${this.name}: the switch to ${overlay.path} is still under way after ${ms} ms`),
        },
      );
    } catch (e) {
      for (const o of opened) native.close(o.opened.fd);
      throw e;
    }
    const old = this.top;
    this.top = newTop;
    this.chain = chain;
    this.gen++;
    this.realpaths = [overlayReal, ...this.realpaths];
    this.params.filename = overlay.name;
    // The engine that switched reads the old image on through it (never writing: frozen).
    if (old.opened.fd >= 0) this.retired.push(old.opened.fd);
    this.log.info(
      { bdev: this.name, overlay: overlay.path, backing: old.file.path, ms: Date.now() - t0 },
      `qcow2 bdev ${this.name} switched to ${overlay.path} over ${old.file.path} (live snapshot)`,
    );
  }

  /** Waits for the reactors' engines to close (bounded), then closes the fds. */
  async destroy(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.switching?.catch(() => undefined);
    const words = new Int32Array(this.ctl);
    const deadline = Date.now() + DESTROY_WAIT_MS;
    for (;;) {
      const n = Atomics.load(words, CTL.ENGINES);
      if (n === 0) break;
      const left = deadline - Date.now();
      if (left <= 0) {
        this.log.error({ bdev: this.name }, `qcow2 bdev ${this.name}: ${n} reactor engine(s) still open after ${DESTROY_WAIT_MS} ms; closing the files anyway (metadata not yet written back is lost)`);
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    for (const o of [this.top, ...this.chain]) if (o.opened.fd >= 0) native.close(o.opened.fd);
    for (const fd of this.retired) native.close(fd);
    this.onDestroyed?.();
    this.log.info({ bdev: this.name }, `qcow2 bdev ${this.name} closed ${this.params.filename}`);
  }
}
