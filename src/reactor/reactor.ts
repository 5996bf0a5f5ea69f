// A reactor: one worker thread pinned to one core that serves the virtqueues assigned to it.
// It sleeps in epoll on the queues' kick eventfds and answers control requests by message.
import { type MessagePort, parentPort } from 'node:worker_threads';
import pino from 'pino';
import { native } from '../native/index.js';
import type { QueueRunner } from '../virtio/queue-runner.js';
import { type DeviceHost, DeviceInstance } from './device-instance.js';
import type { ReactorEvent, ReactorInit, ReactorReply, ReactorRequest, ReactorStats } from './messages.js';

export class Reactor implements DeviceHost {
  private readonly devices = new Map<number, DeviceInstance>();
  private readonly toFlush = new Set<QueueRunner>();
  private flushScheduled = false;
  private readonly log: pino.Logger;

  constructor(
    private readonly init: ReactorInit,
    private readonly port: MessagePort,
  ) {
    this.log = pino({ level: init.logLevel, base: { reactor: init.index } }, pino.destination({ fd: 2, sync: true }));
    const rc = native.setAffinity([init.core]);
    if (rc < 0) this.log.warn({ core: init.core, errno: -rc }, 'could not pin reactor to its core');
    port.on('message', (msg: { id: number } & ReactorRequest) => this.onRequest(msg));
  }

  private reply(r: ReactorReply): void {
    this.port.postMessage(r);
  }

  private emit(e: ReactorEvent): void {
    this.port.postMessage(e);
  }

  private async onRequest(msg: { id: number } & ReactorRequest): Promise<void> {
    try {
      const result = await this.handle(msg);
      this.reply({ id: msg.id, ok: true, result });
    } catch (e) {
      this.reply({ id: msg.id, ok: false, error: e instanceof Error ? e.message : String(e) });
    }
  }

  private device(devId: number): DeviceInstance {
    const d = this.devices.get(devId);
    if (!d) throw new Error(`device ${devId} is not attached to reactor ${this.init.index}`);
    return d;
  }

  private async handle(msg: ReactorRequest): Promise<unknown> {
    switch (msg.op) {
      case 'attach': {
        const warn = (m: string) => this.log.warn({ dev: msg.spec.name }, m);
        this.devices.set(msg.devId, new DeviceInstance(msg.devId, msg.spec, this, warn));
        return undefined;
      }
      case 'memory':
        this.device(msg.devId).setMemory(msg.regions);
        return undefined;
      case 'startQueue': {
        this.device(msg.devId).startQueue(msg.cfg, msg.kickFd);
        return undefined;
      }
      case 'stopQueue':
        return this.device(msg.devId).stopQueue(msg.qid);
      case 'setCall':
        this.device(msg.devId).setCallFd(msg.qid, msg.fd);
        return undefined;
      case 'detach': {
        const dev = this.devices.get(msg.devId);
        if (dev) {
          this.devices.delete(msg.devId);
          await dev.close();
        }
        return undefined;
      }
      case 'stats': {
        const stats: ReactorStats = { core: this.init.core, tid: native.getTid(), queues: [] };
        for (const d of this.devices.values()) stats.queues.push(...d.stats());
        return stats;
      }
    }
  }

  deviceFailed(dev: DeviceInstance, qid: number, reason: string): void {
    this.log.error({ dev: dev.spec.name, queue: qid }, `device stopped: ${reason}`);
    this.emit({ event: 'deviceError', devId: dev.devId, reason: `queue ${qid}: ${reason}` });
  }

  scheduleFlush(runner: QueueRunner): void {
    this.toFlush.add(runner);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      for (const r of this.toFlush) r.flush();
      this.toFlush.clear();
    });
  }
}

export function runReactorWorker(init: ReactorInit): void {
  if (!parentPort) throw new Error('reactor must run in a worker thread');
  new Reactor(init, parentPort);
}
