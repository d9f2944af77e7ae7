export { createLogger, silentLogger, LOG_LEVELS, type LogLevel, type Logger } from './logger.js';
export { watchEventLoop, STALL_WARNING_MS, type StallWatch } from './stall-watch.js';
