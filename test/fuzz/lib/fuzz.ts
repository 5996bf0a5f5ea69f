// Run-length control for the property-based fuzz tests. In CI every property runs a small, fixed
// number of cases; `npm run fuzz` (or the variables below) runs them longer:
//   FUZZ_RUNS=N      cases per property
//   FUZZ_SECONDS=S   keep generating cases for S seconds per property (interrupts cleanly)
//   FUZZ_SEED=N      replay with this seed (fast-check prints seed and path on failure;
//   FUZZ_PATH=P      with FUZZ_PATH it replays exactly the failing case)
import type fc from 'fast-check';

export function fuzzParams<T>(defaultRuns: number): fc.Parameters<T> {
  const env = process.env;
  const params: fc.Parameters<T> = { numRuns: defaultRuns, includeErrorInReport: true };
  if (env.FUZZ_RUNS) params.numRuns = Number(env.FUZZ_RUNS);
  if (env.FUZZ_SECONDS) {
    params.numRuns = env.FUZZ_RUNS ? Number(env.FUZZ_RUNS) : 1_000_000_000;
    params.interruptAfterTimeLimit = Number(env.FUZZ_SECONDS) * 1000;
    params.markInterruptAsFailure = false;
  }
  if (env.FUZZ_SEED) params.seed = Number(env.FUZZ_SEED);
  if (env.FUZZ_PATH) params.path = env.FUZZ_PATH;
  return params;
}
