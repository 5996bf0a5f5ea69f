// The control-thread half of one bdev's layer: its statistics, QoS limits and histogram, and the
// share every layer channel of the bdev is opened with (layer-share.ts). Created by the registry
// when the bdev is registered.
import { IoType } from './io.js';
import { BdevIostat } from './iostat.js';
import { BdevHistogram, HISTOGRAM_DEFAULT_MAX_NS, HISTOGRAM_DEFAULT_MIN_NS, type HistogramJson, histogramBufferBytes } from './histogram.js';
import type { ConfigCall } from './bdev.js';
import type { LayerShare } from './bdev.js';
import { Ctl } from './layer-share.js';
import { BdevQos } from './qos.js';

/** bdev_enable_histogram's opc names (SPDK's io type names as in supported_io_types). */
export const HISTOGRAM_OPC: Record<string, IoType> = {
  read: IoType.READ,
  write: IoType.WRITE,
  flush: IoType.FLUSH,
  unmap: IoType.UNMAP,
  write_zeroes: IoType.WRITE_ZEROES,
};
const ALL_TYPES = Object.values(HISTOGRAM_OPC).reduce<number>((m, t) => m | (1 << t), 0);

export class BdevLayer {
  readonly share: LayerShare;
  readonly iostat: BdevIostat;
  readonly qos: BdevQos;
  readonly histogram: BdevHistogram;
  private readonly ctl: Int32Array;
  /** The opc given to bdev_enable_histogram (undefined: every type), for save_config. */
  histogramOpc: string | undefined = undefined;
  /** The span bdev_get_histogram reports, [min, max) ns (SPDK's min_nsec/max_nsec). */
  private histogramSpan = { minNs: HISTOGRAM_DEFAULT_MIN_NS, maxNs: HISTOGRAM_DEFAULT_MAX_NS };

  constructor() {
    const control = new SharedArrayBuffer(Ctl.WORDS * 4);
    this.iostat = new BdevIostat(control);
    const histogram = new SharedArrayBuffer(histogramBufferBytes());
    this.share = { control, iostat: this.iostat.buffer, histogram };
    this.qos = new BdevQos(control);
    this.histogram = new BdevHistogram(histogram);
    this.ctl = new Int32Array(control);
  }

  /** The backend was opened unclean (Bdev.uncleanOpen): devices fail a resumed session's FLUSHes. */
  markUnclean(): void {
    Atomics.store(this.ctl, Ctl.UNCLEAN_OPEN, 1);
  }

  get histogramEnabled(): boolean {
    return Atomics.load(this.ctl, Ctl.HIST_TYPES) !== 0;
  }

  /**
   * bdev_enable_histogram: on (for one type, or all) starts from empty buckets, as SPDK allocates
   * a new histogram; off stops recording and keeps nothing.
   */
  setHistogram(enable: boolean, opc?: string, span: { minNs?: number; maxNs?: number } = {}): void {
    if (!enable) {
      Atomics.store(this.ctl, Ctl.HIST_TYPES, 0);
      this.histogramOpc = undefined;
      return;
    }
    if (this.histogramEnabled) Atomics.store(this.ctl, Ctl.HIST_TYPES, 0);
    this.histogram.clear();
    this.histogramOpc = opc;
    this.histogramSpan = { minNs: span.minNs ?? HISTOGRAM_DEFAULT_MIN_NS, maxNs: span.maxNs ?? HISTOGRAM_DEFAULT_MAX_NS };
    Atomics.store(this.ctl, Ctl.HIST_TYPES, opc === undefined ? ALL_TYPES : 1 << HISTOGRAM_OPC[opc]);
  }

  histogramJson(): HistogramJson {
    return this.histogram.toJson(this.histogramSpan.minNs, this.histogramSpan.maxNs);
  }

  /** The calls that restore the layer's settings after the bdev's own create (SPDK's order). */
  writeConfig(name: string): ConfigCall[] {
    const calls: ConfigCall[] = [];
    if (this.qos.enabled) {
      const limits = this.qos.limits();
      const set = Object.fromEntries(Object.entries(limits).filter(([, v]) => v > 0));
      calls.push({ method: 'bdev_set_qos_limit', params: { name, ...set } });
    }
    if (this.histogramEnabled) {
      calls.push({ method: 'bdev_enable_histogram', params: { name, enable: true, ...(this.histogramOpc !== undefined ? { opc: this.histogramOpc } : {}) } });
    }
    return calls;
  }
}
