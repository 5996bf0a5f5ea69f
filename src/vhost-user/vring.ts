// One vring as the front-end set it up over vhost-user: size, base, addresses, its eventfds, and
// whether it is enabled and running on the data plane.
import { native } from '../native/index.js';
import type { VringAddr } from './protocol.js';

export class Vring {
  num = 0;
  base = 0;
  addr: VringAddr | undefined;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  enabled = false;
  running = false;

  closeFds(): void {
    for (const fd of [this.kickFd, this.callFd, this.errFd]) if (fd >= 0) native.close(fd);
    this.kickFd = this.callFd = this.errFd = -1;
  }
}
