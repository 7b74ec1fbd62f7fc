export {
  createLabelledProgress,
  createProgressRenderer,
  renderLine,
  type LabelledProgress,
  type ProgressEvent,
  type ProgressRenderer,
  type ProgressRendererOptions,
} from './progress.js';
export { formatBytes, formatDuration, formatRate, formatSeconds } from './format.js';
