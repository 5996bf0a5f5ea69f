// Permissions of the sockets vhostd creates (RPC and controllers) and the rules for the
// directories they live in. A client needs write permission on a Unix socket to connect.
//
// The socket is created under umask 0177 (0600 from its first instant), then its mode and group
// are set through an O_PATH descriptor of the name that refuses symlinks and checks that it is a
// socket owned by us: never chmod/chown by path, which follows a link another user may have put in
// place of the fresh socket. Directories writable by others without the sticky bit are refused
// outright, since anybody who can write there can swap our socket for one of their own.
import { chmodSync, chownSync, closeSync, constants, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { strerror } from './errno.js';

export interface SocketPerms {
  /** File mode (default 0600: the daemon's user only). */
  mode: number;
  /** Group to give the socket (with a mode like 0660, lets that group connect). */
  gid?: number;
}

/** A group name (looked up in /etc/group) or a numeric gid. */
export function resolveGroup(group: string): number {
  if (/^\d{1,10}$/.test(group) && Number(group) < 2 ** 32 - 1) return Number(group);
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

const O_PATH = 0o10000000;
const S_ISVTX = 0o1000;

/**
 * Applies `perms` to the socket just bound at `path`, without following a link: the name is opened
 * O_PATH|O_NOFOLLOW, must be a socket owned by this process's user, and is changed through
 * /proc/self/fd (the inode the descriptor holds, not whatever the name points to by then).
 */
export function applySocketPerms(path: string, perms: SocketPerms): void {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // ELOOP: the name is a symlink now (O_NOFOLLOW); anything else: it vanished under us.
    throw new Error(`socket ${path} was replaced before its permissions were set (${code ?? String(e)}); refusing to touch it`);
  }
  try {
    const st = fstatSync(fd);
    const uid = process.geteuid?.() ?? st.uid;
    if (!st.isSocket() || st.uid !== uid) {
      throw new Error(`socket ${path} was replaced before its permissions were set (not our socket any more); refusing to touch it`);
    }
    const self = `/proc/self/fd/${fd}`;
    chmodSync(self, perms.mode);
    if (perms.gid !== undefined) chownSync(self, -1, perms.gid);
  } finally {
    closeSync(fd);
  }
}

/**
 * Refuses a socket directory in which another user could replace our sockets: it must exist, be a
 * directory, belong to root or to us, and not be writable by group or others unless its sticky bit
 * is set (as /tmp and /var/tmp are). The reason is thrown as an Error for the operator.
 */
export function checkSocketDir(dir: string, what = 'socket directory'): void {
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`${what} ${dir} does not exist: create it (mode 0700 or 0755) or pick another`);
    throw new Error(`${what} ${dir}: ${code ? `${strerror(code)} (${code})` : String(e)}`);
  }
  if (!st.isDirectory()) throw new Error(`${what} ${dir} is not a directory`);
  const uid = process.geteuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== uid) {
    throw new Error(`${what} ${dir} belongs to uid ${st.uid}, who could replace vhostd's sockets: use a directory owned by root or by vhostd's user`);
  }
  if ((st.mode & 0o022) !== 0 && (st.mode & S_ISVTX) === 0) {
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    throw new Error(
      `${what} ${dir} is writable by other users without the sticky bit (mode ${mode}): they could replace vhostd's sockets. ` +
        'Use a directory only vhostd\'s user can write to, or set the sticky bit (chmod +t)',
    );
  }
}

/**
 * Runs `bind` (which creates the socket file) under umask 0177, so the file is 0600 from its
 * first instant and nobody else can connect before applySocketPerms. process.umask() cannot be set
 * in worker threads; there the socket gets the thread's umask until applySocketPerms.
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
