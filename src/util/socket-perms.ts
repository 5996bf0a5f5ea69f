// Permissions of the sockets vhostd creates (RPC and controllers): mode and optional group, set
// on the socket file right after bind. A client needs write permission on a Unix socket to connect.
import { chmodSync, chownSync, readFileSync } from 'node:fs';

export interface SocketPerms {
  /** File mode (default 0600: the daemon's user only). */
  mode: number;
  /** Group to give the socket (with a mode like 0660, lets that group connect). */
  gid?: number;
}

/** A group name (looked up in /etc/group) or a numeric gid. */
export function resolveGroup(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let lines: string[] = [];
  try {
    lines = readFileSync('/etc/group', 'utf8').split('\n');
  } catch {
    // no group database: only numeric gids work
  }
  for (const line of lines) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`unknown group ${JSON.stringify(group)}`);
}

/** Applies `perms` to the socket file at `path`. */
export function applySocketPerms(path: string, perms: SocketPerms): void {
  chmodSync(path, perms.mode);
  if (perms.gid !== undefined) chownSync(path, -1, perms.gid);
}

/**
 * Runs `bind` (which creates the socket file) under umask 0177, so the file is 0600 from its
 * first instant and nobody else can connect before applySocketPerms. process.umask() is not
 * available in worker threads; there only the later chmod applies.
 */
export function withPrivateUmask<T>(bind: () => T): T {
  let previous: number | undefined;
  try {
    previous = process.umask(0o177);
  } catch {
    previous = undefined;
  }
  try {
    return bind();
  } finally {
    if (previous !== undefined) process.umask(previous);
  }
}
