// Socket permissions against a real vhostd: the RPC and controller sockets are 0600 by default, so
// another local user cannot connect; --socket-mode opens them up and --socket-group hands them to a
// group. Runs the connect attempts as throwaway users (useradd + setpriv), so it needs root.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native/index.js';
import { applySocketPerms, withPrivateUmask } from '../../src/util/socket-perms.js';
import { after, before, describe, test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';

const PEER = 'vhostd-peer';
const MEMBER = 'vhostd-member';
const GROUP = 'vhostd-clients';

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

const skip =
  process.getuid?.() !== 0
    ? 'needs root (creates users)'
    : !['useradd', 'userdel', 'groupadd', 'groupdel', 'setpriv'].every(have)
      ? 'needs useradd, groupadd and setpriv'
      : false;

function id(flag: '-u' | '-g', name: string): number {
  return Number(execFileSync('id', [flag, name]).toString().trim());
}

function gid(group: string): number {
  return Number(execFileSync('getent', ['group', group]).toString().split(':')[2]);
}

const created: Array<['user' | 'group', string]> = [];

function ensureGroup(name: string): void {
  if (spawnSync('getent', ['group', name]).status === 0) return;
  execFileSync('groupadd', ['--system', name]);
  created.push(['group', name]);
}

function ensureUser(name: string, groups: string[] = []): void {
  if (spawnSync('id', [name]).status === 0) return;
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', ...(groups.length ? ['-G', groups.join(',')] : []), name]);
  created.push(['user', name]);
}

/** Tries to connect to a Unix socket as `user`; 'connected' or the error code (EACCES...). */
function connectAs(user: string, path: string): string {
  const script =
    "const s=require('net').connect(process.argv[1]);" +
    "s.on('connect',()=>{process.stdout.write('connected');process.exit(0)});" +
    "s.on('error',(e)=>{process.stdout.write(String(e.code));process.exit(2)})";
  // --init-groups: the user's own supplementary groups (GROUP for MEMBER), nothing inherited.
  const r = spawnSync('setpriv', [`--reuid=${id('-u', user)}`, `--regid=${id('-g', user)}`, '--init-groups', process.execPath, '-e', script, path], {
    cwd: '/',
    timeout: 10_000,
  });
  return r.stdout.toString() || `exit ${r.status}: ${r.stderr.toString()}`;
}

/** Whether a process other than a zombie (which writes nothing any more) is in the group. */
function groupHasLiveMember(pgid: number): boolean {
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') return true;
  }
  return false;
}

