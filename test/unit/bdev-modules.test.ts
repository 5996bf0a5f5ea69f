// The bdev module structure: the module list drives the reactors' channel factories and the RPC
// method table; the registry's one name/UUID check; claims that cascade through a vbdev over a
// vbdev; the shared pass-through base of the delay and error vbdevs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import type { ChannelSpec } from '../../src/bdev/bdev.js';
import { BDEV_MODULES, channelFactories, openBackendChannel } from '../../src/bdev/channels.js';
import { IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import type { BdevModule } from '../../src/bdev/module.js';
import { createDelay } from '../../src/bdev/modules/delay/module.js';
import { DelayBdev } from '../../src/bdev/modules/delay/delay.js';
import { ErrorBdev } from '../../src/bdev/modules/error/error.js';
import { createError } from '../../src/bdev/modules/error/module.js';
import { createMalloc } from '../../src/bdev/modules/malloc/module.js';
import { createNull } from '../../src/bdev/modules/null/module.js';
import { BdevRegistry } from '../../src/bdev/registry.js';
import { PassThroughBdev, PassThroughChannel } from '../../src/bdev/vbdev.js';
import { VhostdError } from '../../src/util/errors.js';
import { openSpecOf } from './helpers/open-spec.js';

const lat = { avgReadUs: 0, p99ReadUs: 0, avgWriteUs: 0, p99WriteUs: 0 };

function code(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    return (e as VhostdError).code;
  }
  return undefined;
}

describe('bdev module list', () => {
  it('names every backend once and builds the channel factories from the modules', () => {
    assert.deepEqual(BDEV_MODULES.map((m) => m.name).sort(), ['delay', 'error', 'malloc', 'null', 'qcow2', 'rbd', 'uring']);
    const factories = channelFactories(BDEV_MODULES);
    assert.deepEqual([...factories.keys()].sort(), ['delay', 'error', 'malloc', 'null', 'qcow2', 'rbd', 'uring']);
    // Every RPC method name is unique across modules.
    const ctx = { bdevs: new BdevRegistry(), logger: pino({ level: 'silent' }) };
    const names = BDEV_MODULES.flatMap((m) => (m.rpcMethods?.(ctx) ?? []).flatMap((r) => [r.name, ...(r.aliases ?? [])]));
    assert.equal(new Set(names).size, names.length);
    assert.ok(names.includes('bdev_malloc_create') && names.includes('bdev_error_inject_error'));
  });

  it('a module in the list is all a new backend needs on the reactor side', () => {
    const opened: ChannelSpec[] = [];
    const fake: BdevModule = {
      name: 'fake',
      bdevModules: ['fake'],
      channels: {
        fake: (spec, open) => {
          opened.push(spec);
          assert.equal(typeof open, 'function', 'vbdevs get openBdev handed in');
          return { submit: (io) => io.complete(IoStatus.SUCCESS), close: () => undefined };
        },
      },
    };
    const factories = channelFactories([...BDEV_MODULES, fake]);
    const ch = factories.get('fake')!({ module: 'fake', blockSize: 512, numBlocks: 1 });
    let status: IoStatus | undefined;
    ch.submit({ type: IoType.FLUSH, offset: 0, length: 0, iov: new IoVecs(0), complete: (s) => (status = s) });
    assert.equal(status, IoStatus.SUCCESS);
    assert.equal(opened.length, 1);
    assert.throws(() => channelFactories([fake, fake]), /given twice/);
    assert.throws(() => openBackendChannel({ module: 'fake', blockSize: 512, numBlocks: 1 }), /no channel factory/);
  });
});

describe('registry name check (checkNameFree / reserveName)', () => {
  it('is the one check of every module, with each module\'s error style', () => {
    const reg = new BdevRegistry();
    createMalloc(reg, { name: 'M0', numBlocks: 8, blockSize: 512, uuid: '11111111-2222-4333-8444-555555555555' });
    assert.equal(code(() => reg.checkNameFree('', undefined)), -22);
    assert.equal(code(() => reg.checkNameFree('a\0b', undefined)), -32602);
    assert.equal(code(() => reg.checkNameFree('M0', undefined)), -17);
    assert.equal(code(() => reg.checkNameFree('X', '11111111-2222-4333-8444-555555555555')), -17);
    assert.doesNotThrow(() => reg.checkNameFree('X', undefined));
    // Modules answer through it: null (plain), the error vbdev's EE_ name.
    assert.equal(code(() => createNull(reg, { name: 'M0', numBlocks: 8, blockSize: 512 })), -17);
    const err = (() => {
      try {
        reg.checkNameFree('M0', undefined, (e, what) => VhostdError.errnoWithDetail(e, what));
      } catch (e) {
        return e as VhostdError;
      }
    })();
    assert.equal(err?.message, 'File exists: bdev M0 already exists');
  });

  it('reserved names are taken for every module until released; malloc auto-names skip them', () => {
    const reg = new BdevRegistry();
    const release = reg.reserveName('Malloc0', undefined);
    assert.equal(code(() => reg.checkNameFree('Malloc0', undefined)), -17);
    assert.equal(createMalloc(reg, { numBlocks: 8, blockSize: 512 }).name, 'Malloc1');
    release();
    assert.doesNotThrow(() => reg.checkNameFree('Malloc0', undefined));
    // The counter is module state of this registry: another registry starts at Malloc0.
    assert.equal(createMalloc(reg, { numBlocks: 8, blockSize: 512 }).name, 'Malloc2');
    assert.equal(createMalloc(new BdevRegistry(), { numBlocks: 8, blockSize: 512 }).name, 'Malloc0');
  });
});

