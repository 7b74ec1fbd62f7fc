export { createProgressRenderer, renderLine, type ProgressEvent, type ProgressRenderer, type ProgressRendererOptions } from './progress.js';
export { formatBytes, formatDuration, formatRate, formatSeconds } from './format.js';
