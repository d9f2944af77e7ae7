// Logging through winston: one line per event on stderr, so stdout stays free for command output.
// Text for people at a terminal; JSON (one object per line) for journald, log shippers and scripts.
import winston from 'winston';

export type Logger = winston.Logger;

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * The format loggers get when their caller names none: the CLI sets it once from --log-format, so
 * every command (and every logger deep in `ftvm raid`) follows the flag without passing it down.
 */
let defaultFormat: LogFormat = 'text';

export function setDefaultLogFormat(format: LogFormat): void {
  defaultFormat = format;
}

export function createLogger(options: { level?: LogLevel; node?: string; format?: LogFormat } = {}): Logger {
  const format = options.format ?? defaultFormat;
  return winston.createLogger({
    level: options.level ?? 'info',
    format: format === 'json' ? jsonLine(options.node) : textLine(options.node),
    transports: [new winston.transports.Console({ stderrLevels: [...LOG_LEVELS] })],
  });
}

/** `2026-12-01T10:00:00.000Z info [a] client attached conn=1 peer=127.0.0.1:5000 export=vol0` */
function textLine(node: string | undefined): winston.Logform.Format {
  const prefix = node ? `[${node}] ` : '';
  return winston.format.combine(
    winston.format.timestamp(),
    winston.format.printf((entry) => {
      const { timestamp, level, message, ...fields } = entry;
      const extra = Object.entries(fields)
        .filter(([key]) => typeof key === 'string')
        .map(([key, value]) => ` ${key}=${String(value)}`)
        .join('');
      return `${String(timestamp)} ${level} ${prefix}${String(message)}${extra}`;
    }),
  );
}

/** `{"time":"...","level":"info","node":"a","msg":"client attached","conn":1,"peer":"...","export":"vol0"}` */
function jsonLine(node: string | undefined): winston.Logform.Format {
  return winston.format.combine(
    winston.format.timestamp(),
    winston.format.printf((entry) => {
      const { timestamp, level, message, ...fields } = entry;
      // Fixed keys first, so a line reads the same way whatever fields the event carries; an event
      // field never overwrites them.
      const line: Record<string, unknown> = { time: timestamp, level, ...(node ? { node } : {}), msg: String(message) };
      for (const [key, value] of Object.entries(fields)) if (!(key in line)) line[key] = value instanceof Error ? value.message : value;
      return JSON.stringify(line);
    }),
  );
}

/** A logger that drops everything, for tests that provoke errors on purpose. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
