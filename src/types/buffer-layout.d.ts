// Minimal declarations for the parts of buffer-layout (pabigot) that ftvm's codecs use.
declare module 'buffer-layout' {
  export class Layout<T = unknown> {
    /** For custom layouts (subclasses): a negative span means value-specific. */
    constructor(span: number, property?: string);
    span: number;
    property?: string;
    decode(b: Buffer, offset?: number): T;
    encode(src: T, b: Buffer, offset?: number): number;
    getSpan(b?: Buffer, offset?: number): number;
  }
  export class Structure<T = Record<string, unknown>> extends Layout<T> {
    fields: Layout[];
  }
  export function struct<T = Record<string, unknown>>(fields: Layout[], property?: string): Structure<T>;
  export function u8(property?: string): Layout<number>;
  export function u16be(property?: string): Layout<number>;
  export function u32be(property?: string): Layout<number>;
  export function nu64be(property?: string): Layout<number>;
  export function blob(length: number | Layout<number>, property?: string): Layout<Buffer>;
  export function offset(layout: Layout<number>, offset?: number, property?: string): Layout<number>;
  export function greedy(elementSpan?: number, property?: string): Layout<number>;
  export function utf8(maxSpan?: number, property?: string): Layout<string>;
  export function seq<T>(elementLayout: Layout<T>, count: number | Layout<number>, property?: string): Layout<T[]>;
  const layout: {
    Layout: typeof Layout;
    struct: typeof struct; u8: typeof u8; u16be: typeof u16be; u32be: typeof u32be; nu64be: typeof nu64be;
    blob: typeof blob; offset: typeof offset; greedy: typeof greedy; utf8: typeof utf8; seq: typeof seq;
  };
  export default layout;
}
