// Socket permissions against a real vhostd: the RPC and controller sockets are 0600 by default, so
// another local user cannot connect; --socket-mode opens them up and --socket-group hands them to a
// group. Runs the connect attempts as throwaway users (useradd + setpriv), so it needs root.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
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
});
