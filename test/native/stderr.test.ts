/**
 * libvirt must print nothing: its default error handler writes every error
 * to stderr, and libxml2 (used by the test driver) prints I/O warnings.
 * A child process provokes errors through the addon; its stderr must stay
 * empty while the errors still arrive as rejections.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { nativeCandidates } from '../../src/native.js';
import { nodeCopy } from './helpers.js';

const run = promisify(execFile);

describe('stderr', { timeout: 30_000 }, () => {
  it('stays empty while libvirt calls fail', async () => {
    const node = await nodeCopy();
    try {
      const script = `
        const b = require(${JSON.stringify(nativeCandidates()[0])});
        (async () => {
          const codes = [];
          const fail = async (p) => { try { await p; codes.push('ok'); } catch (e) { codes.push(e.virCode); } };
          await fail(b.Connection.open('test:///nonexistent/kvmbak/node.xml'));
          await fail(b.Connection.open('test:///'));
          const c = await b.Connection.open(${JSON.stringify(node.uri)});
          await fail(c.lookupDomainByName('missing'));
          await fail(c.lookupStorageVolByPath('/dev/vg0/missing'));
          await fail(c.defineXML('<domain'));
          const d = await c.lookupDomainByName('web-01');
          await fail(d.getBlockInfo('vdz', 0));
          await fail(d.getJobStats(0));
          await fail(d.save('/nonexistent/dir/x', null, 0));
          d.free();
          c.close();
          process.stdout.write(JSON.stringify(codes));
        })();
      `;
      const { stdout, stderr } = await run(process.execPath, ['-e', script], { encoding: 'utf8' });
      expect(JSON.parse(stdout)).toEqual([27, 8, 42, 50, 35, 8, 3, 38]);
      expect(stderr).toBe('');
    } finally {
      await node.cleanup();
    }
  });
});
