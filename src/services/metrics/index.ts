// The Prometheus metrics endpoint (--metrics-listen): registry, bdev statistics accessor, server.
export { type BdevIoCounters, type BdevLatencyHistogram, type BdevMetricsSource, type BdevQosCounters, type BdevStatsRegistry, HISTOGRAM_BOUNDS_SECONDS, bdevMetricsSource } from './bdev-source.js';
export { METRIC_NAMES, type MetricsSources, VhostdMetrics } from './collector.js';
export { DEFAULT_METRICS_HOST, type ListenAddress, METRICS_PATH, MetricsListenError, MetricsServer, formatListenAddress, parseListenAddress } from './http.js';
