// Display and input conversions. The API speaks integer micro-USD; people read and type dollars.
import { language, t } from './i18n.js';

const MICROS = 1_000_000;

/** "$12.50", "$0.000123": two decimals at least, more only when they carry a value. */
export function money(micros) {
  if (micros === null || micros === undefined) return '—';
  const sign = micros < 0 ? '-' : '';
  const abs = Math.abs(micros);
  const whole = Math.floor(abs / MICROS).toLocaleString('en-US');
  const fraction = String(abs % MICROS)
    .padStart(6, '0')
    .replace(/0+$/, '')
    .padEnd(2, '0');
  return `${sign}$${whole}.${fraction}`;
}

/** Parse dollars ("12", "0.25", "-3.5") into integer micro-USD without floating-point error. */
export function dollarsToMicros(text, { allowNegative = false } = {}) {
  const match = /^\s*(-?)\$?\s*(\d*)(?:\.(\d*))?\s*$/.exec(String(text));
  if (!match || (!match[2] && !match[3]) || (match[1] && !allowNegative) || (match[3] ?? '').length > 6) {
    throw new Error(t('error.dollars', { value: text }));
  }
  const micros = Number(match[2] || 0) * MICROS + Number((match[3] ?? '').padEnd(6, '0'));
  return match[1] ? -micros : micros;
}

/** Dollars for an input field (no symbol, no grouping), or '' for null. */
export function microsToDollars(micros) {
  return micros === null || micros === undefined ? '' : money(micros).replace(/[$,]/g, '');
}

/** An ISO time or epoch milliseconds, in the reader's language. */
export function dateTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString(language);
}

export function number(value) {
  return value === null || value === undefined ? '—' : Number(value).toLocaleString(language);
}

export function percent(ratio) {
  if (ratio === null || ratio === undefined) return '—';
  return ratio === 0 ? '0%' : `${(ratio * 100).toFixed(ratio < 0.1 ? 2 : 1)}%`;
}

export function millis(value) {
  return value === null || value === undefined ? '—' : `${Math.round(value).toLocaleString(language)} ms`;
}

/** Words separated by commas, spaces or new lines, as a list. */
export function splitList(text) {
  return String(text)
    .split(/[\s,]+/)
    .map((item) => item.trim())
    .filter(Boolean);
}

/** A datetime-local input's value as an ISO time (the browser's zone), or null when empty. */
export function localToIso(value) {
  return value ? new Date(value).toISOString() : null;
}

/** An ISO time as a datetime-local input's value, in the browser's zone. */
export function isoToLocal(value) {
  if (!value) return '';
  const date = new Date(value);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}

/** Parse a JSON object typed into a text box; '' is an empty object. */
export function jsonObject(text, label) {
  if (!String(text).trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(t('error.json', { field: label }));
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(t('error.json', { field: label }));
  return value;
}

/** An optional whole number from a text box: '' is null. */
export function optionalInt(text, label) {
  if (String(text).trim() === '') return null;
  const value = Number(text);
  if (!Number.isInteger(value)) throw new Error(t('error.integer', { field: label }));
  return value;
}
