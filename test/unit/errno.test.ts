// The one errno table (src/util/errno.ts) and the errors built on it: names <-> Linux numbers
// (node:os agrees), glibc's strerror() texts, SPDK-style replies, and errors crossing threads.
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { describe, it } from 'node:test';
import { Errno, type ErrnoName, errnoName, errnoNumber, isErrnoName, strerror } from '../../src/util/errno.js';
import { RpcCode, VhostdError, toWireError } from '../../src/util/errors.js';

/** Every errno name vhostd's sources use, with glibc's text (what SPDK's spdk_strerror prints). */
const USED: Array<[ErrnoName, number, string]> = [
  ['EPERM', 1, 'Operation not permitted'],
  ['ENOENT', 2, 'No such file or directory'],
  ['EINTR', 4, 'Interrupted system call'],
  ['EIO', 5, 'Input/output error'],
  ['ENXIO', 6, 'No such device or address'],
  ['E2BIG', 7, 'Argument list too long'],
  ['EBADF', 9, 'Bad file descriptor'],
  ['EAGAIN', 11, 'Resource temporarily unavailable'],
  ['ENOMEM', 12, 'Cannot allocate memory'],
  ['EACCES', 13, 'Permission denied'],
  ['EFAULT', 14, 'Bad address'],
  ['EBUSY', 16, 'Device or resource busy'],
  ['EEXIST', 17, 'File exists'],
  ['ENODEV', 19, 'No such device'],
  ['ENOTDIR', 20, 'Not a directory'],
  ['EISDIR', 21, 'Is a directory'],
  ['EINVAL', 22, 'Invalid argument'],
  ['ENFILE', 23, 'Too many open files in system'],
  ['EMFILE', 24, 'Too many open files'],
  ['ETXTBSY', 26, 'Text file busy'],
  ['EFBIG', 27, 'File too large'],
  ['ENOSPC', 28, 'No space left on device'],
  ['EROFS', 30, 'Read-only file system'],
  ['ERANGE', 34, 'Numerical result out of range'],
  ['ENAMETOOLONG', 36, 'File name too long'],
  ['ELOOP', 40, 'Too many levels of symbolic links'],
  ['ETIME', 62, 'Timer expired'],
  ['EOVERFLOW', 75, 'Value too large for defined data type'],
  ['EOPNOTSUPP', 95, 'Operation not supported'],
  ['ENOTSUP', 95, 'Operation not supported'],
  ['EADDRINUSE', 98, 'Address already in use'],
  ['ENOTCONN', 107, 'Transport endpoint is not connected'],
  ['ESHUTDOWN', 108, 'Cannot send after transport endpoint shutdown'],
  ['ETIMEDOUT', 110, 'Connection timed out'],
  ['ECONNREFUSED', 111, 'Connection refused'],
  ['EHOSTUNREACH', 113, 'No route to host'],
];

