// Errors from reactor workers reach the control thread as {code, message}: a VhostdError thrown
// on a reactor (e.g. by the SCSI target set during hot-plug) is rethrown on the control thread
// with its code, so the RPC answers -errno (or the JSON-RPC code) instead of a generic -32603.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { MallocBdev } from '../../src/bdev/modules/malloc/malloc.js';
import { ScsiModel } from '../../src/devices/scsi/scsi-model.js';
import { ScsiControl } from '../../src/devices/scsi/scsi-spec.js';
import { ReactorPool } from '../../src/reactor/reactor-pool.js';
import { scsiLunInfoFromBdev } from '../../src/scsi/index.js';
import { RpcCode, VhostdError } from '../../src/util/errors.js';
import { openSpecOf } from './helpers/open-spec.js';

describe('reactor -> control thread errors', () => {
  let pool: ReactorPool;
  const devId = 1_000_001;

  before(async () => {
    pool = new ReactorPool([0], pino({ level: 'silent' }));
    await pool.reactors[0].request({ op: 'attach', devId, spec: new ScsiModel('errors-test').spec() });
  });
  after(async () => {
    await pool.reactors[0].request({ op: 'detach', devId }).catch(() => undefined);
    await pool.close();
  });

  it('a reactor-side VhostdError arrives with its -errno code, strerror text and detail', async () => {
    const r = pool.reactors[0];
    await assert.rejects(r.request({ op: 'control', devId, action: ScsiControl.DETACH_TARGET, arg: 3 }), (e: unknown) => {
      assert.ok(e instanceof VhostdError, String(e));
      assert.equal(e.code, -19);
      assert.equal(e.message, 'No such device');
      assert.equal(e.detail, 'SCSI target 3 does not exist');
      return true;
    });
  });

  it('hot-attaching an occupied target fails on the reactor with EEXIST', async () => {
    const r = pool.reactors[0];
    const bdev = new MallocBdev('Malloc-errors', 512, 64 * 512);
    const spec = { target: 0, lun: scsiLunInfoFromBdev(bdev), bdev: openSpecOf(bdev) };
    await r.request({ op: 'control', devId, action: ScsiControl.ATTACH_TARGET, arg: spec });
    await assert.rejects(r.request({ op: 'control', devId, action: ScsiControl.ATTACH_TARGET, arg: spec }), (e: unknown) => {
      assert.ok(e instanceof VhostdError, String(e));
      assert.equal(e.code, -17);
      assert.equal(e.message, 'File exists');
      assert.equal(e.detail, 'SCSI target 0 already occupied');
      return true;
    });
    await r.request({ op: 'control', devId, action: ScsiControl.DETACH_TARGET, arg: 0 });
  });

  it('an error without a code arrives as INTERNAL_ERROR with its message', async () => {
    await assert.rejects(pool.reactors[0].request({ op: 'stopQueue', devId: 4242, qid: 0 }), (e: unknown) => {
      assert.ok(e instanceof VhostdError, String(e));
      assert.equal(e.code, RpcCode.INTERNAL_ERROR);
      assert.equal(e.message, 'device 4242 is not attached to reactor 0');
      return true;
    });
  });
});
