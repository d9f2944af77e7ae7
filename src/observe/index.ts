export { createLogger, silentLogger, setDefaultLogFormat, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel, type Logger } from './logger.js';
export { watchEventLoop, STALL_WARNING_MS, type StallWatch } from './stall-watch.js';
