import { describe, expect, it } from 'vitest';
import { camelCaseParam, toDomainJobStats } from '../../../src/libvirt/job-stats.js';

describe('job statistics', () => {
  it('camelCases libvirt parameter names', () => {
    expect(camelCaseParam('time_elapsed')).toBe('timeElapsed');
    expect(camelCaseParam('memory_postcopy_requests')).toBe('memoryPostcopyRequests');
    expect(camelCaseParam('downtime')).toBe('downtime');
  });

  it('types a save job as libvirt reports it', () => {
    // The parameters virDomainGetJobStats returns for a running QEMU save job.
    const stats = toDomainJobStats({
      type: 1,
      params: {
        operation: 2,
        time_elapsed: 1520,
        data_total: 268435456,
        data_processed: 134217728,
        data_remaining: 134217728,
        memory_total: 268435456,
        memory_processed: 134217728,
        memory_remaining: 134217728,
        memory_bps: 88301568,
        memory_iteration: 1,
        success: false,
      },
    });
    expect(stats).toEqual({
      type: 'bounded',
      operation: 'save',
      timeElapsed: 1520,
      dataTotal: 268435456,
      dataProcessed: 134217728,
      dataRemaining: 134217728,
      memoryTotal: 268435456,
      memoryProcessed: 134217728,
      memoryRemaining: 134217728,
      memoryBps: 88301568,
      memoryIteration: 1,
      success: false,
    });
  });

  it('names job types and operations, keeping unknown ones recognisable', () => {
    expect(toDomainJobStats({ type: 0, params: {} })).toEqual({ type: 'none' });
    expect(toDomainJobStats({ type: 9, params: { operation: 42 } })).toEqual({ type: 'unknown-9', operation: 'unknown-42' });
  });
});
