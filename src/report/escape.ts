/** Text of a value for display: strings as they are, anything else as JSON. */
const text = (s: unknown): string => (typeof s === 'string' ? s : s === undefined || s === null ? '' : (JSON.stringify(s) ?? ''));

const HTML: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Every piece of dataset or model text goes through this: questions and answers may hold markup. */
export const esc = (s: unknown): string => text(s).replace(/[&<>"']/g, (c) => HTML[c]);

/** One markdown table cell: pipes and newlines would break the row; long answers are cut. */
export function mdCell(s: unknown, max = 120): string {
  const flat = text(s).replace(/\s+/g, ' ').trim();
  const cut = flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
  return cut.replace(/\\/g, '\\\\').replace(/\|/g, '\\|');
}
