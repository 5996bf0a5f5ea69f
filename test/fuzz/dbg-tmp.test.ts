import { runSession } from './vhost-user-session.test.js';
const cases = JSON.parse(process.env.CASES ?? '[]');
