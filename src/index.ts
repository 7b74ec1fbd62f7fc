/** kvmbak: the public library API. */
export * from './errors.js';
export { toolVersion } from './version.js';
export * from './libvirt/index.js';
export * from './exec/index.js';
export * from './lvm/index.js';
export * from './archive/index.js';
export * from './backup/index.js';
export * from './manifest/index.js';
export * from './store/index.js';
export * from './restore/index.js';
export * from './chunks/index.js';
export * from './jobs/index.js';
