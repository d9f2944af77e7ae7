export {
  CONFIG_VERSION,
  ConfigError,
  findNode,
  loadConfig,
  parseConfig,
  VOLUME_SIZE_ALIGNMENT_BYTES,
  type ClusterConfig,
  type ListenConfig,
  type NodeConfig,
  type StorageConfig,
  type VolumeConfig,
} from './config.js';
export { formatSize, parseSize } from './size.js';