/** SIGKILLs a detached child's whole process group and waits until no member is left. */
async function killGroup(child: ChildProcess): Promise<void> {
  const pgid = child.pid;
  if (pgid === undefined) return;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    return; // the group is already gone
  }
  for (let i = 0; i < 200; i++) {
    if (!groupHasLiveMember(pgid)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process group ${pgid} still alive 2 s after SIGKILL`);
}

async function daemon(args: string[]): Promise<VhostdProcess> {
  const d = await VhostdProcess.start(args);
  // The test directory itself is 0700; open it so only the socket modes decide.
  chmodSync(d.dir, 0o755);
  await d.rpc('bdev_null_create', { name: 'N0', num_blocks: 8, block_size: 512 });
  await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'N0' });
  return d;
}

describe('socket permissions', { skip }, () => {
  before(() => {
    ensureGroup(GROUP);
    ensureUser(PEER);
    ensureUser(MEMBER, [GROUP]);
  });
  after(() => {
    for (const [kind, name] of created.reverse()) spawnSync(kind === 'user' ? 'userdel' : 'groupdel', [name]);
  });

  test('0600 by default: another user cannot connect to either socket', async () => {
    const d = await daemon([]);
    try {
      for (const path of [d.rpcSocket, d.socket('vhost.0')]) {
        assert.equal(statSync(path).mode & 0o777, 0o600, path);
        assert.equal(connectAs(PEER, path), 'EACCES', path);
        assert.equal(connectAs(MEMBER, path), 'EACCES', path);
      }
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('--socket-mode 0666 lets any local user connect', async () => {
    const d = await daemon(['--socket-mode', '0666']);
    try {
      for (const path of [d.rpcSocket, d.socket('vhost.0')]) {
        assert.equal(statSync(path).mode & 0o777, 0o666, path);
        assert.equal(connectAs(PEER, path), 'connected', path);
      }
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('--socket-group with --socket-mode 0660 admits that group only', async () => {
    for (const group of [GROUP, String(gid(GROUP))]) {
      const d = await daemon(['--socket-mode', '0660', '--socket-group', group]);
      try {
        for (const path of [d.rpcSocket, d.socket('vhost.0')]) {
          const st = statSync(path);
          assert.equal(st.mode & 0o777, 0o660, path);
          assert.equal(st.gid, gid(GROUP), path);
          assert.equal(connectAs(MEMBER, path), 'connected', path);
          assert.equal(connectAs(PEER, path), 'EACCES', path);
        }
      } finally {
        assert.equal(await d.stop(), 0);
      }
    }
  });

  test('an unknown --socket-group stops vhostd at start', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/vhostd.ts', '-S', '/tmp', '-r', '/tmp/vhostd-perm-never.sock', '--socket-group', 'no-such-group-xyz'], {
      cwd: new URL('../../', import.meta.url).pathname,
      timeout: 20_000,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr.toString(), /unknown group "no-such-group-xyz"/);
  });

  test('a socket swapped for a symlink by another user mid-create: the link target is never touched', async () => {
    // The attack needs a directory the other user can write to without the sticky bit: vhostd
    // refuses those at start and at every create (tests below), so this drives the bind-and-set-
    // permissions step itself, as the controller does, against a real racer running as PEER.
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-race-'));
    const vault = mkdtempSync(join(tmpdir(), 'vhostd-vault-'));
    chmodSync(dir, 0o777);
    chmodSync(vault, 0o755);
    const target = join(vault, 'root-owned');
    writeFileSync(target, 'secret\n', { mode: 0o600 });
    const sock = join(dir, 'vhost.0');
    const racer = spawn(
      'setpriv',
      [`--reuid=${id('-u', PEER)}`, `--regid=${id('-g', PEER)}`, '--clear-groups', 'bash', '-c',
        `end=$((SECONDS+20)); while [ $SECONDS -lt $end ]; do mv -f ${sock} ${dir}/stolen 2>/dev/null && ln -s ${target} ${sock} 2>/dev/null; done`],
      // Its own process group, so the cleanup can kill the shell and the mv/ln it has running.
      { stdio: 'ignore', detached: true },
    );
    let created = 0;
    let refused = 0;
    try {
      for (let i = 0; i < 3000 && refused < 20; i++) {
        try {
          if (lstatSync(sock).isSocket() || lstatSync(sock).isSymbolicLink()) unlinkSync(sock);
        } catch {
          // nothing there
        }
        const fd = withPrivateUmask(() => native.socketListen(sock, 1));
        if (fd < 0) continue; // the racer's link took the name first: bind refuses it (EADDRINUSE)
        try {
          applySocketPerms(sock, { mode: 0o660, gid: gid(GROUP) });
          created++;
        } catch (e) {
          assert.match((e as Error).message, /was replaced before its permissions were set/);
          refused++;
        } finally {
          native.close(fd);
        }
        const st = statSync(target);
        assert.equal(st.mode & 0o7777, 0o600, `the link target's mode changed after ${created + refused} creates`);
        assert.equal(st.gid, 0, `the link target's group changed after ${created + refused} creates`);
      }
    } finally {
      // Killing only the shell left a running `mv`/`ln` writing into dir while it was removed
      // (ENOTEMPTY): kill the whole group and wait until none of it is left.
      await killGroup(racer);
      rmSync(dir, { recursive: true, force: true });
      rmSync(vault, { recursive: true, force: true });
    }
    // The racer did win the race at times; each time the swapped name was refused, not followed.
    assert.ok(refused > 0, `the racer never swapped the socket in time (${created} creates)`);
  });

  test('a socket directory writable by others without the sticky bit is refused at start', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-open-'));
    try {
      chmodSync(dir, 0o777);
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/vhostd.ts', '-S', dir, '-r', join(tmpdir(), 'vhostd-open-never.sock')], {
        cwd: new URL('../../', import.meta.url).pathname,
        timeout: 20_000,
      });
      assert.equal(r.status, 1);
      assert.match(r.stderr.toString(), /socket directory \(-S\) .* is writable by other users without the sticky bit \(mode 0777\)/);
      // The RPC socket's directory follows the same rule.
      const r2 = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/vhostd.ts', '-S', tmpdir(), '-r', join(dir, 'spdk.sock')], {
        cwd: new URL('../../', import.meta.url).pathname,
        timeout: 20_000,
      });
      assert.equal(r2.status, 1);
      assert.match(r2.stderr.toString(), /RPC socket directory \(-r\) .* is writable by other users without the sticky bit/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a socket directory opened up after start: controller creates are refused until it is sticky', async () => {
    const d = await VhostdProcess.start([]);
    try {
      await d.rpc('bdev_null_create', { name: 'N0', num_blocks: 8, block_size: 512 });
      chmodSync(d.dir, 0o777);
      await assert.rejects(d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'N0' }), (e: { code: number; message: string }) => {
        assert.equal(e.code, -32602); // SPDK's vhost RPCs answer every create failure with -32602
        assert.match(e.message, /writable by other users without the sticky bit/);
        return true;
      });
      await assert.rejects(d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi.0' }), /writable by other users without the sticky bit/);
      chmodSync(d.dir, 0o1777);
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'N0' });
      assert.ok(statSync(d.socket('vhost.0')).isSocket());
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });
});
