// Logging through winston: one line per event on stderr, so stdout stays free for command output.
import winston from 'winston';

export type Logger = winston.Logger;

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(options: { level?: LogLevel; node?: string } = {}): Logger {
  const prefix = options.node ? `[${options.node}] ` : '';
  return winston.createLogger({
    level: options.level ?? 'info',
    format: winston.format.combine(
      winston.format.timestamp(),
      winston.format.printf((entry) => {
        const { timestamp, level, message, ...fields } = entry;
        const extra = Object.entries(fields)
          .filter(([key]) => typeof key === 'string')
          .map(([key, value]) => ` ${key}=${String(value)}`)
          .join('');
        return `${String(timestamp)} ${level} ${prefix}${String(message)}${extra}`;
      }),
    ),
    transports: [new winston.transports.Console({ stderrLevels: [...LOG_LEVELS] })],
  });
}

/** A logger that drops everything, for tests that provoke errors on purpose. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