describe('errno table', () => {
  it('round-trips name -> Linux number -> name and text for every name in use', () => {
    for (const [name, n, text] of USED) {
      assert.equal(errnoNumber(name), n, name);
      assert.equal(Errno[name], n, name);
      assert.ok(isErrnoName(name), name);
      assert.equal(strerror(name), text, name);
      assert.equal(strerror(n), text, `${name} by number`);
      assert.equal(strerror(-n), text, `${name} by -errno`);
      // Aliases give their canonical name back.
      const canonical = name === 'ENOTSUP' ? 'EOPNOTSUPP' : name;
      assert.equal(errnoName(n), canonical);
      assert.equal(errnoName(-n), canonical);
    }
  });

  it('agrees with node:os constants.errno for every name node knows', () => {
    for (const [name, n] of Object.entries(constants.errno)) {
      assert.equal(errnoNumber(name), n, name);
      assert.notEqual(strerror(n), `Unknown error ${n}`, name);
    }
  });

  it('names the canonical one of aliased numbers', () => {
    assert.equal(errnoName(Errno.EWOULDBLOCK), 'EAGAIN');
    assert.equal(errnoName(Errno.EDEADLOCK), 'EDEADLK');
    assert.equal(errnoName(Errno.ENOTSUP), 'EOPNOTSUPP');
    assert.equal(strerror('EWOULDBLOCK'), 'Resource temporarily unavailable');
  });

  it('knows the Linux errnos node:os leaves out', () => {
    assert.equal(Object.hasOwn(constants.errno, 'ESHUTDOWN'), false);
    assert.equal(errnoName(-108), 'ESHUTDOWN');
    assert.equal(errnoNumber('EREMOTEIO'), 121);
    assert.equal(strerror('EHWPOISON'), 'Memory page has hardware error');
  });

  it('handles unknown names and numbers as glibc does', () => {
    assert.equal(errnoNumber('EFOO'), undefined);
    assert.equal(isErrnoName('EFOO'), false);
    assert.equal(isErrnoName('toString'), false);
    assert.equal(strerror('EFOO'), 'EFOO');
    assert.equal(strerror(4242), 'Unknown error 4242');
    assert.equal(strerror(-41), 'Unknown error 41'); // a hole in Linux's numbering
    assert.equal(errnoName(4242), 'errno 4242');
    assert.equal(errnoName(-4242), 'errno 4242');
  });
});

describe('VhostdError', () => {
  it('errno(): code -errno, message strerror(), detail kept for the log', () => {
    const e = VhostdError.errno('ENODEV', 'bdev x does not exist');
    assert.equal(e.code, -19);
    assert.equal(e.message, 'No such device');
    assert.equal(e.detail, 'bdev x does not exist');
    assert.equal(VhostdError.errno('EEXIST').detail, undefined);
    assert.equal(VhostdError.errno('ENOTSUP').message, 'Operation not supported');
    // A name the type forbids (a bug) still makes an error, not a NaN code.
    const bad = VhostdError.errno('EFOO' as ErrnoName);
    assert.equal(bad.code, RpcCode.INTERNAL_ERROR);
    assert.equal(bad.message, 'EFOO');
  });

  it('errnoWithDetail(): "<strerror>: <what>" from a name or a number of either sign', () => {
    for (const errno of ['ENOENT', 2, -2] as const) {
      const e = VhostdError.errnoWithDetail(errno, 'cannot open /x');
      assert.equal(e.code, -2);
      assert.equal(e.message, 'No such file or directory: cannot open /x');
      assert.equal(e.detail, 'cannot open /x');
    }
    assert.equal(VhostdError.errnoWithDetail(108, 'blocklisted').message, 'Cannot send after transport endpoint shutdown: blocklisted');
    assert.equal(VhostdError.errnoWithDetail(4242, 'x').message, 'Unknown error 4242: x');
  });
});

describe('errors across threads', () => {
  it('a VhostdError keeps code, message and detail through structured clone', () => {
    const wire = structuredClone(toWireError(VhostdError.errno('EEXIST', 'SCSI target 1 already occupied')));
    assert.deepEqual(wire, { code: -17, message: 'File exists', detail: 'SCSI target 1 already occupied' });
    const back = VhostdError.fromWire(wire);
    assert.ok(back instanceof VhostdError);
    assert.equal(back.code, -17);
    assert.equal(back.message, 'File exists');
    assert.equal(back.detail, 'SCSI target 1 already occupied');
  });

  it('JSON-RPC codes cross unchanged; anything else is INTERNAL_ERROR with its message', () => {
    assert.deepEqual(toWireError(new VhostdError(RpcCode.INVALID_PARAMS, 'bad')), { code: -32602, message: 'bad' });
    assert.deepEqual(toWireError(new Error('queue 3 is not running')), { code: RpcCode.INTERNAL_ERROR, message: 'queue 3 is not running' });
    assert.deepEqual(toWireError('boom'), { code: RpcCode.INTERNAL_ERROR, message: 'boom' });
    assert.deepEqual(toWireError(new Error('')), { code: RpcCode.INTERNAL_ERROR, message: 'Internal error' });
  });
});
