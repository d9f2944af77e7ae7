export { createLogger, silentLogger, LOG_LEVELS, type LogLevel, type Logger } from './logger.js';
