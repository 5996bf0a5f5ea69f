// Worker-thread entry point of a reactor.
import { workerData } from 'node:worker_threads';
import type { ReactorInit } from './messages.js';
import { runReactorWorker } from './reactor.js';

runReactorWorker(workerData as ReactorInit);
