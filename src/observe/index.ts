export { createLogger, silentLogger, setDefaultLogFormat, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel, type Logger } from './logger.js';
export { watchEventLoop, STALL_WARNING_MS, type StallWatch } from './stall-watch.js';
export { ClusterEvents, CLUSTER_EVENT_KINDS, type ClusterEvent, type ClusterEventBody, type ClusterEventKind, type ClusterEventListener } from './events.js';
export { NodeMetrics, metricsUrl, NBD_COMMAND_NAMES, type NodeSnapshot } from './metrics.js';
