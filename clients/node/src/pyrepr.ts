// Python's repr() of the values that appear in validation messages, so that a
// mistake reads the same from the Node and the Python client.

const NONPRINTABLE = /[\p{C}\p{Z}]/u;

function reprChar(ch: string, quote: string): string {
  if (ch === quote || ch === "\\") return "\\" + ch;
  if (ch === "\n") return "\\n";
  if (ch === "\r") return "\\r";
  if (ch === "\t") return "\\t";
  if (ch === " " || !NONPRINTABLE.test(ch)) return ch;
  const code = ch.codePointAt(0) ?? 0;
  if (code < 0x100) return "\\x" + code.toString(16).padStart(2, "0");
  if (code < 0x10000) return "\\u" + code.toString(16).padStart(4, "0");
  return "\\U" + code.toString(16).padStart(8, "0");
}

export function reprString(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) out += reprChar(ch, quote);
  return out + quote;
}

export function repr(value: unknown): string {
  if (value === null || value === undefined) return "None";
  if (typeof value === "string") return reprString(value);
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return Number.isFinite(value) ? String(value) : value > 0 ? "inf" : value < 0 ? "-inf" : "nan";
  }
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return "[" + value.map(repr).join(", ") + "]";
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    return "{" + entries.map(([k, v]) => `${reprString(k)}: ${repr(v)}`).join(", ") + "}";
  }
  return String(value);
}

/** Python's `_short`: the repr, cut at 40 characters. */
export function short(value: unknown): string {
  const text = repr(value);
  return text.length <= 40 ? text : text.slice(0, 37) + "...";
}

/** Python's `_type`: the JSON type name of a value. */
export function typeName(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return "array";
  switch (typeof value) {
    case "string":
      return "string";
    case "boolean":
      return "boolean";
    case "object":
      return "object";
    default:
      return "number";
  }
}
