// Several guest check scripts run in one boot, in order, each with its own environment.

/** A guest script that runs `steps` in order and exits non-zero if any of them failed. */
export function sequence(steps: Array<{ script: string; env: Record<string, string> }>): string {
  const parts = ['#!/bin/sh', 'rc=0'];
  steps.forEach((s, i) => {
    parts.push(`cat > /tmp/step${i}.sh <<'VHOSTD_EOF'\n${s.script}\nVHOSTD_EOF`);
    // export in a subshell rather than `env`: busybox's env would start busybox's own sh applets.
    const env = Object.entries(s.env)
      .map(([k, v]) => `export ${k}='${v}';`)
      .join(' ');
    parts.push(`( ${env} sh /tmp/step${i}.sh ) || { echo "FAIL step ${i}"; rc=1; }`);
  });
  parts.push('exit $rc');
  return parts.join('\n');
}
