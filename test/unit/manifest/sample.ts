import type { Manifest } from '../../../src/manifest/index.js';

const MiB = 1024 * 1024;

/** A valid kvmbak/1 manifest (mode save, one classic disk, one skipped cdrom). */
export function sampleManifest(): Manifest {
  return {
    format: 'kvmbak/1',
    toolVersion: '0.1.0',
    createdAt: '2026-11-26T03:15:42.123Z',
    host: 'kvm1',
    libvirtVersion: '9.0.0',
    uri: 'qemu:///system',
    domain: { name: 'web01', uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f', stateBefore: 'running' },
    mode: 'save',
    downtimeMs: 8123,
    timings: { planMs: 120, windowMs: 8123, archiveMs: 200_000, totalMs: 210_000, saveMs: 5000 },
    memory: { file: 'memory.state', bytes: MiB, sha256: 'a'.repeat(64) },
    domainXml: { file: 'domain.xml', sha256: 'b'.repeat(64) },
    disks: [
      {
        target: 'vda',
        source: '/dev/vg0/web01-root',
        vg: 'vg0',
        lv: 'web01-root',
        pool: 'vg0',
        capacity: 4 * MiB,
        allocation: 0,
        physical: 4 * MiB,
        lvSize: 4 * MiB,
        lvUuid: 'Xb3Lx1-Qm2c-8cJd-1wQe-Zx9P-2Lk3-aB4cDe',
        thin: false,
        thinPool: null,
        image: {
          file: 'disks/vda.img.gz',
          rawBytes: 4 * MiB,
          rawSha256: 'c'.repeat(64),
          storedBytes: 5000,
          fileSha256: 'd'.repeat(64),
          chunkSize: MiB,
          members: [0, 1200, 2400, 3600],
          zeroChunks: 1,
        },
        snapshot: { name: 'web01-root_kvmbak_20261126T031500Z', size: 16 * MiB, peakPercent: 3.5 },
      },
    ],
    skipped: [{ target: 'hdc', device: 'cdrom', reason: 'not an LVM volume (cdrom)' }],
  };
}
