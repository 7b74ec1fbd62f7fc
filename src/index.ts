/** kvmbak: the public library API. */
export * from './errors.js';
export { toolVersion } from './version.js';