describe('claims cascade through vbdevs', () => {
  it('deleting the base removes a vbdev over a vbdev over it, top first', async () => {
    const reg = new BdevRegistry();
    createMalloc(reg, { name: 'M', numBlocks: 64, blockSize: 512 });
    const d1 = createDelay(reg, { name: 'D1', baseName: 'M', ...lat });
    const d2 = createDelay(reg, { name: 'D2', baseName: 'D1', ...lat });
    const ee = createError(reg, { baseName: 'D2' });
    assert.equal(ee.name, 'EE_D2');
    assert.equal(reg.claimedBy('M'), 'bdev D1');
    assert.equal(reg.claimedBy('D1'), 'bdev D2');
    assert.equal(reg.claimedBy('D2'), 'bdev EE_D2');
    assert.equal(reg.claimedBy('EE_D2'), undefined);
    assert.deepEqual(reg.vbdevsOver('M'), ['D1']);
    // A claimed vbdev cannot be claimed again (EPERM), nor opened.
    assert.equal(code(() => createDelay(reg, { name: 'D3', baseName: 'D1', ...lat })), -1);
    assert.equal(reg.has('D3'), false);

    const order: string[] = [];
    for (const b of [d1, d2, ee]) {
      const destroy = b.destroy.bind(b);
      b.destroy = async () => {
        order.push(b.name);
        await destroy();
      };
    }
    await reg.delete('M');
    assert.deepEqual(order, ['EE_D2', 'D2', 'D1']);
    assert.deepEqual(reg.list(), []);
  });

  it('a blk controller on the top vbdev keeps the whole chain, with nothing removed (EBUSY)', async () => {
    const reg = new BdevRegistry();
    createMalloc(reg, { name: 'M', numBlocks: 64, blockSize: 512 });
    createDelay(reg, { name: 'D1', baseName: 'M', ...lat });
    createDelay(reg, { name: 'D2', baseName: 'D1', ...lat });
    // A claimed bdev cannot be opened by a controller.
    assert.equal(code(() => reg.open('D1', 'scsi0/target0')), -1);
    let detached = 0;
    reg.open('D2', 'blk0');
    reg.open('D2', 'scsi0/target0', async () => {
      detached++;
      reg.release('D2', 'scsi0/target0');
    });
    await assert.rejects(reg.delete('M'), (e: VhostdError) => e.code === -16 && /blk0 \(through vbdev D2\)/.test(e.detail ?? ''));
    assert.deepEqual(reg.list().map((b) => b.name), ['M', 'D1', 'D2']);
    assert.equal(detached, 0, 'nothing detached while the chain is kept');
    reg.release('D2', 'blk0');
    await reg.delete('M');
    assert.deepEqual(reg.list(), []);
    assert.equal(detached, 1, 'the SCSI target on the top vbdev was hot-detached');
  });

  it('deleting a vbdev releases its claim on the base; a failed create leaves the base unclaimed', async () => {
    const reg = new BdevRegistry();
    createMalloc(reg, { name: 'M', numBlocks: 64, blockSize: 512 });
    createDelay(reg, { name: 'D1', baseName: 'M', ...lat, uuid: 'aaaaaaaa-2222-4333-8444-555555555555' });
    await reg.delete('D1', 'delay');
    assert.equal(reg.claimedBy('M'), undefined);
    // The same delay again gets the same derived UUID; a second one over another base with it fails.
    createDelay(reg, { name: 'D1', baseName: 'M', ...lat });
    createMalloc(reg, { name: 'N', numBlocks: 64, blockSize: 512 });
    assert.equal(code(() => createDelay(reg, { name: 'D2', baseName: 'N', ...lat, uuid: reg.get('D1').uuid })), -17);
    assert.equal(reg.claimedBy('N'), undefined);
  });
});

describe('pass-through vbdev base', () => {
  it('delay and error share it: geometry, supported I/O, one release on destroy', async () => {
    const reg = new BdevRegistry();
    const m = createNull(reg, { name: 'N', numBlocks: 1000, blockSize: 4096 });
    let released = 0;
    const d = new DelayBdev('D', m, lat, undefined, () => void released++);
    const e = new ErrorBdev(m, undefined, () => void released++);
    for (const v of [d, e]) {
      assert.ok(v instanceof PassThroughBdev);
      assert.equal(v.blockSize, 4096);
      assert.equal(v.numBlocks, 1000);
      assert.equal(v.supportsIo(IoType.UNMAP), m.supportsIo(IoType.UNMAP));
      await v.destroy();
      await v.destroy();
      const ch = openBackendChannel(v.channelSpec(openSpecOf));
      assert.ok(ch instanceof PassThroughChannel);
      let status: IoStatus | undefined;
      ch.submit({ type: IoType.FLUSH, offset: 0, length: 0, iov: new IoVecs(0), complete: (s) => (status = s) });
      assert.equal(status, IoStatus.SUCCESS);
      ch.close();
      ch.submit({ type: IoType.FLUSH, offset: 0, length: 0, iov: new IoVecs(0), complete: (s) => (status = s) });
      assert.equal(status, IoStatus.FAILED, 'a closed channel fails new I/O');
    }
    assert.equal(released, 2);
  });
});
